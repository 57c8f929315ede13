"""Strict JSON for documents nested deeper than orjson's limit (1024 levels).

orjson refuses such documents although they are valid JSON, and an event may carry a deeply nested
unknown field that the contract says to ignore. `loads_deep` parses them with an explicit stack (no
recursion) and the same strictness: scalars are decoded by orjson itself, one token at a time.
Only the rare messages orjson rejects for depth come here, so speed matters little.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"', re.DOTALL)
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {b"true": True, b"false": False, b"null": None}


class DeepJSONError(ValueError):
    """The document is not strict JSON; the message says where."""


def loads_deep(data: bytes) -> Any:
    """Parse one strict JSON document of any nesting depth."""
    pos = _WS.match(data, 0).end()  # type: ignore[union-attr]
    # Each frame is a container being filled: [container, pending object key or None].
    stack: list[list[Any]] = []
    while True:
        value, pos, opened = _value(data, pos)
        if opened is not None:
            stack.append([opened, None])
            pos = _WS.match(data, pos).end()  # type: ignore[union-attr]
            close = b"]" if type(opened) is list else b"}"
            if data[pos : pos + 1] == close:  # empty container
                pos += 1
                value = stack.pop()[0]
            else:
                if close == b"}":
                    pos = _key(data, pos, stack[-1])
                continue
        # `value` is complete: put it into its parent, closing containers as they end.
        while True:
            if not stack:
                end = _WS.match(data, pos).end()  # type: ignore[union-attr]
                if end != len(data):
                    raise DeepJSONError(f"trailing data at char {end}")
                return value
            frame = stack[-1]
            container = frame[0]
            if type(container) is list:
                container.append(value)
            else:
                container[frame[1]] = value
            pos = _WS.match(data, pos).end()  # type: ignore[union-attr]
            sep = data[pos : pos + 1]
            close = b"]" if type(container) is list else b"}"
            if sep == b",":
                pos = _WS.match(data, pos + 1).end()  # type: ignore[union-attr]
                if close == b"}":
                    pos = _key(data, pos, frame)
                break
            if sep != close:
                raise DeepJSONError(f"expected ',' or {close.decode()!r} at char {pos}")
            pos += 1
            value = stack.pop()[0]


def _value(data: bytes, pos: int) -> tuple[Any, int, list[Any] | dict[str, Any] | None]:
    """One value at `pos`: (scalar, end, None) or (None, after the bracket, new empty container)."""
    char = data[pos : pos + 1]
    if char == b"[":
        return None, pos + 1, []
    if char == b"{":
        return None, pos + 1, {}
    if char == b'"':
        match = _STRING.match(data, pos)
    elif char in _LITERAL_STARTS:
        word = data[pos : pos + 5] if char == b"f" else data[pos : pos + 4]
        if word in _LITERALS:
            return _LITERALS[word], pos + len(word), None
        match = None
    else:
        match = _NUMBER.match(data, pos)
    if match is None:
        raise DeepJSONError(f"no JSON value at char {pos}")
    try:
        return orjson.loads(match.group()), match.end(), None
    except orjson.JSONDecodeError as exc:
        raise DeepJSONError(f"bad token at char {pos}: {exc}") from None


_LITERAL_STARTS = (b"t", b"f", b"n")


def _key(data: bytes, pos: int, frame: list[Any]) -> int:
    """Read `"key" :` into the frame; return the position of the value."""
    match = _STRING.match(data, pos) if data[pos : pos + 1] == b'"' else None
    if match is None:
        raise DeepJSONError(f"expected an object key at char {pos}")
    try:
        frame[1] = orjson.loads(match.group())
    except orjson.JSONDecodeError as exc:
        raise DeepJSONError(f"bad object key at char {pos}: {exc}") from None
    pos = _WS.match(data, match.end()).end()  # type: ignore[union-attr]
    if data[pos : pos + 1] != b":":
        raise DeepJSONError(f"expected ':' at char {pos}")
    return _WS.match(data, pos + 1).end()  # type: ignore[union-attr]
