"""The stand-in's parameter checks word and order their errors as pve-common JSONSchema.pm."""

from __future__ import annotations

import pytest

from tests.pvestandin.schema import Router, load_paths, schema_dir
from tests.pvestandin.tasks import UPID_RE
from tests.pvestandin.validate import parse_property_string, validate

NET = {"name": {"type": "string"}, "bridge": {"type": "string", "optional": 1},
       "firewall": {"type": "boolean", "optional": 1},
       "tag": {"type": "integer", "minimum": 1, "maximum": 4094, "optional": 1}}
ROOTFS = {"volume": {"type": "string", "default_key": 1},
          "size": {"type": "string", "format": "disk-size", "optional": 1}}


def test_first_failing_check_is_the_one_reported() -> None:
    props = {"vmid": {"type": "integer", "format": "pve-vmid", "minimum": 100}}
    # format before minimum: 99 fails the pve-vmid format, with its trailing newline
    assert validate({"vmid": "99"}, props) == {
        "vmid": "invalid format - value does not look like a valid VM ID\n"}
    assert validate({"vmid": "1e3"}, props) == {"vmid": "type check ('integer') failed - got "
                                                        "'1e3'"}


def test_unknown_missing_and_boolean_parameters() -> None:
    props = {"a": {"type": "boolean"}, "b": {"type": "string", "optional": 1}}
    assert validate({"x": "1", "a": "true"}, props) == {
        "a": "type check ('boolean') failed - got 'true'",
        "x": "property is not defined in schema and the schema does not allow additional "
             "properties"}
    assert validate({}, props) == {"a": "property is missing and it is not optional"}
    assert validate({"a": True}, props) == {}  # JSON booleans pass


def test_perl_patterns_are_anchored_and_translated() -> None:
    props = {"p": {"type": "string", "pattern": "(?^:[a-z]+)"}}
    assert validate({"p": "abc"}, props) == {}
    assert validate({"p": "abc\n"}, props) == {}  # Perl's $ matches before a final newline
    assert validate({"p": "ab1"}, props) == {"p": "value does not match the regex pattern"}


def test_property_strings() -> None:
    assert parse_property_string(NET, "name=eth0,firewall=on,tag=5", "net0") == {
        "name": "eth0", "firewall": "1", "tag": "5"}
    assert parse_property_string(ROOTFS, "local-zfs:8,size=8G", "rootfs") == {
        "volume": "local-zfs:8", "size": "8G"}
    props = {"net0": {"type": "string", "format": NET}, "rootfs": {"type": "string",
                                                                 "format": ROOTFS}}
    errors = validate({"net0": "name=eth0,speed=1", "net1": "tag=5000,firewall=maybe",
                       "rootfs": "a,b"}, {**props, "net1": props["net0"]})
    assert errors == {
        # an unknown key ends the parse at once (parse_property_string's die)
        "net0": "invalid format - invalid key in comma-separated list property: speed\n",
        # the parsed keys are checked together, errors sorted by key
        "net1": "invalid format - format error\nnet1.firewall: type check ('boolean') failed "
                "- got 'maybe'\nnet1.name: property is missing and it is not optional\n"
                "net1.tag: value must have a maximum value of 4094\n",
        "rootfs": "invalid format - duplicate key in comma-separated list property: volume\n"}


@pytest.mark.skipif(schema_dir() is None, reason="PVE API schema files not found")
def test_router_comes_from_the_schema() -> None:
    router = Router(load_paths("9.2"))
    found = router.match("/nodes/pve/lxc/101/snapshot/s1/rollback")
    assert found is not None
    path, params, methods = found
    assert path == "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"
    assert params == {"node": "pve", "vmid": "101", "snapname": "s1"}
    assert set(methods) == {"POST"}
    assert router.match("/nodes/pve/nothing") is None
    create = router.match("/nodes/pve/lxc")[2]["POST"]  # type: ignore[index]
    assert "net31" in create.properties and "net32" not in create.properties
    assert "mp255" in create.properties
    login = router.match("/access/ticket")[2]["POST"]  # type: ignore[index]
    assert login.allowtoken is False


def test_upid_shape() -> None:
    assert UPID_RE.fullmatch("UPID:pve1:0001A2B3:00C0FFEE:6650A1B2:vzcreate:101:shim@pve!x:")
    assert not UPID_RE.fullmatch("UPID:pve1:0001A2B3:00C0FFEE:6650A1B2:vzcreate:101:shim@pve")


@pytest.mark.skipif(schema_dir() is None, reason="PVE API schema files not found")
def test_entrypoint_line_feed_is_refused_by_92_and_let_through_by_91() -> None:
    value = {"entrypoint": "/bin/sleep 60\nlxc.hook.pre-start = /bin/false"}
    for version, errors in (("9.2", {"entrypoint": "value does not match the regex pattern"}),
                            ("9.1", {})):
        create = Router(load_paths(version)).match("/nodes/pve/lxc")[2]["POST"]  # type: ignore[index]
        props = {"entrypoint": create.properties["entrypoint"]}
        assert validate(value, props) == errors, version


def test_requires() -> None:
    props = {"checksum": {"type": "string", "optional": 1, "requires": "checksum-algorithm"},
             "checksum-algorithm": {"type": "string", "optional": 1, "requires": "checksum"}}
    assert validate({"checksum": "abc"}, props) == {
        "checksum-algorithm": "missing property - 'checksum' requires this property"}
    assert validate({"checksum": "abc", "checksum-algorithm": "sha256"}, props) == {}
