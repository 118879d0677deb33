"""The checked-in generated modules are exactly what protoc makes from the .proto files."""

from __future__ import annotations

from pathlib import Path

import pytest

from protos.generate import ROOT, generate


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2.py*"))
    checked_in = sorted(p.relative_to(ROOT) for p in (ROOT / "protos").rglob("*_pb2.py*"))
    assert fresh == checked_in
    assert len(fresh) >= 16
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), f"{rel} is stale"


def test_task_service_has_all_17_rpcs() -> None:
    from protos.containerd.task.v2 import shim_pb2

    service = shim_pb2.DESCRIPTOR.services_by_name["Task"]
    assert service.full_name == "containerd.task.v2.Task"
    assert len(service.methods) == 17
