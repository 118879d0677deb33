"""Pure logic of the Proxmox backend (runtime/proxmox): settings, the CT options from a spec
and their choke point, the API's error vocabulary, raw keys in a CT config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import errdefs
from runtime.proxmox import api, conffile, ctconfig, settings, vmid


def base(**proxmox: object) -> dict[str, object]:
    return {"proxmox": {"token_id": "root@pam!lxcri", "token_secret_file": "/etc/x",
                        **proxmox}}


def test_settings_defaults_are_the_node_itself() -> None:
    s = settings.parse(base(node="pve1"))
    assert s.url == "https://pve1:8006"
    assert s.ca_file == "/etc/pve/pve-root-ca.pem"
    assert (s.storage, s.bridge, s.tags) == ("local-zfs", "vmbr0", ("containerd",))


@pytest.mark.parametrize("bad, word", [
    ({"url": "http://pve:8006"}, "https://"),
    ({"token_secret_file": "relative"}, "absolute"),
    ({"vmid_range": [99, 200]}, "vmid_range"),
    ({"vmid_range": [300, 200]}, "vmid_range"),
    ({"storage": "bad storage"}, "storage"),
    ({"bridge": "vmbr0\nx"}, "one-line"),
    ({"token_id": "no-realm"}, "token_id"),
])
def test_settings_refuse_bad_values(bad: dict[str, object], word: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=word):
        settings.parse(base(**bad))


def test_backend_type() -> None:
    assert settings.backend_type({}) == "lxc"
    assert settings.backend_type({"backend": {"type": "proxmox"}}) == "proxmox"
    with pytest.raises(errdefs.InvalidArgument):
        settings.backend_type({"backend": {"type": "kvm"}})


def test_secret_file_must_be_root_only(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("1c417e89-0abb-4221-b19b-83504b449834\n")
    os.chmod(f, 0o644)
    with pytest.raises(errdefs.FailedPrecondition, match="chmod 0600") as e:
        settings.read_secret(f)
    assert "1c417e89" not in str(e.value)
    os.chmod(f, 0o600)
    if os.geteuid() == 0:
        assert settings.read_secret(f) == "1c417e89-0abb-4221-b19b-83504b449834"


def spec(**linux: object) -> dict[str, object]:
    return {"process": {"args": ["sh"], "env": ["PATH=/bin", "A=b c"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}},
            "linux": linux, "annotations": {}}


def test_ct_options_from_the_spec() -> None:
    s = spec(resources={"memory": {"limit": 256 << 20, "swap": 384 << 20},
                        "cpu": {"quota": 150000, "period": 100000, "shares": 512}})
    opts = ctconfig.build(s, namespace="k8s.io", container_id="c_1", overrides={"vlan": "7"},
                          default_bridge="vmbr0", tags=("containerd",),
                          entrypoint="/dev/.lxcri/init.lxc")
    o = opts.options
    assert (o["memory"], o["swap"]) == (256, 128)
    assert (o["cpulimit"], o["cores"], o["cpuunits"]) == (1.5, 2, 512)
    assert o["net0"] == "name=eth0,bridge=vmbr0,tag=7"
    assert o["hostname"] == "c-1" and o["onboot"] is False
    assert o["env"] == "PATH=/bin\0A=b c"
    assert "namespace k8s.io, container c_1" in o["description"]
    assert opts.unprivileged is False
    # User, cwd and capabilities are the in-CT init's (runtime/proxmox/initdir.py), not LXC's.
    assert not [k for k, _ in opts.raw if k.startswith(("lxc.init.", "lxc.cap."))]


def test_user_namespace_makes_an_unprivileged_ct() -> None:
    s = spec(namespaces=[{"type": "user"}])
    assert ctconfig.build(s, namespace="n", container_id="c", overrides={},
                          default_bridge="vmbr0", tags=(), entrypoint="/e").unprivileged


@pytest.mark.parametrize("overrides, word", [
    ({"vlan": "5000"}, "vlan"), ({"vlan": "1\n2"}, "vlan"), ({"bridge": "br 0"}, "bridge"),
    ({"ip": "10.0.0.1"}, "ip"), ({"mac": "zz"}, "mac")])
def test_bad_network_annotations(overrides: dict[str, str], word: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=word):
        ctconfig.network(overrides, "vmbr0")


def test_choke_point_refuses_line_breaks() -> None:
    s = spec()
    s["process"]["env"] = ["A=x\ny"]  # type: ignore[index]
    with pytest.raises(errdefs.InvalidArgument, match="control"):
        ctconfig.build(s, namespace="n", container_id="c", overrides={},
                       default_bridge="vmbr0", tags=(), entrypoint="/e")
    s = spec()
    s["process"]["cwd"] = "/a\nlxc.hook.pre-start = /evil"  # type: ignore[index]
    with pytest.raises(errdefs.InvalidArgument, match="line break"):
        ctconfig.build(s, namespace="n", container_id="c", overrides={},
                       default_bridge="vmbr0", tags=(), entrypoint="/e")
    with pytest.raises(errdefs.InvalidArgument, match="whitespace"):
        ctconfig.mount_path("mounts[0].source", "/a b")


def test_raw_keys_go_before_the_snapshots(tmp_path: Path) -> None:
    (tmp_path / "101.conf").write_text("memory: 512\n\n[checkpoint-1]\nmemory: 256\n")
    conffile.add_raw(tmp_path, 101, [("lxc.init.uid", "1000")])
    assert (tmp_path / "101.conf").read_text() == \
        "memory: 512\nlxc.init.uid: 1000\n\n[checkpoint-1]\nmemory: 256\n"
    with pytest.raises(errdefs.InvalidArgument, match="not one this backend writes"):
        conffile.add_raw(tmp_path, 101, [("lxc.hook.pre-start", "/x")])
    with pytest.raises(errdefs.InvalidArgument, match="line break"):
        conffile.add_raw(tmp_path, 101, [("lxc.init.cwd", "/\nlxc.x = 1")])


def test_api_errors_name_the_call_and_the_privilege() -> None:
    e = api._http_error("CT 100: POST /nodes/{node}/lxc/{vmid}/clone", 403,
                        "Permission check failed (/vms/100, VM.Allocate)", "")
    assert isinstance(e, errdefs.FailedPrecondition)
    assert "lacks privilege VM.Allocate on /vms/100" in str(e)
    e = api._http_error("CT 100: x", 500, "CT is locked (backup)", "")
    assert isinstance(e, errdefs.FailedPrecondition) and "held lock" in str(e)
    e = api._http_error("CT 100: x", 500, "CT 100 already exists on node 'pve'", "")
    assert isinstance(e, errdefs.AlreadyExists)
    e = api._http_error("proxmox: x", 400, "Parameter verification failed.",
                        '{"errors": {"vmid": "invalid format\\n"}}')
    assert isinstance(e, errdefs.InvalidArgument) and "vmid: invalid format" in str(e)
    assert isinstance(api._http_error("p", 401, "authentication failure", ""),
                      errdefs.Unavailable)


def test_task_status_and_encoding() -> None:
    assert api.task_ok("OK") and api.task_ok("WARNINGS: 2")
    assert not api.task_ok("unable to create CT 100 - boom")
    assert api.encode({"a": True, "b": False, "c": 3, "d": None}) == \
        {"a": "1", "b": "0", "c": "3"}


def test_nextid_is_a_string_of_digits() -> None:
    assert vmid._parse("100") == 100
    with pytest.raises(errdefs.Internal):
        vmid._parse("1e3")


def test_a_user_namespace_with_another_mapping_is_refused() -> None:
    s = spec(namespaces=[{"type": "user"}],
             uidMappings=[{"containerID": 0, "hostID": 200000, "size": 65536}])
    with pytest.raises(errdefs.InvalidArgument, match="0:100000:65536"):
        ctconfig.build(s, namespace="n", container_id="c", overrides={},
                       default_bridge="vmbr0", tags=(), entrypoint="/e")
    s = spec(namespaces=[{"type": "user"}],
             uidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}])
    assert ctconfig.build(s, namespace="n", container_id="c", overrides={},
                          default_bridge="vmbr0", tags=(), entrypoint="/e").unprivileged
