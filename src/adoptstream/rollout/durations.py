"""Prometheus-style durations (``90s``, ``15m``, ``1h30m``, ``3d``, ``2w``) as whole seconds."""

from __future__ import annotations

import re

_UNITS: dict[str, int] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``3d`` or ``1h30m``; ValueError when it is not one."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration: use a number with a unit, e.g. 90s, 15m, 6h, 3d, 2w")
    pairs = zip(match.groups(), _UNITS.values(), strict=True)
    return sum(int(value) * unit for value, unit in pairs if value)


def format_duration(seconds: int | float) -> str:
    """The shortest Prometheus duration for whole ``seconds`` (``0s`` for zero)."""
    rest = round(seconds)
    if rest <= 0:
        return "0s"
    parts: list[str] = []
    for suffix, unit in _UNITS.items():
        if suffix == "w" and rest % unit:  # 10d reads better than 1w3d
            continue
        count, rest = divmod(rest, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)


def humanize_duration(seconds: int | float) -> str:
    """A duration for people: ``3 days``, ``90 minutes``, ``45 seconds``."""
    s = round(seconds)
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if s >= unit and s % unit == 0:
            n = s // unit
            return f"{n} {name}{'s' if n != 1 else ''}"
    if s >= 7200:
        return f"{s / 3600:.1f} hours"
    if s >= 120:
        return f"{s // 60} minutes {s % 60} seconds" if s % 60 else f"{s // 60} minutes"
    return f"{s} second{'s' if s != 1 else ''}"
