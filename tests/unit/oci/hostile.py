"""A seeded corpus of malformed bundles (issue 12): valid specs with one or two nodes replaced by
a wrong type, a hostile string (line breaks LXC reads, NUL, lone surrogates, ``..``, huge or
empty), a junk map key, or deleted. The same seed gives the same corpus on every run, so a
failure names a case that can be replayed (``case(seed, i)``)."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from typing import Any

from tests.unit.lxc.specs import CTR_DEFAULT, EVERYTHING, POD_MEMBER

SEED = 20261206
BASES: tuple[dict[str, Any], ...] = (CTR_DEFAULT, EVERYTHING, POD_MEMBER)
HOOK = "lxc.hook.pre-start = /bin/touch /tmp/lxcri-fuzz-marker"

STRINGS = (
    f"X=1\r{HOOK}", f"X=1\n{HOOK}", f"/a\r{HOOK}", "a\0b", "\ud800", "\r", "\n", "\0", "",
    " ", "/", "/a/../../etc", "../x", "#comment", "memory.max\nlxc.hook.pre-start",
    "cgroup.procs", "../../memory.max", "a" * 5000, "\u2028", "\x85", "\f", '"quoted"',
    "'q'", " padded ", "x\\012y", "$(touch /tmp/lxcri-fuzz-marker)", "`id`", "K=v",
)
OTHERS: tuple[Any, ...] = (None, 0, -1, 2**70, -(2**70), 1.5, True, [], {}, [None], {"": ""},
                           [f"X=1\r{HOOK}"], {"\r": "x"})
JUNK_KEYS = ("\r", "memory.max\nx", "cgroup.procs", "", "a\0b", "\ud800", "../x", "x" * 300)


@dataclass(frozen=True)
class Case:
    index: int
    spec: dict[str, Any]
    #: Field paths of the nodes mutated, e.g. ("process.env[0]", "linux.sysctl").
    fields: tuple[str, ...]

    def json(self) -> str:
        # ensure_ascii keeps lone surrogates writable (as \ud800 escapes, which JSON allows).
        return json.dumps(self.spec)


def field_path(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _nodes(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _nodes(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _nodes(value, (*path, i))
    return out


def _mutate(spec: dict[str, Any], path: tuple[Any, ...], rng: random.Random) -> None:
    parent: Any = spec
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    roll = rng.random()
    if roll < 0.1 and isinstance(parent, dict):
        del parent[last]
    elif roll < 0.2 and isinstance(parent[last], dict):
        parent[last][rng.choice(JUNK_KEYS)] = rng.choice(STRINGS)
    elif roll < 0.75:
        value = rng.choice(STRINGS)
        current = parent[last]
        # Often keep a valid-looking shape so the string gets past the type checks.
        if isinstance(current, str) and current and rng.random() < 0.5:
            value = current + value if rng.random() < 0.5 else value + current
        parent[last] = value
    else:
        parent[last] = copy.deepcopy(rng.choice(OTHERS))


def case(seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}-{index}")
    spec = copy.deepcopy(rng.choice(BASES))
    spec.setdefault("root", {})["path"] = "rootfs"
    paths = []
    for _ in range(rng.choice((1, 1, 2))):
        nodes = _nodes(spec)
        if not nodes:
            break
        path = rng.choice(nodes)
        _mutate(spec, path, rng)
        paths.append(path)
    return Case(index, spec, tuple(field_path(p) for p in paths))


def corpus(n: int, seed: int = SEED) -> list[Case]:
    return [case(seed, i) for i in range(n)]


def top(field: str) -> str:
    """The first component of a field path ("process" of "process.env[0]")."""
    for i, c in enumerate(field):
        if c in ".[ :":
            return field[:i]
    return field
