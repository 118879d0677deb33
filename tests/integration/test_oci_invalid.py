"""Invalid bundles through the real LXC backend: each of the validator's kinds of mistake
gives an error naming the field, and nothing is created (no LXC container, no mount, no state
file, no process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime import errdefs
from runtime.lxc.mount import mounted_under
from tests.integration.oci_probe import SKIPS, Probe, busybox, probe
from tests.unit.lxc.specs import CTR_DEFAULT
from tests.unit.oci.test_validate import INVALID, mutate

pytestmark = SKIPS
__all__ = ["busybox", "probe"]  # fixtures used by name


def leftovers(p: Probe) -> list[str]:
    found = [f"mount {m}" for m in mounted_under(p.base)]
    lxc = p.base / "lxc"
    found += [f"lxc {c.name}" for c in lxc.iterdir()] if lxc.exists() else []
    state = p.base / "s"
    found += [f"state {f.name}" for f in state.iterdir()] if state.exists() else []
    return found


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "value", "message"), INVALID,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in INVALID])
async def test_invalid_bundle_creates_nothing(probe: Probe, path: str, value: Any,
                                              message: str) -> None:
    spec = mutate(CTR_DEFAULT, path, value)
    if isinstance(spec.get("root"), dict) and "path" in spec["root"] and spec["root"]["path"]:
        spec["root"]["path"] = "rootfs"
    with pytest.raises(errdefs.InvalidArgument) as info:
        await probe.create(spec, Path(probe.base / "out"))
    assert str(info.value).startswith(message), str(info.value)
    assert leftovers(probe) == []
