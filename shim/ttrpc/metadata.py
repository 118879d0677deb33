"""Request metadata helpers (shim-protocol.md §1.7).

On the wire metadata is a repeated ``KeyValue{key, value}``; a key may repeat. Go lower-cases
keys, so we do too, both when sending and when exposing received metadata. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["MetadataInput", "metadata_pairs", "metadata_to_dict"]

MetadataInput = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]
"""What callers may pass: ``{"key": "v"}``, ``{"key": ["v1", "v2"]}`` or ``[("key", "v")]``."""


def metadata_pairs(metadata: MetadataInput | None) -> tuple[tuple[str, str], ...]:
    """Flatten ``metadata`` to wire order ``(key, value)`` pairs with lower-cased keys."""
    if metadata is None:
        return ()
    if isinstance(metadata, Mapping):
        return tuple(_mapping_pairs(metadata))
    return tuple((key.lower(), value) for key, value in metadata)


def _mapping_pairs(metadata: Mapping[str, str | Sequence[str]]) -> Iterable[tuple[str, str]]:
    for key, values in metadata.items():
        if isinstance(values, str):
            values = (values,)
        for value in values:
            yield key.lower(), value


def metadata_to_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group pairs into ``{lower-cased key: [values in wire order]}``."""
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key.lower(), []).append(value)
    return out
