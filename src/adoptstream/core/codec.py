"""Compact JSON encoding for state and internal records, safe for integers beyond 64 bits."""

from __future__ import annotations

import json
from typing import Any

import orjson

_WIDE = b"J"  # prefix of the rare blobs that hold integers orjson cannot write (e.g. ts before 1677)


def dumps(obj: Any) -> bytes:
    """Encode with orjson; fall back to the standard library for integers beyond 64 bits."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return _WIDE + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """Decode what `dumps` wrote."""
    if data[:1] == _WIDE:
        return json.loads(data[1:])
    return orjson.loads(data)
