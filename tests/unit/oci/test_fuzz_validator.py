"""The seeded corpus of malformed bundles (tests/unit/oci/hostile.py) through the validator and
the translation: each case is refused with an errdefs error naming a field of the part of the
spec that was broken, or accepted and rendered into config text that reads back, as LXC reads
it, as exactly the lines the translation meant. Never another exception (a crash would be an
"internal error" to the user), never a raw line break in a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime import errdefs, oci
from runtime.lxc import config
from tests.unit.lxc.specs import MINIMAL
from tests.unit.lxc.test_config_text import lxc_read, params
from tests.unit.oci.hostile import SEED, Case, corpus, top

CASES = corpus(3000)


def check(c: Case) -> str:
    """"refused" or "rendered"; fails the test on anything else."""
    try:
        oci.check_spec(c.spec)
        lines = config.lxc_config(c.spec, params())
        text = config.render(lines)
    except (errdefs.InvalidArgument, errdefs.NotImplementedErr) as exc:
        msg = str(exc)
        assert "\r" not in msg and "\n" not in msg and "\0" not in msg, (c.index, msg)
        assert not msg.startswith("LXC config:"), \
            f"case {c.index}: the validators let through what the renderer refused: {msg}"
        tops = {top(f) for f in c.fields}
        assert top(msg) in tops | {"config.json"}, (c.index, c.fields, msg)
        return "refused"
    assert lxc_read(text) == lines, c.index
    return "rendered"


def test_the_corpus_is_refused_by_field_or_reads_back() -> None:
    outcomes = [check(c) for c in CASES]
    # The corpus must exercise both sides, or it proves little.
    assert outcomes.count("refused") > 1000
    assert outcomes.count("rendered") > 300


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_corpus_is_seeded(index: int) -> None:
    assert corpus(3, SEED)[index] == CASES[index]


@pytest.mark.parametrize(("depth", "refused"), [(500, False), (100_000, True)])
def test_a_deeply_nested_config_is_read_or_refused_never_a_crash(tmp_path: Path, depth: int,
                                                                 refused: bool) -> None:
    text = json.dumps(MINIMAL)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    (tmp_path / "config.json").write_text(text)
    if refused:
        with pytest.raises(errdefs.InvalidArgument, match="^config.json: nested too deeply"):
            oci.load_spec(tmp_path)
    else:
        oci.load_spec(tmp_path)
