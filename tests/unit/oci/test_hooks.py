"""The pure parts of OCI hooks: selection, argv and the state JSON."""

from __future__ import annotations

import json

from runtime import hooks


def test_state_json_has_the_runtime_md_fields() -> None:
    raw = hooks.state_json(id="c1", status="created", pid=42, bundle="/b",
                           annotations={"k": "v"})
    assert json.loads(raw) == {"ociVersion": "1.0.2", "id": "c1", "status": "created",
                               "pid": 42, "bundle": "/b", "annotations": {"k": "v"}}
    stopped = json.loads(hooks.state_json(id="c1", status="stopped", pid=42, bundle="/b",
                                          annotations={}))
    assert "pid" not in stopped


def test_hooks_of_and_argv() -> None:
    spec = {"hooks": {"poststart": [{"path": "/usr/bin/hook", "args": ["hook", "-v"],
                                     "env": ["A=1"], "timeout": 5}]}}
    [h] = hooks.hooks_of(spec, "poststart")
    assert h.field == "hooks.poststart[0]" and h.timeout == 5 and h.env == ("A=1",)
    assert hooks.argv(h) == ["/usr/bin/hook", "-v"]
    assert hooks.argv(h, ("nsenter", "--")) == ["nsenter", "--", "/usr/bin/hook", "-v"]
    assert hooks.hooks_of(spec, "poststop") == []
    assert hooks.hooks_of({}, "poststart") == []


def test_kinds_and_fatality_match_the_spec() -> None:
    assert set(hooks.STATUS) == {"prestart", "createRuntime", "createContainer",
                                 "startContainer", "poststart", "poststop"}
    assert "poststart" not in hooks.FATAL and "poststop" not in hooks.FATAL
