"""The short-lived actions' pure parts: flags, socket address, DeleteResponse bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from protos.containerd.task.v2 import shim_pb2
from shim.delete import encode_delete_response
from shim.flags import parse
from shim.manager import group_of, socket_address


def test_parse_containerd_start_argv() -> None:
    f = parse(["-namespace", "default", "-address", "/run/c.sock", "-publish-binary",
               "/usr/bin/containerd", "-id", "t1", "-debug", "start"])
    assert (f.namespace, f.address, f.id, f.debug, f.action) == (
        "default", "/run/c.sock", "t1", True, "start")


def test_parse_go_flag_variants_and_unknown_flags() -> None:
    f = parse(["--namespace=k8s.io", "-id=x", "-bundle", "/b", "-future-flag", "v", "delete"])
    assert (f.namespace, f.id, f.bundle, f.action) == ("k8s.io", "x", "/b", "delete")
    assert f.unknown == {"future-flag": "v"}


def test_socket_address_is_unix_scheme_and_short() -> None:
    a = socket_address("/run/containerd/containerd.sock", "default", "g")
    assert a.startswith("unix:///run/containerd/s/")
    assert len(a.removeprefix("unix://")) < 106
    assert a != socket_address("/other/containerd.sock", "default", "g")
    assert a == socket_address("/run/containerd/containerd.sock", "default", "g")


def test_group_from_sandbox_annotation(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}))
    assert group_of(str(tmp_path), "c1") == "pod1"
    (tmp_path / "config.json").write_text("{}")
    assert group_of(str(tmp_path), "c1") == "c1"
    (tmp_path / "config.json").write_text("not json")
    assert group_of(str(tmp_path), "c1") == "c1"


def test_hand_encoded_delete_response_matches_protobuf() -> None:
    for pid, status, at in [(4242, 137, 1764140000.25), (0, 0, 1764140000.0), (1, 7, 5.5)]:
        raw = encode_delete_response(pid, status, at)
        msg = shim_pb2.DeleteResponse.FromString(raw)
        assert (msg.pid, msg.exit_status) == (pid, status)
        assert msg.exited_at.seconds == int(at)
        assert abs(msg.exited_at.nanos - (at - int(at)) * 1e9) < 1000
        ref = shim_pb2.DeleteResponse(pid=pid, exit_status=status)
        ref.exited_at.seconds, ref.exited_at.nanos = msg.exited_at.seconds, msg.exited_at.nanos
        assert raw == ref.SerializeToString()


def test_start_and_delete_import_no_heavy_modules() -> None:
    """`start` and `delete` run for every task: they must not load asyncio or protobuf."""
    code = ("import sys; import shim.cli, shim.manager, shim.delete, runtime.store,"
            " runtime.lxc.cleanup;"
            "bad = [m for m in ('asyncio', 'google.protobuf', 'shim.ttrpc') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_daemon_asyncio_without_tls_still_allows_ssl_later() -> None:
    code = ("import sys; from shim.slim import import_asyncio_without_tls;"
            "import_asyncio_without_tls(); import asyncio, asyncio.sslproto;"
            "print('ssl' in sys.modules, asyncio.sslproto.ssl is None);"
            "import ssl; print(ssl.PROTOCOL_TLS_CLIENT is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]


def test_zygote_request_json_round_trips() -> None:
    import json

    from shim.zygote_client import dumps

    value = {"flags": {"id": 'a"b\\c', "debug": True, "unknown": {}, "n": 3},
             "env": {"X": "tab\there\nnew\x01line", "U": "ünïcode ✓", "E": ""},
             "bundle": "/run/x", "none": None}
    assert json.loads(dumps(value)) == value


def test_start_imports_stay_light() -> None:
    """`start` runs for every task; socket, json and typing each cost 5-10 ms to import (array
    1.7 ms)."""
    code = ("import sys; import shim.cli, shim.flags, shim.manager, shim.zygote_client,"
            " runtime.paths;"
            "print(','.join(m for m in ('socket', 'json', 'typing', 'hashlib', 'pathlib', 'array')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(Path(__file__).parents[3])})
    assert out.stdout.strip() == ""
