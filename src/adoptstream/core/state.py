"""Exact per-user adoption state and the rules that apply events to it.

Every update is order-free: earliest times are minima, latest times maxima, counts are guarded by
the (user, event_id) dedup, so any interleaving of the same accepted events gives the same state.
Replays of internal records are recognised by their source coordinates (input partition, offset).
"""

from __future__ import annotations

from dataclasses import dataclass

from adoptstream.core.codec import dumps, loads
from adoptstream.core.events import Event, Outcome

DEDUP_WINDOW_MS = 25 * 3_600_000  # contract: at least 24 h of arrivals; one hour of slack
_STATE_VERSION = 1


def _earlier(ts: int, cohort: str | None, cur_ts: int | None, cur_cohort: str | None) -> bool:
    """Is (ts, cohort) before the current earliest? Ties on ts go to the smaller cohort key."""
    if cur_ts is None or ts < cur_ts:
        return True
    return ts == cur_ts and _cohort_key(cohort) < _cohort_key(cur_cohort)


def _cohort_key(cohort: str | None) -> tuple[bool, str]:
    return (cohort is None, cohort or "")


@dataclass(slots=True)
class FeatureState:
    """One user's history with one feature."""

    exposure_ns: int | None = None
    exposure_cohort: str | None = None
    first_use_ns: int | None = None
    last_use_ns: int | None = None
    uses: int = 0


@dataclass(slots=True, init=False)
class UserState:
    """Everything adoptstream keeps about one user."""

    signup_ns: int | None
    signup_cohort: str | None
    features: dict[str, FeatureState]
    accepted: int
    duplicates: int
    seen: dict[str, int]  # event_id -> arrival ms
    sources: dict[int, int]  # input partition -> last offset applied
    future: int  # messages of this user rejected as too far ahead of the clock

    def __init__(
        self,
        signup_ns: int | None = None,
        signup_cohort: str | None = None,
        features: dict[str, FeatureState] | None = None,
        accepted: int = 0,
        duplicates: int = 0,
        seen: dict[str, int] | None = None,
        sources: dict[int, int] | None = None,
        future: int = 0,
    ) -> None:
        # written out (not default_factory): a new state per first-seen user is on the hot path
        self.signup_ns = signup_ns
        self.signup_cohort = signup_cohort
        self.features = {} if features is None else features
        self.accepted = accepted
        self.duplicates = duplicates
        self.seen = {} if seen is None else seen
        self.sources = {} if sources is None else sources
        self.future = future

    def is_replay(self, src_partition: int, src_offset: int) -> bool:
        """True when this input message was already applied (a retry or a crash replay)."""
        last = self.sources.get(src_partition)
        return last is not None and src_offset <= last

    def apply(self, event: Event, arrival_ms: int, src_partition: int = -1, src_offset: int = -1) -> Outcome:
        """Apply one valid, non-future event; return ACCEPTED or DUPLICATE."""
        return self.apply_fields(
            event.event_id,
            event.type,
            event.feature,
            event.ts_ns,
            event.cohort,
            arrival_ms,
            src_partition,
            src_offset,
        )

    def apply_fields(
        self,
        event_id: str,
        etype: str,
        feature: str | None,
        ts: int,
        cohort: str | None,
        arrival_ms: int,
        src_partition: int = -1,
        src_offset: int = -1,
    ) -> Outcome:
        """`apply` without an Event object (the hot path of the state stage)."""
        if src_offset >= 0:
            self.sources[src_partition] = src_offset
        seen = self.seen
        if event_id in seen:
            self.duplicates += 1
            return Outcome.DUPLICATE
        seen[event_id] = arrival_ms
        self.accepted += 1
        if etype == "signup":
            if _earlier(ts, cohort, self.signup_ns, self.signup_cohort):
                self.signup_ns, self.signup_cohort = ts, cohort
            return Outcome.ACCEPTED
        fs = self.features.get(feature)  # type: ignore[arg-type]
        if fs is None:
            fs = self.features[feature] = FeatureState()  # type: ignore[index]
        if etype == "exposure":
            if _earlier(ts, cohort, fs.exposure_ns, fs.exposure_cohort):
                fs.exposure_ns, fs.exposure_cohort = ts, cohort
        else:
            fs.uses += 1
            if fs.first_use_ns is None or ts < fs.first_use_ns:
                fs.first_use_ns = ts
            if fs.last_use_ns is None or ts > fs.last_use_ns:
                fs.last_use_ns = ts
        return Outcome.ACCEPTED

    def reject_future(self, src_partition: int, src_offset: int) -> None:
        """Count one message that ingest found too far ahead (same replay rule as `apply`).

        Counted here, in the user's state, rather than per input partition: if that message is read
        again later and no longer looks future, its replay is recognised and it keeps one outcome.
        """
        if src_offset >= 0:
            self.sources[src_partition] = src_offset
        self.future += 1

    def prune_seen(self, window_ms: int = DEDUP_WINDOW_MS) -> None:
        """Forget event ids accepted more than `window_ms` before this user's latest arrival."""
        if len(self.seen) < 2:
            return
        horizon = max(self.seen.values()) - window_ms
        if min(self.seen.values()) < horizon:
            self.seen = {k: v for k, v in self.seen.items() if v >= horizon}

    def encode(self) -> bytes:
        """Compact, versioned serialization (changelog value and store value)."""
        feats = {}
        for name, f in self.features.items():
            feats[name] = [f.exposure_ns, f.exposure_cohort, f.first_use_ns, f.last_use_ns, f.uses]
        return dumps(
            [
                _STATE_VERSION,
                self.signup_ns,
                self.signup_cohort,
                self.accepted,
                self.duplicates,
                feats,
                self.seen,
                list(self.sources.items()),  # pairs: JSON object keys would be strings
                self.future,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> UserState:
        """Inverse of `encode`."""
        version, signup_ns, signup_cohort, accepted, duplicates, feats, seen, sources, *rest = loads(data)
        if version != _STATE_VERSION:
            raise ValueError(f"unknown user state version {version}")
        return cls(
            signup_ns,
            signup_cohort,
            {name: FeatureState(*vals) for name, vals in feats.items()},
            accepted,
            duplicates,
            seen,
            dict(sources),
            rest[0] if rest else 0,
        )


@dataclass(slots=True)
class SourceOutcomes:
    """Invalid messages of one input partition (they have no trustworthy user)."""

    last_offset: int = -1
    invalid: int = 0
    future: int = 0

    def apply(self, outcome: Outcome, src_offset: int) -> bool:
        """Count one rejected message unless it is a replay; return whether it counted."""
        if src_offset <= self.last_offset:
            return False
        self.last_offset = src_offset
        if outcome is Outcome.INVALID:
            self.invalid += 1
        else:
            self.future += 1
        return True

    def encode(self) -> bytes:
        return dumps([self.last_offset, self.invalid, self.future])

    @classmethod
    def decode(cls, data: bytes) -> SourceOutcomes:
        return cls(*loads(data))
