"""Parameter validation the way Proxmox does it (pve-common ``src/PVE/JSONSchema.pm``).

Mirrors, in behaviour and wording, ``check_object``, ``check_prop``, ``check_type``,
``check_format`` and ``parse_property_string``:

* order per parameter: type → format → pattern → maxLength → minLength → minimum/maximum →
  enum; the first failure is the one reported (``check_prop``);
* patterns are Perl regexes matched as ``m/^$pattern$/`` (``check_prop``); Perl's ``(?^:``
  becomes Python's ``(?:`` and ``$`` keeps Perl's "or before a final newline" meaning;
* booleans are only ``0``/``1`` (or JSON true/false) at top level (``check_type``), but
  ``on/yes/true/off/no/false`` too inside property strings (``parse_boolean``);
* a property string is split at ``,`` into ``key=value`` parts, a bare part goes to the
  ``default_key``; its errors nest as ``<param>.<key>`` under ``"invalid format - format
  error\\n"`` (``parse_property_string`` raising ``format error`` with an errors hash, printed
  by pve-common ``src/PVE/Exception.pm`` ``stringify`` as ``key: msg`` lines);
* a named (string) format calls the validator registered under that name; the ones a CT
  lifecycle meets are written out below from their pve-common / pve-storage / pve-container
  sources, each with its ``die`` text. Formats not listed are accepted unchecked.

Values are kept as Perl would see them: form and query values are strings; JSON numbers are
stringified, JSON booleans stay ``bool``; JSON arrays/objects fail the type check with
``got ARRAY``/``got HASH``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

Value = str | bool


class FormatError(Exception):
    """A format validator's ``die``: the text keeps its trailing newline, as Perl's does."""


def _perl_regex(pattern: str) -> re.Pattern[str]:
    # m/^$pattern$/ — Python's $ (without MULTILINE) also matches before one final newline.
    return re.compile("^" + pattern.replace("(?^:", "(?:") + "$")


_regex_cache: dict[str, re.Pattern[str]] = {}


def pattern_matches(pattern: str, value: str) -> bool:
    rx = _regex_cache.get(pattern)
    if rx is None:
        rx = _regex_cache[pattern] = _perl_regex(pattern)
    return rx.search(value) is not None


def is_number(v: str) -> bool:  # JSONSchema.pm is_number
    return re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?\n?", v) is not None


def is_integer(v: str) -> bool:  # JSONSchema.pm is_integer
    return re.fullmatch(r"[+-]?\d+\n?", v) is not None


def split_list(text: str) -> list[str]:
    """pve-common ``PVE::Tools::split_list``: separators are NUL, comma, semicolon, space."""
    return [p for p in re.split(r"[\0,;\s]+", text.strip()) if p]


def parse_boolean(v: str) -> str | None:  # JSONSchema.pm parse_boolean
    if re.fullmatch(r"(1|on|yes|true)", v, re.I):
        return "1"
    if re.fullmatch(r"(0|off|no|false)", v, re.I):
        return "0"
    return None


# -- named formats (string-valued ``format``) ------------------------------------------------

_CONFIGID = re.compile(r"[a-z][a-z0-9_-]+", re.I)        # JSONSchema.pm $CONFIGID_RE
_STORAGE_ID = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.I)  # JSONSchema.pm parse_id
_DNS_LABEL = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_TAG = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.I)      # JSONSchema.pm $PVE_TAG_RE


def _die(msg: str) -> None:
    raise FormatError(msg + "\n")


def _fmt_vmid(v: str) -> None:
    if not re.fullmatch(r"[1-9][0-9]{2,8}\n?", v):
        _die("value does not look like a valid VM ID")


def _fmt_node(v: str) -> None:
    if not re.fullmatch(r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\n?", v):
        _die("value does not look like a valid node name")


def _fmt_configid(v: str) -> None:
    if not _CONFIGID.fullmatch(v):
        _die(f"invalid configuration ID '{v}'")


def _fmt_storage_id(v: str) -> None:
    if not _STORAGE_ID.fullmatch(v):
        _die(f"storage ID '{v}' contains illegal characters")


def _fmt_dns_name(v: str) -> None:
    if not re.fullmatch(rf"({_DNS_LABEL}\.)*{_DNS_LABEL}", v):
        _die("value does not look like a valid DNS name")


def _fmt_mac(v: str) -> None:
    if not re.fullmatch(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", v, re.I):
        _die("value does not look like a valid unicast MAC address")


def _is_ipv4(v: str) -> bool:
    try:
        ipaddress.IPv4Address(v)
        return True
    except ValueError:
        return False


def _is_ipv6(v: str) -> bool:
    try:
        ipaddress.IPv6Address(v)
        return True
    except ValueError:
        return False


def _fmt_ipv4(v: str) -> None:
    if not _is_ipv4(v):
        _die("value does not look like a valid IPv4 address")


def _fmt_ipv6(v: str) -> None:
    if not _is_ipv6(v):
        _die("value does not look like a valid IPv6 address")


def _cidr_ok(v: str, six: bool) -> bool:
    m = re.fullmatch(r"(.+)/(\d+)", v)
    if not m:
        return False
    addr, bits = m.group(1), int(m.group(2))
    # JSONSchema.pm pve_verify_cidrv4/v6: prefix length > 7 and <= 32 / 128.
    return (_is_ipv6(addr) and 7 < bits <= 128) if six else (_is_ipv4(addr) and 7 < bits <= 32)


def _fmt_cidrv4(v: str) -> None:
    if not _cidr_ok(v, False):
        _die("value does not look like a valid IPv4 CIDR network")


def _fmt_cidrv6(v: str) -> None:
    if not _cidr_ok(v, True):
        _die("value does not look like a valid IPv6 CIDR network")


def _fmt_ipv4_config(v: str) -> None:
    if not (v in ("dhcp", "manual") or _cidr_ok(v, False)):
        _die("value does not look like a valid ipv4 network configuration")


def _fmt_ipv6_config(v: str) -> None:
    if not (v in ("auto", "dhcp", "manual") or _cidr_ok(v, True)):
        _die("value does not look like a valid ipv6 network configuration")


def parse_size(v: str) -> int | None:  # JSONSchema.pm parse_size
    m = re.fullmatch(r"(\d+(\.\d+)?)([KMGT])?", v)
    if not m:
        return None
    mult = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(3)]
    return int(float(m.group(1)) * mult)


def _fmt_disk_size(v: str) -> None:
    if parse_size(v) is None:
        _die(f"value does not look like a valid disk size: {v}")


def _fmt_tag(v: str) -> None:
    if not _TAG.fullmatch(v):
        _die("invalid characters in tag")


def _fmt_iface(v: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,20}([:.]\d+)?", v, re.I):
        _die(f"invalid network interface name '{v}'")


def _fmt_volume_id(v: str) -> None:
    # pve-storage src/PVE/Storage.pm parse_volume_id.
    if not re.fullmatch(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", v, re.I | re.S):
        _die(f"unable to parse volume ID '{v}'")


def _fmt_lxc_mp_string(v: str) -> None:
    # pve-container src/PVE/LXC/Config.pm verify_lxc_mp_string.
    if (re.search(r"/\.\.?/", v) or re.match(r"\.\.?/", v) or re.search(r"/\.\.?$", v)
            or re.fullmatch(r"\.\.?", v)):
        _die(f"{v} contains illegal character sequences")


def _fmt_startup(v: str) -> None:
    for part in v.split(","):
        if part.strip() and not re.fullmatch(r"(order=)?\d+|up=\d+|down=\d+", part):
            _die("unable to parse startup options")


def _fmt_poolid(v: str) -> None:
    # pve-access-control PVE/AccessControl.pm verify_poolname.
    if not re.fullmatch(r"[A-Za-z0-9.\-_]+", v):
        _die(f"pool name '{v}' contains invalid characters")


def _fmt_content(v: str) -> None:
    # pve-storage src/PVE/Storage/Plugin.pm verify_content.
    if v not in ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none"):
        _die(f"invalid content type '{v}'")


def _fmt_bridge(v: str) -> None:
    if not re.fullmatch(r"[-_.\w\d]+", v):
        _die(f"invalid bridge ID '{v}'")


FORMATS: dict[str, Callable[[str], None]] = {
    "pve-vmid": _fmt_vmid,
    "pve-node": _fmt_node,
    "pve-configid": _fmt_configid,
    "pve-storage-id": _fmt_storage_id,
    "dns-name": _fmt_dns_name,
    "mac-addr": _fmt_mac,
    "ipv4": _fmt_ipv4,
    "ipv6": _fmt_ipv6,
    "CIDRv4": _fmt_cidrv4,
    "CIDRv6": _fmt_cidrv6,
    "pve-ipv4-config": _fmt_ipv4_config,
    "pve-ipv6-config": _fmt_ipv6_config,
    "disk-size": _fmt_disk_size,
    "pve-tag": _fmt_tag,
    "pve-iface": _fmt_iface,
    "pve-volume-id": _fmt_volume_id,
    "pve-lxc-mp-string": _fmt_lxc_mp_string,
    "pve-startup-order": _fmt_startup,
    "pve-poolid": _fmt_poolid,
    "pve-storage-content": _fmt_content,
    "pve-bridge-id": _fmt_bridge,
}


def check_format(fmt: Any, value: str, path: str) -> None:
    """JSONSchema.pm ``check_format``: a hash is a property string; ``name-list`` checks every
    list element; ``name-opt`` only a non-empty value."""
    if isinstance(fmt, dict):
        parse_property_string(fmt, value, path)
        return
    m = re.fullmatch(r"(.*?)(?:-(list|opt))?", fmt)
    assert m is not None
    name, kind = m.group(1), m.group(2)
    if fmt in FORMATS:  # some names end in -list themselves (pve-tag-list is pve-tag + -list)
        name, kind = fmt, None
    check = FORMATS.get(name)
    if check is None:
        return
    if kind == "list":
        for item in split_list(value):
            check(item)
    elif kind == "opt":
        if value:
            check(value)
    else:
        check(value)


def parse_property_string(fmt: dict[str, Any], data: str, path: str) -> dict[str, Value]:
    res: dict[str, Value] = {}
    default_key: str | None = None
    for part in data.split(","):
        if re.fullmatch(r"\s*", part):
            continue
        m = re.fullmatch(r"([^=]+)=(.+)", part, re.S)
        if m:
            k, v = m.group(1), m.group(2)
            if k in res:
                _die(f"duplicate key in comma-separated list property: {k}")
            schema = fmt.get(k)
            if schema and schema.get("alias"):
                k = schema["alias"]
                schema = fmt.get(k)
            if not schema:
                _die(f"invalid key in comma-separated list property: {k}")
            assert schema is not None
            if schema.get("type") == "boolean":
                v = parse_boolean(v) or v
            res[k] = v
        elif "=" not in part:
            if default_key:
                _die(f"duplicate key in comma-separated list property: {default_key}")
            for key, sub in fmt.items():
                if sub.get("default_key"):
                    default_key = key
                    if key in res:
                        _die(f"duplicate key in comma-separated list property: {key}")
                    res[key] = part
                    break
            if not default_key:
                _die("value without key, but schema does not define a default key")
        else:
            _die("missing key in comma-separated list property")
    errors: dict[str, str] = {}
    check_object(path, fmt, res, False, errors)
    if errors:
        # PVE::Exception stringify: the message, then one "key: msg" line per error.
        raise FormatError("format error\n" + "".join(f"{k}: {errors[k]}\n" for k in sorted(errors)))
    return res


def add_error(errors: dict[str, str], path: str, msg: str) -> None:
    path = path or "_root"
    errors[path] = f"{errors[path]}\\n{msg}" if path in errors else msg


def check_type(path: str, typ: str | None, value: Any, errors: dict[str, str]) -> bool:
    if not typ or typ in ("any", "string") and isinstance(value, str):
        return True
    if isinstance(value, bool):
        if typ == "boolean":
            return True
        add_error(errors, path, f"type check ('{typ}') failed - got JSON::PP::Boolean")
        return False
    if isinstance(value, list | dict):
        if (typ == "array" and isinstance(value, list)
                or typ == "object" and isinstance(value, dict)):
            return True
        add_error(errors, path, f"type check ('{typ}') failed - got "
                  f"{'ARRAY' if isinstance(value, list) else 'HASH'}")
        return False
    if typ in ("array", "object"):
        add_error(errors, path, f"type check ('{typ}') failed")
        return False
    v = str(value)
    if typ == "boolean" and v not in ("0", "1"):
        add_error(errors, path, f"type check ('boolean') failed - got '{v}'")
        return False
    if typ == "integer" and not is_integer(v):
        add_error(errors, path, f"type check ('integer') failed - got '{v}'")
        return False
    if typ == "number" and not is_number(v):
        add_error(errors, path, f"type check ('number') failed - got '{v}'")
        return False
    return True


def _num(v: Any) -> float:
    return float(v)


def check_prop(value: Any, schema: dict[str, Any], path: str, errors: dict[str, str]) -> None:
    if value is None:
        if not schema.get("optional") and not schema.get("alias"):
            add_error(errors, path, "property is missing and it is not optional")
        return
    if not check_type(path, schema.get("type"), value, errors):
        return
    if isinstance(value, bool | list | dict):
        return  # refs skip the scalar checks (check_prop's `if (my $vt = ref($value))`)
    v = str(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, v, path)
        except FormatError as e:
            add_error(errors, path, f"invalid format - {e}")
            return
    pattern = schema.get("pattern")
    if pattern and not pattern_matches(pattern, v):
        add_error(errors, path, "value does not match the regex pattern")
        return
    if schema.get("maxLength") is not None and len(v) > int(schema["maxLength"]):
        add_error(errors, path, f"value may only be {schema['maxLength']} characters long")
        return
    if schema.get("minLength") is not None and len(v) < int(schema["minLength"]):
        add_error(errors, path, f"value must be at least {schema['minLength']} characters long")
        return
    if is_number(v):
        if schema.get("maximum") is not None and _num(v) > _num(schema["maximum"]):
            add_error(errors, path, f"value must have a maximum value of {schema['maximum']}")
            return
        if schema.get("minimum") is not None and _num(v) < _num(schema["minimum"]):
            add_error(errors, path, f"value must have a minimum value of {schema['minimum']}")
            return
    enum = schema.get("enum")
    if enum and v not in [str(e) for e in enum]:
        add_error(errors, path, f"value '{v}' does not have a value in the enumeration '"
                  + ", ".join(str(e) for e in enum) + "'")


def check_object(path: str, schema: dict[str, Any], value: dict[str, Any], additional: bool,
                 errors: dict[str, str]) -> None:
    for k, sub in schema.items():
        check_prop(value.get(k), sub, f"{path}.{k}" if path else k, errors)
    for k in value:
        if k in schema:
            requires = schema[k].get("requires")
            if isinstance(requires, str) and value.get(requires) is None:
                add_error(errors, f"{path}.{requires}" if path else requires,
                          f"missing property - '{f'{path}.{k}' if path else k}' requires this "
                          "property")
            continue
        if not additional:
            add_error(errors, f"{path}.{k}" if path else k,
                      "property is not defined in schema and the schema does not allow "
                      "additional properties")


def validate(params: dict[str, Any], properties: dict[str, Any], additional: bool = False
             ) -> dict[str, str]:
    """All errors of one request's parameters (empty when valid), keyed by parameter."""
    errors: dict[str, str] = {}
    check_object("", properties, params, additional, errors)
    return errors
