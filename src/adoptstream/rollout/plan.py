"""Rollout plans as code: the model and its YAML loader, whose errors name file, line and field.

A plan file holds ``rollouts`` (and optionally ``defaults`` and ``owners``); docs/rollouts.md describes
the format for product owners. Every value a rule needs is resolved here (defaults applied, dates turned
into Unix seconds), so the renderers only format.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from adoptstream.rollout.durations import parse_duration

STRATEGIES = ("big-bang", "phased", "pilot", "parallel")
CURVES = ("linear", "s-curve", "step")
ACTIVE_WINDOWS = ("1d", "7d", "30d")
FEEDBACK_PERIODS = ("30d", "90d")  # CONTRACT section 3.3, adoptstream_feedback_users
ALL_COHORTS = "(all)"

FEATURE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,127}$")  # CONTRACT section 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")


@dataclass(frozen=True)
class Stall:
    """When a wave counts as stalled: less than ``min_progress`` gained over ``window_s``."""

    window_s: int = 3 * 86400
    min_progress: float = 0.01
    min_exposed: int = 50
    for_s: int | None = None  # None: window/10, at most one hour

    @property
    def hold_s(self) -> int:
        """The alert's ``for:``: how long the condition must hold before it fires."""
        if self.for_s is not None:
            return self.for_s
        return min(3600, self.window_s // 10)


@dataclass(frozen=True)
class BehindPlan:
    """How far under the plan's curve adoption may be, and for how long, before it alerts."""

    tolerance: float = 0.10
    for_s: int | None = None  # None: 1/20 of the duration or the stall window if longer, at most 2h

    def hold_s(self, duration_s: int, window_s: int) -> int:
        """The alert's ``for:`` for a wave lasting ``duration_s`` with stall window ``window_s``."""
        if self.for_s is not None:
            return self.for_s
        return min(7200, max(duration_s // 20, window_s))


@dataclass(frozen=True)
class Satisfaction:
    """The rolled-out feature's satisfaction floor: per feature, since survey answers carry no cohort."""

    nps: float | None = None  # NPS points, -100..100
    csat: float | None = None  # the share of CSAT answers 4-5, 0..1
    min_answers: int = 30  # judged from this many answers on the scale in the period
    period: str = "30d"
    for_s: int = 3600
    line: int = 0

    @property
    def floors(self) -> tuple[tuple[str, float], ...]:
        """``(scale, floor)`` for each scale the plan sets a floor on."""
        return tuple((scale, v) for scale, v in (("nps", self.nps), ("csat", self.csat)) if v is not None)


@dataclass(frozen=True)
class Wave:
    """A set of cohorts with a start, a target adoption ratio and a deadline to reach it."""

    name: str
    cohorts: tuple[str, ...]  # empty: every cohort of the feature
    start: float  # Unix seconds
    deadline: float
    target: float
    curve: str
    stall: Stall
    behind_plan: BehindPlan
    line: int = 0

    @property
    def duration_s(self) -> int:
        """Seconds from start to deadline."""
        return int(self.deadline - self.start)

    @property
    def cohorts_label(self) -> str:
        """The cohorts as one label value (``(all)`` when the wave has every cohort)."""
        return ",".join(self.cohorts) if self.cohorts else ALL_COHORTS


@dataclass(frozen=True)
class Switchover:
    """A parallel rollout's goal: the new feature's share of active users over the old one's."""

    old_feature: str
    window: str
    start: float
    deadline: float
    target: float
    curve: str
    stall: Stall
    behind_plan: BehindPlan
    line: int = 0

    @property
    def duration_s(self) -> int:
        """Seconds from start to deadline."""
        return int(self.deadline - self.start)


@dataclass(frozen=True)
class Rollout:
    """One feature's rollout: who owns it, how it goes out, and what it must reach."""

    name: str
    feature: str
    owner: str
    team: str  # the rollout's team, else its owner's (owners: <name>: team), else the owner name
    strategy: str
    waves: tuple[Wave, ...]
    switchover: Switchover | None = None
    satisfaction: Satisfaction | None = None
    description: str = ""
    source: str = ""  # "file:line" of the rollout, for messages

    @property
    def old_feature(self) -> str | None:
        """The feature being replaced (parallel rollouts only)."""
        return self.switchover.old_feature if self.switchover else None


@dataclass(frozen=True)
class Owner:
    """Who receives a rollout's alerts, and where (``webhook_url``; None: a documented placeholder)."""

    name: str
    team: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True)
class PlanSet:
    """All rollouts of one or more plan files, validated together."""

    rollouts: tuple[Rollout, ...]
    owners: dict[str, Owner] = field(default_factory=dict)

    def owner_names(self) -> list[str]:
        """Every owner with a rollout or an ``owners`` entry, sorted."""
        return sorted({r.owner for r in self.rollouts} | set(self.owners))


class PlanError(ValueError):
    """Problems in plan files, one ``file:line: field: message`` per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------------------------------------- loader

T = TypeVar("T")


class _Invalid(Exception):
    """One field is wrong; already recorded, parsing goes on with the next field."""


class _Ctx:
    """Collects problems with their places while one or more files are read."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, file: str, node: Node | None, path: str, message: str) -> _Invalid:
        line = node.start_mark.line + 1 if node is not None else 1
        where = f"{path}: " if path else ""
        self.problems.append(f"{file}:{line}: {where}{message}")
        return _Invalid(message)


_CONSTRUCTOR = SafeConstructor()


class _Y:
    """A YAML node with its file and field path, with typed accessors that report precise errors."""

    def __init__(self, ctx: _Ctx, file: str, node: Node, path: str) -> None:
        self.ctx, self.file, self.node, self.path = ctx, file, node, path

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def fail(self, message: str) -> _Invalid:
        return self.ctx.fail(self.file, self.node, self.path, message)

    def _child(self, node: Node, name: str | int) -> _Y:
        if isinstance(name, int):
            path = f"{self.path}[{name}]"
        else:
            path = f"{self.path}.{name}" if self.path else name
        return _Y(self.ctx, self.file, node, path)

    def scalar(self) -> Any:
        if not isinstance(self.node, ScalarNode):
            kind = "a list" if isinstance(self.node, SequenceNode) else "a mapping"
            raise self.fail(f"expected a single value, got {kind}")
        try:
            return _CONSTRUCTOR.construct_object(self.node, deep=True)
        except (ConstructorError, ValueError) as exc:
            raise self.fail(f"unreadable value {self.node.value!r}: {exc}") from None

    def mapping(self, allowed: Iterable[str]) -> dict[str, _Y]:
        if not isinstance(self.node, MappingNode):
            raise self.fail(f"expected a mapping (key: value lines), got {self._kind()}")
        allowed = allowed if isinstance(allowed, list) else list(allowed)
        out: dict[str, _Y] = {}
        for key_node, value_node in self.node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.ctx.fail(self.file, key_node, self.path, "keys must be plain names")
                continue
            child = self._child(value_node, key)
            if key in out:
                self.ctx.fail(self.file, key_node, child.path, f"duplicate key {key!r}")
                continue
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                did = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.ctx.fail(
                    self.file,
                    key_node,
                    child.path,
                    f"unknown field {key!r}{did}; allowed here: {', '.join(allowed)}",
                )
                continue
            out[key] = child
        return out

    def items(self) -> list[_Y]:
        if not isinstance(self.node, SequenceNode):
            raise self.fail(f"expected a list (lines starting with '- '), got {self._kind()}")
        return [self._child(node, i) for i, node in enumerate(self.node.value)]

    def _kind(self) -> str:
        if isinstance(self.node, ScalarNode):
            return f"the value {self.node.value!r}"
        return "a list" if isinstance(self.node, SequenceNode) else "a mapping"

    # typed values -----------------------------------------------------------------------------------

    def string(self, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        value = self.scalar()
        if value is None or isinstance(value, (list, dict)):
            raise self.fail("expected a text value")
        if not isinstance(value, str):
            value = self.node.value  # e.g. a numeric-looking name: keep it as written
        if not value:
            raise self.fail("must not be empty")
        if pattern is not None and not pattern.match(value):
            raise self.fail(f"{value!r} is not a valid {what or 'name'} (must match {pattern.pattern})")
        return value

    def number(self, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"expected a number, got {self.node.value!r}")
        value = float(value)
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high or value != value:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            raise self.fail(f"{value:g} is out of range: must be in {lo}{low:g}, {high:g}{hi}")
        return value

    def ratio(self) -> float:
        """A ratio 0..1, also written as a percentage string such as ``80%``."""
        if isinstance(self.node, ScalarNode) and self.node.value.strip().endswith("%"):
            try:
                value = float(self.node.value.strip()[:-1]) / 100.0
            except ValueError:
                raise self.fail(f"expected a ratio such as 0.8 or 80%, got {self.node.value!r}") from None
            if not 0.0 <= value <= 1.0:
                raise self.fail(f"{self.node.value} is out of range: must be within 0%..100%")
            return value
        return self.number(0.0, 1.0)

    def integer(self, low: int) -> int:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"expected a whole number, got {self.node.value!r}")
        if value < low:
            raise self.fail(f"{value} is too small: must be at least {low}")
        return value

    def duration(self, *, allow_zero: bool = False) -> int:
        value = self.scalar()
        if isinstance(value, bool) or not isinstance(value, str):
            raise self.fail(f"expected a duration with a unit such as 90s, 15m, 6h, 3d or 2w, got {value!r}")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        if seconds <= 0 and not allow_zero:
            raise self.fail("must be longer than 0s")
        return seconds

    def timestamp(self) -> float:
        """A date (midnight UTC) or a date-time with a UTC offset, as Unix seconds."""
        value = self.scalar()
        if isinstance(value, str):
            text = value.strip()
            try:
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise self.fail(
                    f"{text!r} is not a date: use 2025-03-03 or 2025-03-03T09:00:00Z (with a UTC offset)"
                ) from None
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise self.fail(
                    f"{self.node.value!r} has no UTC offset: write it as e.g. {self.node.value}Z or +01:00"
                )
            return value.timestamp()
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
        raise self.fail(f"expected a date such as 2025-03-03 or 2025-03-03T09:00:00Z, got {value!r}")

    def string_list(self, pattern: Callable[[str], str | None]) -> list[str]:
        """A list of strings (a single string counts as a list of one), each checked by ``pattern``."""
        nodes = [self] if isinstance(self.node, ScalarNode) else self.items()
        out: list[str] = []
        for item in nodes:
            value = item.scalar()
            if not isinstance(value, str):
                value = item.node.value if isinstance(item.node, ScalarNode) else None
            if not isinstance(value, str) or value == "":
                self.ctx.fail(self.file, item.node, item.path, "expected a non-empty text value")
                continue
            problem = pattern(value)
            if problem:
                self.ctx.fail(self.file, item.node, item.path, problem)
                continue
            out.append(value)
        return out


def _cohort_problem(value: str) -> str | None:
    if len(value) > 64:
        return f"cohort {value[:20]!r}... is {len(value)} characters long: at most 64"
    if not value.isprintable():
        return f"cohort {value!r} holds non-printable characters"
    return None


def _opt(ctx_fields: dict[str, _Y], key: str, read: Callable[[_Y], T], default: T) -> T:
    node = ctx_fields.get(key)
    return read(node) if node is not None else default


@dataclass
class _Layer:
    """Settings that waves inherit: built-in defaults <- file ``defaults`` <- rollout <- wave."""

    target: float = 0.8
    duration_s: int | None = 30 * 86400
    deadline: float | None = None
    start: float | None = None
    curve: str = "linear"
    stall: Stall = field(default_factory=Stall)
    behind_plan: BehindPlan = field(default_factory=BehindPlan)
    broken: bool = False  # a field was wrong (already reported): do not report consequences


_LAYER_KEYS = ("target", "duration", "deadline", "start", "curve", "stall", "behind_plan")
_STALL_KEYS = ("window", "min_progress", "min_exposed", "for")
_BEHIND_KEYS = ("tolerance", "for")


def _stall(y: _Y, base: Stall) -> Stall:
    f = y.mapping(_STALL_KEYS)
    values: dict[str, Any] = {}
    for key, read in (
        ("window_s", lambda n: n.duration()),
        ("min_progress", lambda n: n.ratio()),
        ("min_exposed", lambda n: n.integer(1)),
        ("for_s", lambda n: n.duration(allow_zero=True)),
    ):
        yaml_key = {"window_s": "window", "for_s": "for"}.get(key, key)
        if yaml_key in f:
            with contextlib.suppress(_Invalid):
                values[key] = read(f[yaml_key])
    return Stall(
        window_s=values.get("window_s", base.window_s),
        min_progress=values.get("min_progress", base.min_progress),
        min_exposed=values.get("min_exposed", base.min_exposed),
        for_s=values.get("for_s", base.for_s),
    )


def _behind(y: _Y, base: BehindPlan) -> BehindPlan:
    f = y.mapping(_BEHIND_KEYS)
    tolerance, for_s = base.tolerance, base.for_s
    try:
        if "tolerance" in f:
            tolerance = f["tolerance"].ratio()
            if tolerance >= 1.0:
                raise f["tolerance"].fail("must be below 100%")
    except _Invalid:
        pass
    try:
        if "for" in f:
            for_s = f["for"].duration(allow_zero=True)
    except _Invalid:
        pass
    return BehindPlan(tolerance=tolerance, for_s=for_s)


def _layer(f: dict[str, _Y], base: _Layer) -> _Layer:
    """``base`` overridden by the inheritable fields present in ``f``."""
    out = _Layer(**vars(base))
    readers: dict[str, Callable[[_Y], None]] = {
        "target": lambda n: setattr(out, "target", n.ratio()),
        "duration": lambda n: (setattr(out, "duration_s", n.duration()), setattr(out, "deadline", None)),
        "deadline": lambda n: (setattr(out, "deadline", n.timestamp()), setattr(out, "duration_s", None)),
        "start": lambda n: setattr(out, "start", n.timestamp()),
        "curve": lambda n: setattr(out, "curve", _choice(n, CURVES)),
        "stall": lambda n: setattr(out, "stall", _stall(n, base.stall)),
        "behind_plan": lambda n: setattr(out, "behind_plan", _behind(n, base.behind_plan)),
    }
    if "duration" in f and "deadline" in f:
        raise f["deadline"].fail("give either deadline or duration, not both")
    for key, read in readers.items():
        if key in f:
            try:
                read(f[key])
            except _Invalid:
                out.broken = True
    return out


def _choice(y: _Y, choices: Sequence[str]) -> str:
    value = y.string()
    if value not in choices:
        hint = difflib.get_close_matches(value, list(choices), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise y.fail(f"{value!r} is not one of {', '.join(choices)}{did}")
    return value


def _deadline(y: _Y, layer: _Layer, start: float) -> float:
    if layer.deadline is not None:
        if layer.deadline <= start:
            raise y.fail("the deadline must come after the start")
        return layer.deadline
    return start + (layer.duration_s or 30 * 86400)


_WAVE_KEYS = ("name", "cohorts", *_LAYER_KEYS)
_SWITCHOVER_KEYS = ("window", *_LAYER_KEYS)
_ROLLOUT_KEYS = (
    "name",
    "feature",
    "owner",
    "team",
    "strategy",
    "description",
    "cohorts",
    "waves",
    "old_feature",
    "switchover",
    "satisfaction",
    *_LAYER_KEYS,
)
_SATISFACTION_KEYS = ("nps", "csat", "min_answers", "period", "for")


def _wave(y: _Y, layer: _Layer, default_name: str) -> Wave | None:
    try:
        f = y.mapping(_WAVE_KEYS)
    except _Invalid:
        return None
    errors_before = len(y.ctx.problems)
    name = default_name
    cohorts: list[str] = []
    try:
        if "name" in f:
            name = f["name"].string()
            if len(name) > 64 or not name.isprintable():
                raise f["name"].fail("a wave name is 1-64 printable characters")
        if "cohorts" in f:
            cohorts = f["cohorts"].string_list(_cohort_problem)
        mine = _layer(f, layer)
    except _Invalid:
        return None
    if len(y.ctx.problems) > errors_before:
        return None
    return _make_wave(y, f, mine, name, cohorts)


def _make_wave(y: _Y, f: dict[str, _Y], layer: _Layer, name: str, cohorts: list[str]) -> Wave | None:
    if layer.broken:
        return None
    if layer.start is None:
        y.fail("missing field 'start': when the wave begins (e.g. start: 2025-03-03T09:00:00Z)")
        return None
    try:
        deadline = _deadline(f.get("deadline", y), layer, layer.start)
    except _Invalid:
        return None
    return Wave(
        name=name,
        cohorts=tuple(cohorts),
        start=layer.start,
        deadline=deadline,
        target=layer.target,
        curve=layer.curve,
        stall=layer.stall,
        behind_plan=layer.behind_plan,
        line=y.line,
    )


def _rollout(y: _Y, defaults: _Layer) -> Rollout | None:
    f = y.mapping(_ROLLOUT_KEYS)
    errors_before = len(y.ctx.problems)

    def required(key: str, read: Callable[[_Y], T], hint: str) -> T | None:
        if key not in f:
            y.fail(f"missing field {key!r}: {hint}")
            return None
        try:
            return read(f[key])
        except _Invalid:
            return None

    feature = required("feature", lambda n: n.string(FEATURE_RE, "feature"), "the feature name in the events")
    owner = required("owner", lambda n: n.string(OWNER_RE, "owner"), "who receives this rollout's alerts")
    strategy = required("strategy", lambda n: _choice(n, STRATEGIES), f"one of {', '.join(STRATEGIES)}")
    try:
        name = f["name"].string(NAME_RE, "rollout name") if "name" in f else feature
        team = f["team"].string(OWNER_RE, "team") if "team" in f else None
        description = f["description"].string() if "description" in f else ""
        layer = _layer(f, defaults)
    except _Invalid:
        return None
    if feature is None or owner is None or strategy is None or name is None:
        return None

    waves: list[Wave] = []
    wave_nodes = f["waves"].items() if "waves" in f else []
    if strategy == "big-bang" and "waves" not in f:
        cohorts = f["cohorts"].string_list(_cohort_problem) if "cohorts" in f else []
        wave = _make_wave(y, f, layer, "all", cohorts)
        waves = [wave] if wave else []
    else:
        if "cohorts" in f:
            f["cohorts"].fail(f"'cohorts' belongs to each wave of a {strategy} rollout, not to the rollout")
        for i, node in enumerate(wave_nodes):
            wave = _wave(node, layer, f"wave-{i + 1}")
            if wave is not None:
                waves.append(wave)
    _check_strategy(y, f, strategy, wave_nodes, waves)

    switchover: Switchover | None = None
    if strategy == "parallel":
        switchover = _switchover(y, f, layer, feature, waves)
    else:
        for key in ("old_feature", "switchover"):
            if key in f:
                f[key].fail(f"{key!r} is only for parallel rollouts (this one is {strategy})")

    satisfaction = _satisfaction(f["satisfaction"]) if "satisfaction" in f else None

    if len(y.ctx.problems) > errors_before:
        return None
    return Rollout(
        name=name,
        feature=feature,
        owner=owner,
        team=team or "",
        strategy=strategy,
        waves=tuple(waves),
        switchover=switchover,
        satisfaction=satisfaction,
        description=description,
        source=y.where(),
    )


def _check_strategy(y: _Y, f: dict[str, _Y], strategy: str, nodes: list[_Y], waves: list[Wave]) -> None:
    where = f.get("waves", y)
    if strategy == "big-bang" and "waves" in f and len(nodes) != 1:
        where.fail(f"a big-bang rollout has exactly one wave (all cohorts at once), found {len(nodes)}")
    if strategy == "phased" and not nodes:
        where.fail("a phased rollout needs 'waves': a list of waves, each with its cohorts and start")
    if strategy == "pilot" and len(nodes) < 2:
        where.fail("a pilot rollout needs at least two waves: the pilot (one cohort) first, then the rest")
    if strategy in ("phased", "pilot"):
        for node, wave in zip(nodes, waves, strict=False):
            if not wave.cohorts:
                node.fail(f"each wave of a {strategy} rollout lists its 'cohorts'")
    names: dict[str, int] = {}
    owners_of: dict[str, str] = {}
    for node, wave in zip(nodes, waves, strict=False):
        if wave.name in names:
            node.fail(f"wave name {wave.name!r} is used twice in this rollout (also line {names[wave.name]})")
        names[wave.name] = wave.line
        for cohort in wave.cohorts:
            if cohort in owners_of:
                node.fail(f"cohort {cohort!r} is already in wave {owners_of[cohort]!r}: one wave per cohort")
            owners_of[cohort] = wave.name
    if strategy == "pilot" and len(waves) >= 2 and len(waves) == len(nodes):
        pilot = waves[0]
        if len(pilot.cohorts) != 1:
            nodes[0].fail(f"the pilot wave has exactly one cohort, found {len(pilot.cohorts)}")
        for node, wave in zip(nodes[1:], waves[1:], strict=False):
            if wave.start < pilot.deadline:
                node.fail(
                    f"wave {wave.name!r} starts before the pilot's deadline "
                    f"({_iso(pilot.deadline)}): the rest follows only once the pilot has succeeded"
                )


def _switchover(y: _Y, f: dict[str, _Y], layer: _Layer, feature: str, waves: list[Wave]) -> Switchover | None:
    if "old_feature" not in f:
        y.fail("missing field 'old_feature': the feature the new one replaces (parallel rollouts)")
        return None
    try:
        old = f["old_feature"].string(FEATURE_RE, "feature")
        if old == feature:
            raise f["old_feature"].fail("old_feature must differ from feature")
        base = _Layer(**vars(layer))
        base.target = 0.95  # retire the old feature once 95 % of active users are on the new one
        if base.start is None and waves:
            base.start = min(w.start for w in waves)
        window = "7d"
        node = f.get("switchover")
        if node is not None:
            sf = node.mapping(_SWITCHOVER_KEYS)
            if "target" not in sf and "target" in f:
                base.target = layer.target
            mine = _layer(sf, base)
            if "window" in sf:
                window = _choice(sf["window"], ACTIVE_WINDOWS)
        else:
            mine = base
            if "target" in f:
                mine.target = layer.target
        if mine.start is None:
            raise (node or y).fail("missing 'start' for the switchover: give switchover.start or start")
        deadline = _deadline(node or y, mine, mine.start)
    except _Invalid:
        return None
    return Switchover(
        old_feature=old,
        window=window,
        start=mine.start,
        deadline=deadline,
        target=mine.target,
        curve=mine.curve,
        stall=mine.stall,
        behind_plan=mine.behind_plan,
        line=(node or y).line,
    )


def _satisfaction(y: _Y) -> Satisfaction | None:
    try:
        f = y.mapping(_SATISFACTION_KEYS)
    except _Invalid:
        return None
    readers: dict[str, Callable[[_Y], Any]] = {
        "nps": lambda n: n.number(-100.0, 100.0),
        "csat": lambda n: n.ratio(),
        "min_answers": lambda n: n.integer(1),
        "period": lambda n: _choice(n, FEEDBACK_PERIODS),
        "for": lambda n: n.duration(allow_zero=True),
    }
    values: dict[str, Any] = {}
    for key, read in readers.items():
        if key in f:
            with contextlib.suppress(_Invalid):
                values[key] = read(f[key])
    if "nps" not in f and "csat" not in f:
        y.fail("a satisfaction floor needs 'nps' (e.g. nps: 20) and/or 'csat' (e.g. csat: 80%)")
        return None
    defaults = Satisfaction()
    return Satisfaction(
        nps=values.get("nps"),
        csat=values.get("csat"),
        min_answers=values.get("min_answers", defaults.min_answers),
        period=values.get("period", defaults.period),
        for_s=values.get("for", defaults.for_s),
        line=y.line,
    )


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owners(y: _Y) -> dict[str, Owner]:
    out: dict[str, Owner] = {}
    try:
        entries = y.mapping(_AnyKey())
    except _Invalid:
        return out
    for name, node in entries.items():
        if not OWNER_RE.match(name):
            node.fail(f"{name!r} is not a valid owner name (must match {OWNER_RE.pattern})")
            continue
        try:
            f = node.mapping(("team", "webhook_url"))
            team = f["team"].string(OWNER_RE, "team") if "team" in f else None
            url = f["webhook_url"].string() if "webhook_url" in f else None
            if url is not None and not re.match(r"^https?://", url):
                raise f["webhook_url"].fail(f"{url!r} is not an http(s) URL")
        except _Invalid:
            continue
        out[name] = Owner(name=name, team=team, webhook_url=url)
    return out


class _AnyKey(list[str]):
    """Allows every key (the ``owners`` mapping is keyed by owner name)."""

    def __contains__(self, item: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(["<owner name>"])


def _defaults(y: _Y) -> _Layer:
    try:
        f = y.mapping(_LAYER_KEYS)
    except _Invalid:
        return _Layer()
    if "start" in f:
        f["start"].fail("'start' cannot be a default: each rollout or wave has its own")
    return _layer({k: v for k, v in f.items() if k != "start"}, _Layer())


def _load_text(ctx: _Ctx, text: str, file: str) -> tuple[list[Rollout], dict[str, Owner]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        ctx.problems.append(f"{file}:{line}: not valid YAML: {problem}")
        return [], {}
    if root is None:
        ctx.problems.append(f"{file}:1: the file is empty: it needs 'rollouts:', a list of rollouts")
        return [], {}
    top = _Y(ctx, file, root, "")
    try:
        f = top.mapping(("version", "defaults", "owners", "rollouts"))
    except _Invalid:
        return [], {}
    if "version" in f:
        try:
            if f["version"].integer(1) != 1:
                f["version"].fail("only version 1 exists")
        except _Invalid:
            pass
    defaults = _defaults(f["defaults"]) if "defaults" in f else _Layer()
    owners = _owners(f["owners"]) if "owners" in f else {}
    if "rollouts" not in f:
        top.fail("missing field 'rollouts': a list of rollouts")
        return [], owners
    rollouts: list[Rollout] = []
    try:
        items = f["rollouts"].items()
    except _Invalid:
        return [], owners
    if not items:
        f["rollouts"].fail("'rollouts' is empty: a plan file has at least one rollout")
    for item in items:
        try:
            rollout = _rollout(item, defaults)
        except _Invalid:
            rollout = None
        if rollout is not None:
            rollouts.append(rollout)
    return rollouts, owners


def _cross_checks(ctx: _Ctx, rollouts: list[Rollout], owners: dict[str, Owner]) -> None:
    seen: dict[str, Rollout] = {}
    feature_owner: dict[str, Rollout] = {}
    for r in rollouts:
        if r.name in seen:
            ctx.problems.append(
                f"{r.source}: rollouts: rollout name {r.name!r} is used twice (also {seen[r.name].source});"
                " give one of them a distinct 'name'"
            )
        seen.setdefault(r.name, r)
        other = feature_owner.get(r.feature)
        if other is not None and other.owner != r.owner:
            ctx.problems.append(
                f"{r.source}: owner: feature {r.feature!r} is owned by {other.owner!r} in {other.source};"
                " one product owner per feature"
            )
        feature_owner.setdefault(r.feature, r)
    for name, owner in owners.items():
        del name, owner  # owners without rollouts are allowed (a receiver prepared in advance)


def _with_teams(rollouts: list[Rollout], owners: dict[str, Owner]) -> tuple[Rollout, ...]:
    """Fills each rollout's team from ``owners`` (else the owner's name) where the rollout gave none."""
    out = []
    for r in rollouts:
        if not r.team:
            entry = owners.get(r.owner)
            r = replace(r, team=(entry.team if entry and entry.team else r.owner))
        out.append(r)
    return tuple(out)


def load_plans(paths: Sequence[str | Path]) -> PlanSet:
    """Reads and validates plan files; PlanError lists every problem as ``file:line: field: message``."""
    ctx = _Ctx()
    rollouts: list[Rollout] = []
    owners: dict[str, Owner] = {}
    for path in paths:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            ctx.problems.append(f"{name}:1: cannot read the plan file: {exc}")
            continue
        found, found_owners = _load_text(ctx, text, name)
        rollouts.extend(found)
        for key, owner in found_owners.items():
            owners.setdefault(key, owner)
    _cross_checks(ctx, rollouts, owners)
    if ctx.problems:
        raise PlanError(ctx.problems)
    return PlanSet(rollouts=_with_teams(rollouts, owners), owners=owners)


def load_plan_text(text: str, file: str = "<plan>") -> PlanSet:
    """Like load_plans for one file's text (tests, generated plans)."""
    ctx = _Ctx()
    rollouts, owners = _load_text(ctx, text, file)
    _cross_checks(ctx, rollouts, owners)
    if ctx.problems:
        raise PlanError(ctx.problems)
    return PlanSet(rollouts=_with_teams(rollouts, owners), owners=owners)
