"""`loads_deep` accepts and rejects exactly what orjson does, at any depth."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adoptstream.core.deepjson import DeepJSONError, loads_deep

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def _orjson(data: bytes) -> tuple[bool, object]:
    try:
        return True, orjson.loads(data)
    except orjson.JSONDecodeError:
        return False, None


def _deep(data: bytes) -> tuple[bool, object]:
    try:
        return True, loads_deep(data)
    except DeepJSONError:
        return False, None


@settings(max_examples=300)
@given(_json, st.sampled_from(["", " ", "\n\t ", "\r"]))
def test_valid_documents_parse_like_orjson(value: object, ws: str) -> None:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    data = (ws + text.replace(",", ws + "," + ws).replace(":", ws + ":" + ws) + ws).encode()
    assert _deep(data) == _orjson(data)


@settings(max_examples=500)
@given(_json, st.integers(0, 10_000), st.binary(min_size=1, max_size=3), st.booleans())
def test_mutated_documents_are_judged_like_orjson(
    value: object, where: int, junk: bytes, replace: bool
) -> None:
    data = json.dumps(value, ensure_ascii=False).encode()
    i = where % (len(data) + 1)
    mutated = data[:i] + junk + data[i + (len(junk) if replace else 0) :]
    assert _deep(mutated) == _orjson(mutated)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"[1,]",
        b"{,}",
        b'{"a"}',
        b'{"a":}',
        b'{"a" 1}',
        b"[1 2]",
        b"01",
        b"1.",
        b".5",
        b"+1",
        b"1e400",
        b'"\\ud800"',
        b'"\\x41"',
        b'"a\tb"',
        b"\xef\xbb\xbf{}",
        b'"\xff"',
        b"[] []",
        b"\x0c[]",
        b"tru",
        b"nulll",
    ],
)
def test_rejects_what_orjson_rejects(text: bytes) -> None:
    assert _orjson(text)[0] is False
    with pytest.raises(DeepJSONError):
        loads_deep(text)


def test_depth_beyond_orjson() -> None:
    data = b'{"a":' * 5000 + b"[1,2.5,true,null]" + b"}" * 5000
    with pytest.raises(orjson.JSONDecodeError, match="depth"):
        orjson.loads(data)
    value = loads_deep(data)
    for _ in range(5000):
        value = value["a"]
    assert value == [1, 2.5, True, None]
