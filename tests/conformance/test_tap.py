"""The runner's pure logic: TAP parsing and the runc-vs-ours comparison (no containers)."""

from __future__ import annotations

import io

import pytest

from tests.conformance.known import KNOWN
from tests.conformance.runtime_tools import Comparison
from tests.conformance.tap import Writer, parse

SAMPLE = """TAP version 13
ok 1 - create
not ok 2 - state has the pid
# got {}
ok 3 - devices # SKIP no such host device
ok 4 description without a dash
1..4
"""


def test_parse_counts_ok_not_ok_and_skips_apart() -> None:
    report = parse(SAMPLE)
    assert report.passed == ["create", "description without a dash"]
    assert report.failed == ["state has the pid"]
    assert report.results[1].diagnostic == "got {}\n"
    assert report.complete


def test_a_stream_without_its_plan_or_short_of_it_is_incomplete() -> None:
    assert not parse("TAP version 13\nok 1 - a\n").complete
    assert not parse("TAP version 13\nok 1 - a\n1..2\n").complete


def test_writer_output_parses_back() -> None:
    out = io.StringIO()
    t = Writer(out)
    t.check(True, "one")
    t.check(False, "two", "why\nmore")
    t.skip("three", "not here")
    t.done()
    report = parse(out.getvalue())
    assert (report.passed, report.failed, report.complete) == (["one"], ["two"], True)
    assert report.results[1].diagnostic == "why\nmore\n"


def test_differences_are_what_passes_on_the_reference_only() -> None:
    ref = {"p": parse("ok 1 - a\nok 2 - b\nnot ok 3 - c\n1..3\n")}
    ours = {"p": parse("ok 1 - a\nnot ok 2 - b\nok 3 - c\n1..3\n")}
    c = Comparison(ref, ours)
    assert c.differences() == [("p", "b")]
    assert c.ours_only() == [("p", "c")]
    table = c.markdown()
    assert "| `p` | 2 | 1 | 2 | 1 |" in table and "NEW" in table


@pytest.mark.skipif(not KNOWN, reason="no known difference left")
def test_a_known_difference_that_passes_now_is_stale() -> None:
    key = min(KNOWN)
    ref = {key[0]: parse(f"ok 1 - {key[1]}\n1..1\n")}
    fixed = Comparison(ref, {key[0]: parse(f"ok 1 - {key[1]}\n1..1\n")})
    still = Comparison(ref, {key[0]: parse(f"not ok 1 - {key[1]}\n1..1\n")})
    assert key in fixed.stale() and key not in still.stale()
    assert "remove them" in fixed.markdown()
