"""The Proxmox VE stand-in (tests/pvestandin) answers like a PVE 9 node and runs CTs on LXC.

What a client sees: HTTP status, reason phrase and JSON body for bad requests, unknown paths and
refused token calls; UPIDs and task status; a CT created from the busybox template running on
real LXC (host PID, unprivileged ids), stopping, and gone with its ZFS dataset after delete;
concurrent creates and locks answering with Proxmox's texts. Unmodified proxmoxer drives it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException  # type: ignore[import-untyped]
from proxmoxer.tools import Tasks  # type: ignore[import-untyped]

from tests.harness.zfs import zfs_fuse_fixture  # noqa: F401
from tests.pvestandin.fixture import (  # noqa: F401
    StandInHandle,
    pve_standin_fixture,
    pve_standin_nozfs_fixture,
)

pytestmark = pytest.mark.integration



def upid_re(wtype: str, wid: object) -> str:
    """pve-common PVE/Tools.pm upid_encode: upper-case hex, a trailing colon."""
    return rf"UPID:pve:[0-9A-F]{{8}}:[0-9A-F]{{8,9}}:[0-9A-F]{{8}}:{wtype}:{wid}:root@pam!standin:"


def http(pve: StandInHandle, method: str, path: str, token: bool = True, **kw: Any
         ) -> requests.Response:
    headers = {"Authorization": pve.auth_header()} if token else {}
    return requests.request(method, pve.url + path, headers=headers, verify=pve.ca_file,
                            timeout=30, **kw)


def proxmox(pve: StandInHandle) -> ProxmoxAPI:
    user, name = pve.token_id.split("!")
    return ProxmoxAPI(pve.host, port=pve.port, user=user, token_name=name,
                      token_value=pve.token_secret, verify_ssl=pve.ca_file, service="PVE")


def wait_task(pve: StandInHandle, upid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = http(pve, "GET", f"/nodes/{pve.node}/tasks/{upid}/status").json()["data"]
        if st["status"] == "stopped":
            return st  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"task {upid} still running"
        time.sleep(0.05)


def test_schema_validation_errors_answer_400_with_errors_per_parameter(
        pve_standin_nozfs: StandInHandle) -> None:
    pve = pve_standin_nozfs
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc", data={
        "vmid": "99",                      # pve-vmid format (and minimum 100)
        "ostemplate": pve.template,
        "bogus": "1",                      # unknown parameter
        "env": "1BAD",                     # pattern (?:\w+=...)
        "net0": "bridge=vmbr0",            # property string without its required 'name'
        "rootfs": "local:0,quota=maybe",   # boolean inside a property string
        "unprivileged": "True",            # top-level booleans are 0/1 only
        "memory": "8",                     # minimum 16
        "arch": "sparc",                   # enum
        "net32": "name=eth0",              # net0..net31 only
    })
    assert r.status_code == 400
    assert r.reason == "Parameter verification failed."
    body = r.json()
    assert body["data"] is None
    assert body["message"] == "Parameter verification failed.\n"
    not_defined = ("property is not defined in schema and the schema does not allow additional "
                   "properties")
    assert body["errors"] == {
        "vmid": "invalid format - value does not look like a valid VM ID\n",
        "bogus": not_defined,
        "net32": not_defined,
        "env": "value does not match the regex pattern",
        "net0": "invalid format - format error\nnet0.name: property is missing and it is not "
                "optional\n",
        "rootfs": "invalid format - format error\nrootfs.quota: type check ('boolean') failed - "
                  "got 'maybe'\n",
        "unprivileged": "type check ('boolean') failed - got 'True'",
        "memory": "value must have a minimum value of 16",
        "arch": "value 'sparc' does not have a value in the enumeration 'amd64, i386, arm64, "
                "armhf, riscv32, riscv64'",
    }
    # Nothing was made: no CT, no task.
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc").json() == {"data": []}
    assert http(pve, "GET", f"/nodes/{pve.node}/tasks").json() == {"data": []}
    # A required parameter missing, and a JSON body checked the same way.
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc", json={"vmid": 150, "memory": [1]})
    assert r.status_code == 400
    assert r.json()["errors"] == {
        "ostemplate": "property is missing and it is not optional",
        "memory": "type check ('integer') failed - got ARRAY"}


def test_unknown_endpoint_is_501_after_authentication(pve_standin_nozfs: StandInHandle) -> None:
    pve = pve_standin_nozfs
    r = http(pve, "GET", f"/nodes/{pve.node}/no-such-thing")
    assert (r.status_code, r.reason) == (501, f"Method 'GET /nodes/{pve.node}/no-such-thing' "
                                              "not implemented")
    # A path of the schema with a method it lacks is 501 as well.
    r = http(pve, "PATCH", "/version")
    assert r.status_code == 501
    # Authentication runs first: without credentials it is 401 with an empty body.
    r = http(pve, "GET", f"/nodes/{pve.node}/no-such-thing", token=False)
    assert (r.status_code, r.reason, r.content) == (401, "No ticket", b"")
    r = requests.get(pve.url + "/version", verify=pve.ca_file, timeout=30,
                     headers={"Authorization": f"PVEAPIToken={pve.token_id}=wrong"})
    assert (r.status_code, r.reason) == (401, "Authentication failed!")
    # A DELETE with a body: pve-http-server refuses the content.
    r = http(pve, "DELETE", f"/nodes/{pve.node}/lxc/100", data={"force": "1"})
    assert (r.status_code, r.reason) == (501, "Unexpected content for method 'DELETE'")


def test_token_is_refused_root_only_options_and_the_login(
        pve_standin_nozfs: StandInHandle) -> None:
    pve = pve_standin_nozfs
    vmid = int(http(pve, "GET", "/cluster/nextid").json()["data"])
    base = {"vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0"}
    cases = {
        "mp0": ("/srv,mp=/srv", "mount point type bind is only allowed for root@pam"),
        "dev0": ("/dev/null", "configuring device passthrough is only allowed for root@pam"),
        "features": ("keyctl=1", "changing feature flags (except nesting) is only allowed "
                                 "for root@pam"),
    }
    for key, (value, what) in cases.items():
        r = http(pve, "POST", f"/nodes/{pve.node}/lxc", data={**base, key: value})
        assert r.status_code == 403, (key, r.text)
        assert r.reason == f"Permission check failed ({what})"
        assert r.json() == {"data": None, "message": f"Permission check failed ({what})\n"}
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc").json() == {"data": []}
    # skiplock: "Only root may use this option." (400, Status.pm).
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/start", data={"skiplock": 1})
    assert r.status_code == 400
    assert r.json()["errors"] == {"skiplock": "Only root may use this option."}
    # allowtoken 0: the login is not for tokens.
    r = http(pve, "POST", "/access/ticket", data={"username": "root@pam", "password": "x"})
    assert r.status_code == 403
    assert r.json()["message"] == ("Permission check failed (URI '/access/ticket' not available "
                                   "with API token, need proper ticket.\n)\n")
    # The same options pass for root@pam with a ticket (and fail later, in the task, on the
    # missing template only).
    r = requests.post(pve.url + "/access/ticket", verify=pve.ca_file, timeout=30,
                      data={"username": "root@pam", "password": pve.standin.root_password})
    login = r.json()["data"]
    assert re.fullmatch(r"PVE:root@pam:[0-9A-F]{8}::\S+", login["ticket"])
    r = requests.post(pve.url + f"/nodes/{pve.node}/lxc", verify=pve.ca_file, timeout=30,
                      cookies={"PVEAuthCookie": login["ticket"]},
                      data={**base, "features": "keyctl=1", "ostemplate": "local:vztmpl/no.tar"})
    assert r.status_code == 401  # no CSRF token
    assert r.reason == "Permission denied - invalid csrf token"
    r = requests.post(pve.url + f"/nodes/{pve.node}/lxc", verify=pve.ca_file, timeout=30,
                      cookies={"PVEAuthCookie": login["ticket"]},
                      headers={"CSRFPreventionToken": login["CSRFPreventionToken"]},
                      data={**base, "features": "keyctl=1", "ostemplate": "local:vztmpl/no.tar"})
    assert r.status_code == 200, r.text
    st = wait_task(pve, r.json()["data"])
    assert st["user"] == "root@pam" and "tokenid" not in st
    assert st["exitstatus"] == (f"unable to create CT {vmid} - volume 'local:vztmpl/no.tar' "
                                "does not exist")
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc").json() == {"data": []}


def test_proxmoxer_drives_a_busybox_ct_on_real_lxc_and_zfs(pve_standin: StandInHandle) -> None:
    pve = pve_standin
    assert pve.pool is not None
    px = proxmox(pve)
    assert px.version.get()["release"] == "9.2"
    nextid = px.cluster.nextid.get()
    assert isinstance(nextid, str)  # the wire quirk: a string
    vmid = int(nextid)
    node = px.nodes(pve.node)
    upid = node.lxc.post(vmid=vmid, ostemplate=pve.template, rootfs="local-zfs:1",
                         hostname="bb1", memory=64, swap=0, net0="name=eth0,bridge=vmbr0,tag=7")
    assert re.fullmatch(upid_re("vzcreate", vmid), upid), upid
    assert Tasks.decode_upid(upid)["type"] == "vzcreate"
    st = Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.1)
    assert (st["status"], st["exitstatus"], st["user"], st["tokenid"]) == \
        ("stopped", "OK", "root@pam", "standin")
    conf = node.lxc(vmid).config.get()
    assert conf["rootfs"] == f"local-zfs:subvol-{vmid}-disk-0,size=1G"
    assert conf["unprivileged"] == 1 and conf["memory"] == 64 and "lock" not in conf
    assert re.fullmatch(r"name=eth0,bridge=vmbr0,tag=7,hwaddr=BC:24:11(:[0-9A-F]{2}){3},"
                        r"type=veth", conf["net0"])
    dataset = f"{pve.standin.zfs_parent}/subvol-{vmid}-disk-0"
    assert subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", "refquota", dataset],
                          capture_output=True, text=True).stdout.strip() == str(1 << 30)

    st = Tasks.blocking_status(px, node.lxc(vmid).status.start.post(), timeout=60,
                               polling_interval=0.1)
    assert st["exitstatus"] == "OK", node.tasks(st["upid"]).log.get()
    cur = node.lxc(vmid).status.current.get()
    assert cur["status"] == "running" and cur["type"] == "lxc" and cur["vmid"] == vmid
    pid = cur["pid"]
    # Real LXC: the init is busybox, in its own pid namespace, uid-shifted (unprivileged).
    assert os.readlink(f"/proc/{pid}/exe").endswith("busybox")
    status = open(f"/proc/{pid}/status").read()
    assert re.search(r"^Uid:\s+100000\s", status, re.M), status
    assert open(f"/proc/{pid}/ns/pid", "rb") and \
        os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    lxcpath = pve.standin.node.lxc.lxcpath  # type: ignore[union-attr]
    assert "lxc.uts.name = bb1" in (lxcpath / str(vmid) / "config").read_text()
    # lxc-start -F is the monitor and the init's parent; its stdout is /dev/null.
    monitor = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    assert os.readlink(f"/proc/{monitor}/fd/1") == "/dev/null"
    assert "lxc-start" in open(f"/proc/{monitor}/cmdline").read()
    # Start again: refused before any task.
    with pytest.raises(ResourceException) as exc:
        node.lxc(vmid).status.start.post()
    assert exc.value.status_code == 500 and exc.value.content == f"CT {vmid} already running"
    # A running CT is not destroyed without force.
    with pytest.raises(ResourceException) as exc:
        node.lxc(vmid).delete()
    assert exc.value.content == f"unable to destroy CT {vmid} - container is running"

    st = Tasks.blocking_status(px, node.lxc(vmid).status.shutdown.post(timeout=20),
                               timeout=60, polling_interval=0.1)
    assert st["exitstatus"] == "OK"
    cur = node.lxc(vmid).status.current.get()
    assert cur["status"] == "stopped" and "pid" not in cur and cur["uptime"] == 0
    assert not os.path.exists(f"/proc/{pid}")

    # Snapshots: ZFS rolls back only to the most recent one.
    for snap in ("s1", "s2"):
        st = Tasks.blocking_status(px, node.lxc(vmid).snapshot.post(snapname=snap),
                                   polling_interval=0.1)
        assert st["exitstatus"] == "OK"
    names = [s["name"] for s in node.lxc(vmid).snapshot.get()]
    assert names == ["s1", "s2", "current"]
    st = Tasks.blocking_status(px, node.lxc(vmid).snapshot("s1").rollback.post(),
                               polling_interval=0.1)
    assert st["exitstatus"] == (f"can't rollback, 's1' is not most recent snapshot on "
                                f"'local-zfs:subvol-{vmid}-disk-0'")
    st = Tasks.blocking_status(px, node.lxc(vmid).snapshot("s2").rollback.post(),
                               polling_interval=0.1)
    assert st["exitstatus"] == "OK"

    st = Tasks.blocking_status(px, node.lxc(vmid).delete(), timeout=60, polling_interval=0.1)
    assert st["exitstatus"] == "OK"
    assert node.lxc.get() == []
    with pytest.raises(ResourceException) as exc:
        node.lxc(vmid).status.current.get()
    assert exc.value.content == f"Configuration file 'nodes/{pve.node}/lxc/{vmid}.conf' does " \
                                "not exist"
    assert node.storage("local-zfs").content.get() == []
    assert [d for d in pve.pool.datasets() if f"-{vmid}-" in d] == []
    assert not (lxcpath / str(vmid)).exists()


def test_concurrent_creates_of_one_vmid_one_wins(pve_standin_nozfs: StandInHandle) -> None:
    pve = pve_standin_nozfs
    vmid = http(pve, "GET", "/cluster/nextid").json()["data"]
    # nextid does not reserve: both callers get the same id.
    assert http(pve, "GET", "/cluster/nextid").json()["data"] == vmid

    def create(_: int) -> requests.Response:
        return http(pve, "POST", f"/nodes/{pve.node}/lxc",
                    data={"vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0"})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(create, range(4)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert len(ok) == 1
    for r in refused:
        assert (r.status_code, r.reason) == (500, f"CT {vmid} already exists on node "
                                                  f"'{pve.node}'")
    assert wait_task(pve, ok[0].json()["data"])["exitstatus"] == "OK"
    # nextid moves on; asking for a used id is a parameter error.
    assert int(http(pve, "GET", "/cluster/nextid").json()["data"]) == int(vmid) + 1
    r = http(pve, "GET", "/cluster/nextid", params={"vmid": vmid})
    assert r.status_code == 400 and r.json()["errors"] == {"vmid": f"VM {vmid} already exists"}
    assert wait_task(pve, http(pve, "DELETE", f"/nodes/{pve.node}/lxc/{vmid}").json()["data"]
                     )["exitstatus"] == "OK"


def test_locks_hold_while_create_runs(pve_standin_nozfs: StandInHandle) -> None:
    pve = pve_standin_nozfs
    tasks = pve.standin.node.tasks  # type: ignore[union-attr]
    tasks.hold.add("vzcreate")  # the create worker waits until released
    vmid = http(pve, "GET", "/cluster/nextid").json()["data"]
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc",
             data={"vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0"})
    upid = r.json()["data"]
    assert http(pve, "GET", f"/nodes/{pve.node}/tasks/{upid}/status").json()["data"][
        "status"] == "running"
    # The config exists at once, holding only the lock (create_and_lock_config).
    conf = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/config").json()["data"]
    assert conf["lock"] == "create"
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current").json()["data"][
        "lock"] == "create"
    r = http(pve, "PUT", f"/nodes/{pve.node}/lxc/{vmid}/config", data={"memory": 256})
    assert (r.status_code, r.reason) == (500, "CT is locked (create)")
    r = http(pve, "DELETE", f"/nodes/{pve.node}/lxc/{vmid}")
    assert (r.status_code, r.reason) == (500, "CT is locked (create)")
    # start is accepted and fails inside its task.
    start = http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/start").json()["data"]
    assert re.fullmatch(upid_re("vzstart", vmid), start)
    assert wait_task(pve, start)["exitstatus"] == "CT is locked (create)"
    log = http(pve, "GET", f"/nodes/{pve.node}/tasks/{start}/log").json()["data"]
    assert log[-1] == {"n": len(log), "t": "TASK ERROR: CT is locked (create)"}
    # Release the create: the lock goes, PUT works, a stale digest is refused.
    create_task = tasks.get(upid)
    assert create_task is not None
    pve.threaded.loop.call_soon_threadsafe(create_task.release.set)
    assert wait_task(pve, upid)["exitstatus"] == "OK"
    conf = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/config").json()["data"]
    assert "lock" not in conf
    r = http(pve, "PUT", f"/nodes/{pve.node}/lxc/{vmid}/config", data={"memory": 256})
    assert r.status_code == 200 and r.json() == {"data": None}
    r = http(pve, "PUT", f"/nodes/{pve.node}/lxc/{vmid}/config",
             data={"memory": 128, "digest": conf["digest"]})
    assert (r.status_code, r.reason) == (500, "detected modified configuration - file changed "
                                              "by other user? Try again.")
    assert wait_task(pve, http(pve, "DELETE", f"/nodes/{pve.node}/lxc/{vmid}").json()["data"]
                     )["exitstatus"] == "OK"


def test_config_file_edited_on_the_node_is_the_truth(pve_standin_nozfs: StandInHandle) -> None:
    """Raw ``lxc.*`` keys can only be added by editing /etc/pve/lxc/<vmid>.conf as root on the
    node; the API then lists them and the next start uses them."""
    pve = pve_standin_nozfs
    node = pve.standin.node
    assert node is not None
    vmid = int(http(pve, "GET", "/cluster/nextid").json()["data"])
    upid = http(pve, "POST", f"/nodes/{pve.node}/lxc",
                data={"vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0",
                      "description": "made by 100% test\nsecond line"}).json()["data"]
    assert wait_task(pve, upid)["exitstatus"] == "OK"
    conf_file = node.root / "etc/pve/lxc" / f"{vmid}.conf"
    text = conf_file.read_text()
    assert text.startswith("#made by 100%25 test\n#second line\n")
    conf_file.write_text(text + "lxc.environment: STANDIN_MARK=edited-by-hand\n")
    conf = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/config").json()["data"]
    assert conf["lxc"] == [["lxc.environment", "STANDIN_MARK=edited-by-hand"]]
    assert conf["description"] == "made by 100% test\nsecond line"
    assert wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/start")
                     .json()["data"])["exitstatus"] == "OK"
    pid = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current").json()["data"]["pid"]
    assert b"STANDIN_MARK=edited-by-hand" in open(f"/proc/{pid}/environ", "rb").read()
    # reboot: the "VM" wording when not running, else a new init.
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/reboot", data={"timeout": 20})
    assert wait_task(pve, r.json()["data"])["exitstatus"] == "OK"
    cur = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current").json()["data"]
    assert cur["status"] == "running" and cur["pid"] != pid
    resources = http(pve, "GET", "/cluster/resources", params={"type": "vm"}).json()["data"]
    assert [(r["id"], r["status"]) for r in resources] == [(f"lxc/{vmid}", "running")]
    assert wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/stop")
                     .json()["data"])["exitstatus"] == "OK"
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/reboot")
    assert (r.status_code, r.reason) == (500, f"VM {vmid} not running")
    # A config file removed on the node: the CT is gone from the API.
    conf_file.unlink()
    r = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current")
    assert (r.status_code, r.reason) == (500, f"Configuration file 'nodes/{pve.node}/lxc/"
                                              f"{vmid}.conf' does not exist")


def test_ten_concurrent_creates_get_ten_vmids_by_retrying(
        pve_standin_nozfs: StandInHandle) -> None:
    """What a client must do (nextid does not reserve): take nextid, create, and on
    "already exists" take the next one. Ten at once end with ten distinct CTs."""
    pve = pve_standin_nozfs

    def create(_: int) -> tuple[int, int]:
        for attempt in range(50):
            vmid = int(http(pve, "GET", "/cluster/nextid").json()["data"])
            r = http(pve, "POST", f"/nodes/{pve.node}/lxc",
                     data={"vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0"})
            if r.status_code == 200:
                assert wait_task(pve, r.json()["data"])["exitstatus"] == "OK"
                return vmid, attempt
            assert r.reason == f"CT {vmid} already exists on node '{pve.node}'", r.reason
        raise AssertionError("no vmid after 50 attempts")

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(create, range(10)))
    vmids = sorted(v for v, _ in results)
    assert len(set(vmids)) == 10
    listed = sorted(ct["vmid"] for ct in http(pve, "GET", f"/nodes/{pve.node}/lxc")
                    .json()["data"])
    assert listed == vmids
    for vmid in vmids:
        assert wait_task(pve, http(pve, "DELETE", f"/nodes/{pve.node}/lxc/{vmid}")
                         .json()["data"])["exitstatus"] == "OK"
    assert http(pve, "GET", f"/nodes/{pve.node}/storage/local/content",
                params={"content": "rootdir"}).json()["data"] == []


def test_hostile_values_do_not_reach_outside(pve_standin_nozfs: StandInHandle) -> None:
    pve = pve_standin_nozfs
    vmid = int(http(pve, "GET", "/cluster/nextid").json()["data"])
    assert wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc", data={
        "vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0"}).json()["data"]
    )["exitstatus"] == "OK"
    # A volume name that climbs out of the storage is no volume.
    r = http(pve, "PUT", f"/nodes/{pve.node}/lxc/{vmid}/config",
             data={"rootfs": "local:../../../../.."})
    assert r.status_code == 400 and r.json()["errors"] == {
        "rootfs": "invalid format - format error\nrootfs.volume: invalid format - "
                  "local:../../../../.. contains illegal character sequences\n\n"}
    r = http(pve, "PUT", f"/nodes/{pve.node}/lxc/{vmid}/config", data={"rootfs": "local:/etc"})
    assert r.status_code == 200
    st = wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/start")
                   .json()["data"])
    assert st["exitstatus"] == "volume 'local:/etc' does not exist"
    # A template path likewise.
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc", data={
        "vmid": vmid + 1, "ostemplate": "local:vztmpl/../../../../etc/passwd", "rootfs": "local:0"})
    st = wait_task(pve, r.json()["data"])
    assert st["exitstatus"].startswith(f"unable to create CT {vmid + 1} - volume ")
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc").json()["data"][0]["vmid"] == vmid


def test_task_durations_are_configurable() -> None:
    from tests.pvestandin.fixture import standin_skip_reason
    from tests.pvestandin.server import Options, ThreadedStandIn

    reason = standin_skip_reason()
    if reason:
        pytest.skip(reason)
    with ThreadedStandIn(Options(task_delay={"vzcreate": 1.0},
                                 nextid_range=(990000, 991000))) as standin:
        headers = {"Authorization": f"PVEAPIToken={standin.opts.token_id}="
                                    f"{standin.token_secret}"}
        r = requests.post(standin.url + "/nodes/pve/lxc", headers=headers,
                          verify=str(standin.ca_file), timeout=30,
                          data={"vmid": 990000, "ostemplate": "local:vztmpl/none.tar.gz",
                                "rootfs": "local:0"})
        upid = r.json()["data"]
        status = requests.get(standin.url + f"/nodes/pve/tasks/{upid}/status", headers=headers,
                              verify=str(standin.ca_file), timeout=30).json()["data"]
        assert status["status"] == "running" and "exitstatus" not in status
        deadline = time.monotonic() + 30
        while status["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
            status = requests.get(standin.url + f"/nodes/pve/tasks/{upid}/status",
                                  headers=headers, verify=str(standin.ca_file),
                                  timeout=30).json()["data"]
        assert status["exitstatus"].startswith("unable to create CT 990000 - volume")
        folder = standin.folder
    assert not folder.exists()


def test_cli_prints_its_coordinates_and_cleans_up_on_sigterm() -> None:
    from tests.pvestandin.fixture import standin_skip_reason

    reason = standin_skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.Popen([sys.executable, "-m", "tests.pvestandin", "--no-zfs"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        env: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            env[key] = value
            if key == "PVE_CONF_DIR":
                break
        assert set(env) >= {"PVE_URL", "PVE_AUTH_HEADER", "PVE_CA_FILE", "PVE_TOKEN_ID",
                            "PVE_TOKEN_SECRET", "PVE_TEMPLATE", "PVE_NODE", "PVE_LXCPATH"}
        r = requests.get(env["PVE_URL"] + "/version", verify=env["PVE_CA_FILE"], timeout=30,
                         headers={"Authorization": env["PVE_AUTH_HEADER"]})
        assert r.status_code == 200 and r.json()["data"]["release"] == "9.2"
        folder = os.path.dirname(env["PVE_CA_FILE"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not os.path.exists(folder)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_root_ticket_bind_mount_entrypoint_env_and_exec(pve_standin_nozfs: StandInHandle,
                                                        tmp_path: Any) -> None:
    """What a backend on the node leans on: root@pam may bind-mount a host folder; the
    entrypoint and env options reach the init; lxc-attach runs commands in the CT."""
    pve = pve_standin_nozfs
    node = pve.standin.node
    assert node is not None
    login = requests.post(pve.url + "/access/ticket", verify=pve.ca_file, timeout=30, data={
        "username": "root@pam", "password": pve.standin.root_password}).json()["data"]
    session = requests.Session()
    # verify per call: an environment CA bundle (REQUESTS_CA_BUNDLE) would win over
    # session.verify in requests' settings merge.
    session.request = functools.partial(session.request, verify=pve.ca_file,  # type: ignore
                                        timeout=30)
    session.cookies.set("PVEAuthCookie", login["ticket"])
    session.headers["CSRFPreventionToken"] = login["CSRFPreventionToken"]
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    vmid = int(session.get(pve.url + "/cluster/nextid").json()["data"])
    r = session.post(pve.url + f"/nodes/{pve.node}/lxc", data={
        "vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0",
        "mp0": f"{shared},mp=/mnt/shared", "entrypoint": "/bin/sleep 3600",
        "env": "GREETING=hi\0OTHER=2", "unprivileged": 0, "console": 0})
    assert r.status_code == 200, r.text
    assert wait_task(pve, r.json()["data"])["exitstatus"] == "OK"
    st = wait_task(pve, session.post(pve.url + f"/nodes/{pve.node}/lxc/{vmid}/status/start")
                   .json()["data"])
    log = session.get(pve.url + f"/nodes/{pve.node}/tasks/{st['upid']}/log").json()["data"]
    assert st["exitstatus"] == "OK", (log, node.lxc.stderr_path(vmid).read_text()[:2000])
    pid = session.get(pve.url + f"/nodes/{pve.node}/lxc/{vmid}/status/current"
                      ).json()["data"]["pid"]
    assert open(f"/proc/{pid}/cmdline", "rb").read() == b"/bin/sleep\x003600\x00"
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"GREETING=hi" in environ and b"OTHER=2" in environ
    out = subprocess.run(["lxc-attach", "-P", str(node.lxc.lxcpath), "-n", str(vmid), "--",
                          "/bin/cat", "/mnt/shared/hello"], capture_output=True, text=True,
                         timeout=30)
    assert (out.returncode, out.stdout) == (0, "from the host\n"), out.stderr
    assert wait_task(pve, session.post(pve.url + f"/nodes/{pve.node}/lxc/{vmid}/status/stop")
                     .json()["data"])["exitstatus"] == "OK"
    assert wait_task(pve, session.delete(pve.url + f"/nodes/{pve.node}/lxc/{vmid}")
                     .json()["data"])["exitstatus"] == "OK"
    assert (shared / "hello").read_text() == "from the host\n"  # bind mounts are not freed


def test_schema_91_entrypoint_newline_cannot_inject_lxc_keys() -> None:
    """PVE 9.1's entrypoint pattern admits a line feed (its \\x10 typo; fixed in 9.2). The
    9.1 stand-in accepts the value as a 9.1 node does, but the start refuses to write it."""
    from tests.pvestandin.fixture import standin_skip_reason
    from tests.pvestandin.server import TEMPLATE_NAME, Options, ThreadedStandIn

    reason = standin_skip_reason()
    if reason:
        pytest.skip(reason)
    hostile = "/bin/sleep 60\nlxc.hook.pre-start = /bin/false"
    with ThreadedStandIn(Options(schema_version="9.1", nextid_range=(992000, 993000))) as s:
        def call(method: str, path: str, **kw: Any) -> requests.Response:
            return requests.request(method, s.url + path, verify=str(s.ca_file), timeout=30,
                                    headers={"Authorization": f"PVEAPIToken={s.opts.token_id}="
                                                              f"{s.token_secret}"}, **kw)
        assert call("GET", "/version").json()["data"]["release"] == "9.1"
        r = call("POST", "/nodes/pve/lxc", data={
            "vmid": 992000, "ostemplate": f"local:vztmpl/{TEMPLATE_NAME}", "rootfs": "local:0",
            "entrypoint": hostile})
        assert r.status_code == 200, r.text
        upid = r.json()["data"]
        deadline = time.monotonic() + 60
        while call("GET", f"/nodes/pve/tasks/{upid}/status").json()["data"]["status"] \
                == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        upid = call("POST", "/nodes/pve/lxc/992000/status/start").json()["data"]
        while (st := call("GET", f"/nodes/pve/tasks/{upid}/status").json()["data"])[
                "status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert st["exitstatus"] == ("refusing a line break in the LXC config: "
                                    "'lxc.init.cmd = /bin/sleep 60'")
        assert call("GET", "/nodes/pve/lxc/992000/status/current").json()["data"][
            "status"] == "stopped"


def test_template_and_linked_clones_on_zfs(pve_standin: StandInHandle) -> None:
    """One template CT per image, each container a linked clone (issue 14's O(1) rootfs):
    the template's volume becomes basevol-…@__base__, clones are `zfs clone`s of it, and the
    base cannot go while clones use it."""
    pve = pve_standin
    assert pve.pool is not None
    px = proxmox(pve)
    node = px.nodes(pve.node)
    tmpl = int(px.cluster.nextid.get())
    st = Tasks.blocking_status(px, node.lxc.post(vmid=tmpl, ostemplate=pve.template,
                                                 rootfs="local-zfs:1"), polling_interval=0.1)
    assert st["exitstatus"] == "OK"
    (pve.standin.node.storages["local-zfs"].volume(  # type: ignore[union-attr]
        f"subvol-{tmpl}-disk-0").path / "root/marker").write_text("from the image\n")
    assert node.lxc(tmpl).template.post() is None  # returns null; the worker runs on
    deadline = time.monotonic() + 60
    while node.lxc(tmpl).config.get().get("template") != 1:
        assert time.monotonic() < deadline, [(t["type"], t.get("status"))
                                             for t in node.tasks.get(vmid=tmpl)]
        time.sleep(0.05)
    conf = node.lxc(tmpl).config.get()
    assert conf["rootfs"] == f"local-zfs:basevol-{tmpl}-disk-0,size=1G"
    tasks = node.tasks.get(vmid=tmpl)
    assert tasks[0]["type"] == "vztemplate" and tasks[0]["status"] == "OK"
    st = Tasks.blocking_status(px, node.lxc(tmpl).status.start.post(), polling_interval=0.1)
    assert st["exitstatus"] == "you can't start a CT if it's a template"
    clones = []
    for _ in range(2):
        newid = int(px.cluster.nextid.get())
        upid = node.lxc(tmpl).clone.post(newid=newid, hostname=f"c{newid}")
        assert re.fullmatch(upid_re("vzclone", tmpl), upid)
        assert Tasks.blocking_status(px, upid, polling_interval=0.1)["exitstatus"] == "OK"
        clones.append(newid)
        conf = node.lxc(newid).config.get()
        assert conf["rootfs"] == (f"local-zfs:basevol-{tmpl}-disk-0/subvol-{newid}-disk-0,"
                                  "size=1G")
        assert "template" not in conf and "lock" not in conf and conf["hostname"] == f"c{newid}"
    ds = f"{pve.standin.zfs_parent}/subvol-{clones[0]}-disk-0"
    origin = subprocess.run(["zfs", "get", "-H", "-o", "value", "origin", ds],
                            capture_output=True, text=True).stdout.strip()
    assert origin == f"{pve.standin.zfs_parent}/basevol-{tmpl}-disk-0@__base__"
    # The clone runs and sees the image's files.
    st = Tasks.blocking_status(px, node.lxc(clones[0]).status.start.post(), polling_interval=0.1)
    assert st["exitstatus"] == "OK"
    out = subprocess.run(["lxc-attach", "-P", str(pve.standin.node.lxc.lxcpath),  # type: ignore
                          "-n", str(clones[0]), "--", "/bin/cat", "/root/marker"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "from the image\n", out.stderr
    # A linked clone of a CT that is no template is refused.
    with pytest.raises(ResourceException) as exc:
        node.lxc(clones[1]).clone.post(newid=clones[1] + 100, full=0)
    assert exc.value.content == (f"Linked clone feature for 'local-zfs:basevol-{tmpl}-disk-0/"
                                 f"subvol-{clones[1]}-disk-0' is not available")
    # The template cannot go while clones use its base.
    st = Tasks.blocking_status(px, node.lxc(tmpl).delete(), polling_interval=0.1)
    assert st["exitstatus"] == f"base volume 'basevol-{tmpl}-disk-0' is still in use by " \
                               "linked cloned"
    assert node.lxc(tmpl).config.get()["template"] == 1
    for vmid in clones:
        Tasks.blocking_status(px, node.lxc(vmid).delete(force=1), polling_interval=0.1)
    st = Tasks.blocking_status(px, node.lxc(tmpl).delete(), polling_interval=0.1)
    assert st["exitstatus"] == "OK"
    assert node.lxc.get() == [] and node.storage("local-zfs").content.get() == []


def test_template_upload_through_proxmoxer(pve_standin_nozfs: StandInHandle,
                                           tmp_path: Any) -> None:
    """An image's rootfs reaches the node as a vztmpl upload (multipart, imgcopy task) and a
    CT is created from it."""
    import hashlib
    import shutil
    import tarfile

    pve = pve_standin_nozfs
    px = proxmox(pve)
    node = px.nodes(pve.node)
    local = pve.standin.node.storages["local"]  # type: ignore[union-attr]
    src = tmp_path / "myimage_1.0.tar.gz"
    shutil.copy(local.template_dir / pve.template.split("/", 1)[1], src)  # type: ignore
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    with open(src, "rb") as f:
        upid = node.storage("local").upload.post(content="vztmpl", filename=f,
                                                 checksum=digest,
                                                 **{"checksum-algorithm": "sha256"})
    st = Tasks.blocking_status(px, upid, polling_interval=0.1)
    assert (st["type"], st["exitstatus"]) == ("imgcopy", "OK")
    volids = [i["volid"] for i in node.storage("local").content.get(content="vztmpl")]
    assert "local:vztmpl/myimage_1.0.tar.gz" in volids
    with open(src, "rb") as f:
        upid = node.storage("local").upload.post(content="vztmpl", filename=f,
                                                 checksum="00" * 32,
                                                 **{"checksum-algorithm": "sha256"})
    st = Tasks.blocking_status(px, upid, polling_interval=0.1)
    assert st["exitstatus"] == f"checksum mismatch: got '{digest}' != expect '{'00' * 32}'"
    with tarfile.open(tmp_path / "bad.zip", "w"):
        pass
    with open(tmp_path / "bad.zip", "rb") as f, pytest.raises(ResourceException) as exc:
        node.storage("local").upload.post(content="vztmpl", filename=f)
    assert exc.value.status_code == 400 and exc.value.errors == {
        "filename": "wrong file extension"}
    vmid = int(px.cluster.nextid.get())
    st = Tasks.blocking_status(px, node.lxc.post(
        vmid=vmid, ostemplate="local:vztmpl/myimage_1.0.tar.gz", rootfs="local:0"),
        polling_interval=0.1)
    assert st["exitstatus"] == "OK"
    assert not list((pve.standin.node.root / "var/tmp").iterdir())  # type: ignore[union-attr]


def test_missing_privileges_and_injected_failures(pve_standin_nozfs: StandInHandle) -> None:
    """The failure cases a backend must word: 403 naming the path and privilege (from the
    schema's permissions), a 500's reason phrase, a failed task's exit status; and after each
    the stand-in holds nothing."""
    from tests.pvestandin.app import Fault

    pve = pve_standin_nozfs
    node, api = pve.standin.node, pve.standin.api
    assert node is not None and api is not None
    vmid = int(http(pve, "GET", "/cluster/nextid").json()["data"])
    create = {"vmid": vmid, "ostemplate": pve.template, "rootfs": "local:0",
              "net0": "name=eth0,bridge=vmbr0,tag=20"}
    # A token with only VM.Audit (privsep=1 with one ACL).
    api.auth.token_privs[pve.token_id] = frozenset({"VM.Audit"})
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc", data=create)
    assert (r.status_code, r.reason) == (403, f"Permission check failed (/vms/{vmid}, "
                                              "VM.Allocate)")
    api.auth.token_privs[pve.token_id] = frozenset({
        "VM.Allocate", "Datastore.AllocateSpace", "VM.Config.Disk", "VM.Config.Network"})
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc", data=create)
    assert r.reason == "Permission check failed (/sdn/zones/localnetwork/vmbr0/20, SDN.Use)"
    assert pve.leftovers() == []
    del api.auth.token_privs[pve.token_id]
    # A worker that dies: create cleans up after itself.
    node.inject_task_failure("vzcreate", "unable to open file - Read-only file system")
    st = wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc", data=create).json()["data"])
    assert st["exitstatus"] == (f"unable to create CT {vmid} - unable to open file - "
                                "Read-only file system")
    assert pve.leftovers() == []
    assert wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc", data=create)
                     .json()["data"])["exitstatus"] == "OK"
    node.inject_task_failure("vzstart", f"startup for container '{vmid}' failed")
    st = wait_task(pve, http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/start")
                   .json()["data"])
    assert st["exitstatus"] == f"startup for container '{vmid}' failed"
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current").json()["data"][
        "status"] == "stopped"
    # Without privileges to power it, the token is told which one it lacks.
    api.auth.token_privs[pve.token_id] = frozenset({"VM.Audit"})
    r = http(pve, "POST", f"/nodes/{pve.node}/lxc/{vmid}/status/start")
    assert r.reason == f"Permission check failed (/vms/{vmid}, VM.PowerMgmt)"
    del api.auth.token_privs[pve.token_id]
    # An injected 500: the reason phrase is the message's first line.
    api.faults.append(Fault("GET", rf"/nodes/{pve.node}/lxc/{vmid}/status/current", 500,
                            "got timeout\nmore detail"))
    r = http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current")
    assert (r.status_code, r.reason) == (500, "got timeout")
    assert r.json() == {"data": None, "message": "got timeout\nmore detail\n"}
    assert http(pve, "GET", f"/nodes/{pve.node}/lxc/{vmid}/status/current").status_code == 200
    # A lock an operator left (backup) refuses the delete; `pct unlock` is a node-side edit.
    conf = node.root / "etc/pve/lxc" / f"{vmid}.conf"
    conf.write_text(conf.read_text() + "lock: backup\n")
    r = http(pve, "DELETE", f"/nodes/{pve.node}/lxc/{vmid}")
    assert (r.status_code, r.reason) == (500, "CT is locked (backup)")
    assert pve.leftovers() == [f"CT {vmid} (lock: backup)",
                               f"volume local:{vmid}/subvol-{vmid}-disk-0.subvol"]
    conf.write_text(conf.read_text().replace("lock: backup\n", ""))
    assert wait_task(pve, http(pve, "DELETE", f"/nodes/{pve.node}/lxc/{vmid}").json()["data"]
                     )["exitstatus"] == "OK"
    assert pve.leftovers() == []
    calls = [c for c in api.calls if c[1].endswith("/status/start")]
    assert len(calls) == 2
