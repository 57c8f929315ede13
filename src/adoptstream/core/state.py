"""Exact per-user adoption state and the rules that apply events to it.

Every update is order-free: earliest times are minima, latest times maxima, counts are guarded by
the (user, event_id) dedup, so any interleaving of the same accepted events gives the same state.
Replays of internal records are recognised by their source coordinates (input partition, offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

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


# One user's history with one feature is a plain list (cheap to create, encoded as it is):
# [exposure_ns, exposure_cohort, first_use_ns, last_use_ns, uses]
FeatureState = list
EXPOSURE_NS, EXPOSURE_COHORT, FIRST_USE_NS, LAST_USE_NS, USES = range(5)


def feature_state(
    exposure_ns: int | None = None,
    exposure_cohort: str | None = None,
    first_use_ns: int | None = None,
    last_use_ns: int | None = None,
    uses: int = 0,
) -> FeatureState:
    return [exposure_ns, exposure_cohort, first_use_ns, last_use_ns, uses]


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
        features = self.features
        fs = features.get(feature)  # type: ignore[arg-type]
        if etype == "use":
            if fs is None:
                features[feature] = [None, None, ts, ts, 1]  # type: ignore[index]
                return Outcome.ACCEPTED
            fs[USES] += 1
            first, last = fs[FIRST_USE_NS], fs[LAST_USE_NS]
            if first is None or ts < first:
                fs[FIRST_USE_NS] = ts
            if last is None or ts > last:
                fs[LAST_USE_NS] = ts
        elif fs is None:  # exposure
            features[feature] = [ts, cohort, None, None, 0]  # type: ignore[index]
        elif _earlier(ts, cohort, fs[EXPOSURE_NS], fs[EXPOSURE_COHORT]):
            fs[EXPOSURE_NS], fs[EXPOSURE_COHORT] = ts, cohort
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
        return dumps(
            [
                _STATE_VERSION,
                self.signup_ns,
                self.signup_cohort,
                self.accepted,
                self.duplicates,
                self.features,  # name -> [exposure_ns, exposure_cohort, first_use_ns, last_use_ns, uses]
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
            signup_ns, signup_cohort, feats, accepted, duplicates, seen, dict(sources), rest[0] if rest else 0
        )


class UserSummary(msgspec.Struct, array_like=True, gc=False):
    """What totals read of a stored `UserState`, decoded without its dedup map and sources.

    Deriving a partition's totals decodes every stored state: skipping the event ids (a dict of
    36-character strings per user) makes that decode about half as costly.
    """

    version: int
    signup_ns: int | None
    signup_cohort: str | None
    accepted: int
    duplicates: int
    features: dict[str, FeatureState]
    seen: msgspec.Raw
    sources: msgspec.Raw
    future: int = 0


_SUMMARY = msgspec.json.Decoder(UserSummary)


def decode_summary(data: bytes) -> UserSummary | UserState:
    """Decode what `AdoptionTotals.add_user` needs of `UserState.encode`'s output."""
    try:
        summary = _SUMMARY.decode(data)
    except msgspec.DecodeError:  # integers beyond 64 bits (a wide blob): the general decoder
        return UserState.decode(data)
    if summary.version != _STATE_VERSION:
        raise ValueError(f"unknown user state version {summary.version}")
    return summary


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
