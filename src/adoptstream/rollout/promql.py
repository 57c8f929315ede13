"""Safe PromQL text: quoted strings, label matchers and anchored regexes for any printable value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (Go escaping)."""
    return '"' + "".join(_STRING_ESCAPES.get(ch, ch) for ch in value) + '"'


def regex_escape(value: str) -> str:
    """``value`` as an RE2 regex matching exactly itself (ASCII punctuation and space escaped)."""
    return "".join("\\" + ch if ch.isascii() and not (ch.isalnum() or ch == "_") else ch for ch in value)


def one_of(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly the given strings (Prometheus anchors it)."""
    return "|".join(regex_escape(v) for v in sorted(set(values)))


def selector(
    metric: str, equal: Mapping[str, str] | None = None, regex: Mapping[str, str] | None = None
) -> str:
    """``metric{a="x",b=~"re"}`` with every value quoted."""
    parts = [f"{k}={quote(v)}" for k, v in (equal or {}).items()]
    parts += [f"{k}=~{quote(v)}" for k, v in (regex or {}).items()]
    return f"{metric}{{{','.join(parts)}}}"


def number(value: float) -> str:
    """A float constant without noise (``0.8``, ``1714521600``)."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
