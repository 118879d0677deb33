"""The create's side of the gate protocol (runtime.lxc.gate): the init's line becomes the
create's outcome, and what the init is given so that its set-up cannot fail where runc's
does not (ambient capabilities) or cannot reach the gate (a user namespace's root)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import errdefs
from runtime.lxc import gate, owninit, security


def test_ready_is_no_error() -> None:
    gate.outcome("ready")


@pytest.mark.parametrize(("kind", "error"), [
    ("notfound", errdefs.NotFound), ("invalid", errdefs.InvalidArgument),
    ("precondition", errdefs.FailedPrecondition), ("internal", errdefs.Internal)])
def test_an_error_line_is_its_kind_with_the_init_message(kind: str,
                                                         error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        gate.outcome(f'error {kind} exec: "nosuch": executable file not found in $PATH')
    assert str(info.value).startswith('exec: "nosuch": executable file not found in $PATH')


@pytest.mark.parametrize("line", ["", "error", "error bogus x", "go", "ready ", "1234"])
def test_anything_else_is_an_internal_error_quoting_it(line: str) -> None:
    with pytest.raises(errdefs.Internal, match="the container init reported"):
        gate.outcome(line)


def test_the_container_init_waits_at_the_gate_held_for_the_cli() -> None:
    assert gate.directive(hold=False) == "gate\n"
    assert gate.directive(hold=True) == "gate hold\n"


def _caps(**sets: list[str]) -> dict[str, Any]:
    return {"capabilities": {name: sets.get(name, []) for name in
                             ("bounding", "effective", "permitted", "inheritable", "ambient")}}


def test_an_ambient_capability_not_permitted_and_inheritable_is_dropped_with_a_note() -> None:
    notes: list[str] = []
    text = security.process_directives(_caps(
        bounding=["CAP_KILL", "CAP_CHOWN"], permitted=["CAP_KILL", "CAP_CHOWN"],
        inheritable=["CAP_CHOWN"], ambient=["CAP_KILL", "CAP_CHOWN"]), notes)
    caps = next(ln for ln in text.splitlines() if ln.startswith("caps "))
    assert caps == "caps 21 0 21 1 1"  # CAP_CHOWN (bit 0) stays ambient, CAP_KILL (5) not
    assert notes == ["process.capabilities.ambient: CAP_KILL not raised (an ambient "
                     "capability must be permitted and inheritable too)"]


def test_the_fifo_owner_is_the_user_namespace_root() -> None:
    spec: dict[str, Any] = {"linux": {
        "namespaces": [{"type": "user"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}],
        "gidMappings": [{"containerID": 1, "hostID": 300001, "size": 9},
                        {"containerID": 0, "hostID": 200000, "size": 1}]}}
    assert owninit.root_owner(spec) == (100000, 200000)
    assert owninit.root_owner({"linux": {"namespaces": [{"type": "pid"}]}}) is None
    spec["linux"]["uidMappings"] = [{"containerID": 1, "hostID": 100001, "size": 9}]
    assert owninit.root_owner(spec) is None  # root not mapped: nothing to give the files to
