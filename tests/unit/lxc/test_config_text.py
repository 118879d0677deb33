"""The LXC config text choke point (issue 12): no spec string can add, drop or change a line.

:func:`lxc_read` reads config text the way LXC 5.0.2 does (liblxc parse.c and confile.c
``parse_line``; each rule measured with lxc-execute on this host and re-checked against the real
LXC by tests/integration/test_hostile_specs.py). The property tests put arbitrary strings, with
the characters LXC treats specially, into every spec field that reaches the config text and
assert: either the validator refuses the spec naming the field, or the rendered config reads
back as exactly the lines the translation meant, and each field's value comes back unchanged.
Seeded (``derandomize``): the same examples run every time.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runtime import errdefs, oci
from runtime.lxc import config
from runtime.lxc.resources import CgroupHost

UNIFIED = CgroupHost(version="v2", io_weight="io.weight")


def lxc_read(text: str) -> list[tuple[str, str]]:
    """(key, value) lines as LXC 5.0.2 reads ``text``: the bytes end a line at ``\\r`` or
    ``\\n`` and the file at NUL; blank lines and ``#`` comments are skipped; the key is what
    precedes the first ``=``; both sides lose spaces and tabs, then the value one pair of
    matching quotes. A line without ``=`` is an error in LXC (here: an assertion)."""
    data = text.encode("utf-8").split(b"\0", 1)[0]
    out: list[tuple[str, str]] = []
    for raw in re.split(rb"[\r\n]", data):
        line = raw.decode("utf-8").lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f"LXC would refuse the line {line!r}"
        key, value = line.split("=", 1)
        value = value.strip(" \t")
        if len(value) > 1 and value[0] in "\"'" and value[-1] == value[0]:
            value = value[1:-1]
        out.append((key.rstrip(" \t"), value))
    return out


def fstab_fields(entry: str) -> list[str]:
    """An ``lxc.mount.entry`` value split and decoded the way getmntent(3) does."""
    def decode(field: str) -> str:
        return re.sub(r"\\(040|011|012|134)", lambda m: chr(int(m.group(1), 8)), field)
    return [decode(f) for f in re.split(r"[ \t]+", entry.strip(" \t"))]


def params() -> config.Params:
    return config.Params(name="default-c1", rootfs="/run/b/c1/rootfs",
                         gate="/bin/sh /usr/lib/lxcri/gate.sh /run/s/c1",
                         log_file="/run/s/c1/lxc.log", default_hostname="c1", shim_pid=4242,
                         cgroup=UNIFIED)


#: A valid spec with every string field that reaches the LXC config text.
BASE: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {"args": ["/bin/sh"], "cwd": "/work", "env": ["PATH=/bin", "A=1"],
                "user": {"uid": 0, "gid": 0}, "apparmorProfile": "prof",
                "selinuxLabel": "system_u:system_r:container_t:s0"},
    "root": {"path": "rootfs"},
    "hostname": "web", "domainname": "example.org",
    "mounts": [
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind",
                                                                                  "ro"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1m", "mode=1777"]},
    ],
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                       {"type": "network", "path": "/var/run/netns/n1"}],
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229}],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/bus"],
        "resources": {"unified": {"memory.high": "1000000"}},
    },
}


def _set(path: tuple[Any, ...]) -> Callable[[dict[str, Any], str], None]:
    def apply(spec: dict[str, Any], value: str) -> None:
        node: Any = spec
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return apply


def _rekey(path: tuple[str, ...], old: str) -> Callable[[dict[str, Any], str], None]:
    def apply(spec: dict[str, Any], value: str) -> None:
        node: Any = spec
        for p in path:
            node = node[p]
        node[value] = node.pop(old)
    return apply


#: slot name → (how to put a string there, the field path an error must start with).
SLOTS: dict[str, tuple[Callable[[dict[str, Any], str], None], str]] = {
    "env": (_set(("process", "env", 1)), "process.env[1]"),
    "cwd": (_set(("process", "cwd")), "process.cwd"),
    "apparmor": (_set(("process", "apparmorProfile")), "process.apparmorProfile"),
    "selinux": (_set(("process", "selinuxLabel")), "process.selinuxLabel"),
    "hostname": (_set(("hostname",)), "hostname"),
    "domainname": (_set(("domainname",)), "domainname"),
    "root": (_set(("root", "path")), "root.path"),
    "bind.destination": (_set(("mounts", 0, "destination")), "mounts[0].destination"),
    "bind.source": (_set(("mounts", 0, "source")), "mounts[0].source"),
    "bind.option": (_set(("mounts", 0, "options", 1)), "mounts[0].options"),
    "tmpfs.type": (_set(("mounts", 1, "type")), "mounts[1].type"),
    "tmpfs.source": (_set(("mounts", 1, "source")), "mounts[1].source"),
    "tmpfs.option": (_set(("mounts", 1, "options", 0)), "mounts[1].options"),
    "netns": (_set(("linux", "namespaces", 4, "path")), "linux.namespaces[4].path"),
    "device": (_set(("linux", "devices", 0, "path")), "linux.devices[0].path"),
    "masked": (_set(("linux", "maskedPaths", 0)), "linux.maskedPaths[0]"),
    "readonly": (_set(("linux", "readonlyPaths", 0)), "linux.readonlyPaths[0]"),
    "sysctl.value": (_set(("linux", "sysctl", "net.ipv4.ip_forward")), "linux.sysctl"),
    "sysctl.key": (_rekey(("linux", "sysctl"), "net.ipv4.ip_forward"), "linux.sysctl"),
    "unified.value": (_set(("linux", "resources", "unified", "memory.high")),
                      "linux.resources.unified"),
    "unified.key": (_rekey(("linux", "resources", "unified"), "memory.high"),
                    "linux.resources.unified"),
}

#: Characters with a meaning to LXC, getmntent, the shell or JSON, and look-alikes of line
#: breaks that LXC does not treat as such (\f, \v, U+0085, U+2028: measured).
_SPECIAL = list("\r\n\0 \t\"'#=\\,/.:$`;\f\v\x85\u2028") + ["\ud800", "lxc.hook.pre-start"]
_PIECE = st.one_of(st.sampled_from(_SPECIAL), st.characters(codec=None))
_TEXT = st.lists(_PIECE, max_size=12).map("".join)
#: Without what LXC cannot hold, so that many examples get past the validator to the renderer.
_SAFE = st.lists(st.one_of(
    st.sampled_from([c for c in _SPECIAL if c not in ("\r", "\n", "\0", "\ud800")]),
    st.characters(codec="utf-8", exclude_characters="\r\n\0")), max_size=12).map("".join)
_ANY = st.one_of(_TEXT, _SAFE)
#: Valid-looking prefixes make more examples pass the validator and reach the renderer.
HOSTILE = st.one_of(_ANY, _ANY.map(lambda s: "/" + s), _ANY.map(lambda s: "K=" + s),
                    _ANY.map(lambda s: "memory." + s), _ANY.map(lambda s: "net.ipv4." + s))


def _round_trip(spec: dict[str, Any], lines: list[tuple[str, str]], text: str) -> None:
    """The config reads back as exactly ``lines``, and each field comes back unchanged."""
    assert lxc_read(text) == lines
    got: dict[str, list[str]] = {}
    for key, value in lines:
        got.setdefault(key, []).append(value)
    process = spec["process"]
    assert got["lxc.environment"] == process["env"]
    assert got["lxc.init.cwd"] == [process["cwd"]]
    assert got["lxc.apparmor.profile"] == [process["apparmorProfile"] or "generated"]
    assert got.get("lxc.selinux.context", [""]) == [process["selinuxLabel"]]
    assert got["lxc.uts.name"] == [spec["hostname"] or "c1"]
    netns = spec["linux"]["namespaces"][4]["path"]
    assert got.get("lxc.namespace.share.net", [""]) == [netns]  # "": a new one
    entries = [fstab_fields(e) for e in got["lxc.mount.entry"]]
    for m in spec["mounts"]:
        dest = config.posixpath.normpath(m["destination"]).lstrip("/")
        entry = next(e for e in entries if e[1] == dest)
        assert entry[0] == (m["source"] or m["type"] or "none")
        opts = entry[3].split(",")
        for option in m["options"]:
            if option not in ("rbind", "bind") and "," not in option:
                assert option in opts
        if m["type"] != "bind":
            assert entry[2] == (m["type"] or "none")
    unified = spec["linux"]["resources"]["unified"]
    for key, value in unified.items():
        assert got[f"lxc.cgroup2.{key}"] == [v for v in value.split("\n") if v]
    script = shlex.split(got["lxc.hook.mount"][0])[2]
    words = shlex.split(script)
    for value in spec["linux"]["sysctl"].values():
        assert value in words
    if spec["domainname"]:
        assert spec["domainname"] in words
    # The autodev hook (runtime/lxc/rootpath.py) takes the devices as one JSON word.
    words = shlex.split(got["lxc.hook.autodev"][0])
    devices = json.loads(words[-1])
    assert [d["path"] for d in devices] == [spec["linux"]["devices"][0]["path"]]


@settings(max_examples=500, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(SLOTS)), HOSTILE, min_size=1, max_size=3))
def test_any_string_in_any_field_is_refused_by_name_or_reads_back_unchanged(
        values: dict[str, str]) -> None:
    spec = copy.deepcopy(BASE)
    for slot, value in values.items():
        SLOTS[slot][0](spec, value)
    fields = tuple(SLOTS[slot][1] for slot in values)
    try:
        oci.check_spec(spec)
        config.validate(spec)
    except errdefs.InvalidArgument as exc:
        assert str(exc).startswith(fields), (values, str(exc))
        assert "\r" not in str(exc) and "\n" not in str(exc)
        event("refused by the validator")
        return
    try:
        lines = config.lxc_config(spec, params())
    except (errdefs.InvalidArgument, errdefs.NotImplementedErr) as exc:
        # A valid field the translation refuses on purpose (a host-wide sysctl, …).
        assert str(exc).startswith(fields), (values, str(exc))
        event("refused by the translation")
        return
    event("rendered and read back")
    # Past the validators, the renderer never has to refuse: it is the second line only.
    text = config.render(lines)
    _round_trip(spec, lines, text)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["lxc.environment", "lxc.uts.name",
                                           "lxc.mount.entry", "lxc.cgroup2.memory.max"]),
                          _TEXT), max_size=4))
def test_render_writes_exactly_the_lines_or_refuses(lines: list[tuple[str, str]]) -> None:
    try:
        text = config.render(lines)
    except errdefs.InvalidArgument as exc:
        assert any(not v or any(c in v for c in "\r\n\0") or "\ud800" in v
                   for _, v in lines), str(exc)
        return
    assert lxc_read(text) == lines


@settings(max_examples=200, derandomize=True, deadline=None)
@given(_TEXT)
def test_render_refuses_keys_it_does_not_write(suffix: str) -> None:
    key = "lxc.hook.pre-start" + suffix
    with pytest.raises(errdefs.InvalidArgument, match="not one this runtime writes"):
        config.render([(key, "/bin/true")])


# --- the attacks of issue 12, one by one ---------------------------------------------------

ATTACK = "X=1\rlxc.hook.pre-start = /bin/touch /tmp/marker"


@pytest.mark.parametrize(("slot", "value"), [
    ("env", ATTACK),
    ("hostname", "h\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("domainname", "d\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("cwd", "/\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("apparmor", "p\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("selinux", "s\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("bind.destination", "/d\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("bind.option", "ro\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("tmpfs.type", "tmpfs\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("sysctl.value", "1\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("device", "/dev/x\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("netns", "/var/run/netns/n\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("root", "rootfs\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("masked", "/proc/x\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("unified.key", "memory.max\nlxc.hook.pre-start"),
    ("unified.key", "memory.max\rlxc.hook.pre-start"),
    ("unified.value", "max\rlxc.hook.pre-start = /bin/touch /tmp/m"),
    ("env", "X=1\0"),
])
def test_each_attack_is_refused_by_the_validator_naming_the_field(slot: str,
                                                                  value: str) -> None:
    spec = copy.deepcopy(BASE)
    SLOTS[slot][0](spec, value)
    with pytest.raises(errdefs.InvalidArgument) as info:
        oci.check_spec(spec)
    assert str(info.value).startswith(SLOTS[slot][1]), str(info.value)
    # The translation's own validation catches it too (a caller that skipped check_spec).
    with pytest.raises(errdefs.InvalidArgument):
        config.validate(spec)
        config.render(config.lxc_config(spec, params()))


def test_a_unified_key_is_named_escaped_in_the_error() -> None:
    spec = copy.deepcopy(BASE)
    SLOTS["unified.key"][0](spec, "memory.max\nlxc.hook.pre-start")
    with pytest.raises(errdefs.InvalidArgument) as info:
        oci.check_spec(spec)
    assert str(info.value).startswith(
        'linux.resources.unified["memory.max\\nlxc.hook.pre-start"]: must name a cgroup v2 '
        'controller file'), str(info.value)


@pytest.mark.parametrize("key", ["../memory.max", "memory/../../x", "cgroup.procs",
                                 "cgroup.subtree_control", "devices.allow", "memory", ""])
def test_unified_keys_must_be_controller_files(key: str) -> None:
    spec = copy.deepcopy(BASE)
    SLOTS["unified.key"][0](spec, key)
    with pytest.raises(errdefs.InvalidArgument, match=r"^linux\.resources\.unified\["):
        oci.check_spec(spec)
    with pytest.raises(errdefs.InvalidArgument, match=r"^linux\.resources\.unified\["):
        config.lxc_config(spec, params())


def test_a_multi_line_unified_value_is_written_line_by_line_as_runc_does() -> None:
    spec = copy.deepcopy(BASE)
    spec["linux"]["resources"]["unified"] = {"io.max": "8:0 rbps=1000\n8:16 wbps=2000\n"}
    oci.check_spec(spec)
    lines = config.lxc_config(spec, params())
    assert [v for k, v in lines if k == "lxc.cgroup2.io.max"] == ["8:0 rbps=1000",
                                                                  "8:16 wbps=2000"]


@pytest.mark.parametrize("value", ["", "\n"])
def test_an_empty_unified_value_is_refused(value: str) -> None:
    # LXC reads "lxc.cgroup2.memory.high =" as: forget every earlier memory.high line.
    spec = copy.deepcopy(BASE)
    spec["linux"]["resources"]["unified"] = {"memory.high": value}
    with pytest.raises(errdefs.InvalidArgument, match="must not be empty"):
        oci.check_spec(spec)


def test_render_quotes_what_lxc_would_trim_or_unquote() -> None:
    lines = [("lxc.environment", "A= padded "), ("lxc.environment", '"B=1"'),
             ("lxc.uts.name", "'h'"), ("lxc.environment", "C=\tx")]
    text = config.render(lines)
    assert 'lxc.environment = "A= padded "\n' in text
    assert lxc_read(text) == lines


@pytest.mark.parametrize("value", ["", "a\rb", "a\nb", "a\0b", "\ud800"])
def test_render_refuses_what_lxc_cannot_read_back(value: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="^LXC config: lxc.environment: value"):
        config.render([("lxc.environment", value)])


@pytest.mark.parametrize("cid", ["abc\n", "a\rb", "abc\r"])
def test_a_container_id_with_a_line_break_is_refused(cid: str) -> None:
    from runtime.lxc.backend import lxc_name
    with pytest.raises(errdefs.InvalidArgument, match="id: "):
        lxc_name("default", cid)


@pytest.mark.parametrize(("path", "value", "field"), [
    ("ociVersion", "1.0.2\n", "ociVersion"),
    ("linux.resources.cpu.cpus", "0-3\n", "linux.resources.cpu.cpus"),
    ("linux.resources.cpu.cpus", "\u0663", "linux.resources.cpu.cpus"),
])
def test_patterns_match_the_whole_string(path: str, value: str, field: str) -> None:
    spec = copy.deepcopy(BASE)
    node: Any = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    with pytest.raises(errdefs.InvalidArgument, match="^" + re.escape(field)):
        oci.check_spec(spec)


def test_a_seccomp_syscall_name_with_a_newline_is_refused() -> None:
    spec = copy.deepcopy(BASE)
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read\nkill"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(errdefs.InvalidArgument,
                       match=re.escape("linux.seccomp.syscalls[0].names[0]")):
        oci.check_spec(spec)


def test_a_lone_surrogate_anywhere_is_refused_by_name() -> None:
    spec = copy.deepcopy(BASE)
    spec["process"]["args"] = ["/bin/sh", "\ud800"]
    with pytest.raises(errdefs.InvalidArgument, match=re.escape("process.args[1]: must be "
                                                                "valid Unicode")):
        oci.check_spec(spec)


def test_args_and_annotations_may_hold_line_breaks() -> None:
    # They never reach the config text: argv goes in the init's own file, annotations
    # stay in the runtime's state (Kubernetes puts multi-line JSON in annotations).
    spec = copy.deepcopy(BASE)
    spec["process"]["args"] = ["/bin/sh", "-c", "echo a\r\necho b"]
    spec["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{\n}\n"}
    oci.check_spec(spec)
    config.render(config.lxc_config(spec, params()))


def test_the_seccomp_policy_refuses_a_name_that_would_add_a_policy_line() -> None:
    # Also without the validator: one policy line per syscall name, never more.
    policy = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read\nmount allow"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(errdefs.InvalidArgument,
                       match=re.escape("linux.seccomp.syscalls[0].names[0]")):
        config.seccomp_policy({"linux": {"seccomp": policy}})
