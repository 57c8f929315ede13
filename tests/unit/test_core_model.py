"""The pure core against the brute-force model of CONTRACT.md, exactly, sample by sample.

Random message sequences (strategies.py: valid, invalid, future, duplicates, three ts formats,
window and bucket edges) are driven through the core the way the runtime drives it (ingest.py:
parse_event, is_future, by-user records; processor.py: load once per batch, add_user(-1), apply
unless is_replay, prune_seen, add_user(+1)), then scraped through AdoptionCollector, and compared
with `model.expected_samples` under every variation that must not change the numbers: order,
replays, crash + restore, partitioning by user, serialization, incremental vs from-scratch totals.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import model
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from strategies import BUCKETS_S, DAY, H0, HOUR, MS, NS, USERS, Scenario, examples, iso, scenarios

from adoptstream.core.events import InvalidEvent, Outcome, is_future, parse_event
from adoptstream.core.state import SourceOutcomes, UserState
from adoptstream.core.totals import AdoptionTotals, totals_of
from adoptstream.exposition.collector import AdoptionCollector
from adoptstream.runtime import records

# -- the implementation, driven like the runtime ------------------------------------------------------


@dataclass
class PartitionSim:
    """One by-user partition: its store (live objects or encoded bytes) and its totals."""

    codec: bool
    store: dict[bytes, object] = field(default_factory=dict)
    totals: AdoptionTotals = field(default_factory=AdoptionTotals)
    log: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # the by-user topic partition

    def load(self, key: bytes) -> UserState | SourceOutcomes | None:
        value = self.store.get(key)
        if value is None or not self.codec:
            return value  # type: ignore[return-value]
        return UserState.decode(value) if key[:1] == b"u" else SourceOutcomes.decode(value)  # type: ignore[arg-type]

    def save(self, key: bytes, state: UserState | SourceOutcomes) -> None:
        self.store[key] = state.encode() if self.codec else state

    def states(self) -> tuple[list[UserState], list[SourceOutcomes]]:
        users, sources = [], []
        for key in self.store:
            state = self.load(key)
            (users if key[:1] == b"u" else sources).append(state)
        return users, sources  # type: ignore[return-value]

    def snapshot(self) -> dict[bytes, bytes]:
        return {k: (v if self.codec else v.encode()) for k, v in self.store.items()}  # type: ignore[union-attr]

    def restore(self, snap: dict[bytes, bytes]) -> None:
        """What StateProcessor.assign does after a restart: states from storage, totals rebuilt."""
        self.store, self.totals = {}, AdoptionTotals()
        for key, blob in snap.items():
            state = UserState.decode(blob) if key[:1] == b"u" else SourceOutcomes.decode(blob)
            self.save(key, state)
            if key[:1] == b"u":
                self.totals.add_user(state)  # type: ignore[arg-type]
            else:
                self.totals.add_source(state)  # type: ignore[arg-type]


def _touch(
    part: PartitionSim,
    touched: dict[bytes, UserState | SourceOutcomes],
    skey: bytes,
    new: Callable[[], UserState | SourceOutcomes],
    add: Callable,
) -> UserState | SourceOutcomes:
    """A state's first touch in a batch: loaded (or new) and its old contribution taken out."""
    state = touched.get(skey)
    if state is None:
        state = part.load(skey)
        if state is None:
            state = new()
        else:
            add(state, -1)
        touched[skey] = state
    return state


class Runtime:
    """Ingest + by-user processing over in-memory 'topics' (mirrors ingest.py and processor.py)."""

    def __init__(
        self,
        now_ns: int,
        n_parts: int = 1,
        part_of_user: Callable[[str], int] | None = None,
        codec: bool = False,
    ) -> None:
        self.now_ns = now_ns
        self.parts = [PartitionSim(codec) for _ in range(n_parts)]
        self.part_of_user = part_of_user or (lambda u: records.user_partition(u, n_parts))
        self.outcomes: dict[tuple[int, int], Outcome] = {}  # (src partition, offset) -> outcome
        self.clock_ms = now_ns // MS - 3_600_000  # arrivals within the last hour: no pruning

    # stage 1 (ingest.py); one entry per by-user record here, so that replays can start anywhere
    def ingest(self, coords: Sequence[tuple[int, int]], raws: Sequence[bytes | None]) -> None:
        for (src, offset), raw in zip(coords, raws, strict=True):
            self.clock_ms += 1
            try:
                event = parse_event(raw)
                if is_future(event.ts_ns, self.now_ns):  # counted in the user's state
                    part = self.parts[self.part_of_user(event.user_id)]
                    entry = records.rejection_entry(Outcome.FUTURE, src, offset, self.clock_ms, event.user_id)
                    part.log.append((None, *records.packs([entry])))
                    continue
            except InvalidEvent:
                self._reject(Outcome.INVALID, src, offset)
                continue
            part = self.parts[self.part_of_user(event.user_id)]
            part.log.append((None, *records.packs([records.event_entry(event, src, offset, self.clock_ms)])))

    def _reject(self, outcome: Outcome, src: int, offset: int) -> None:
        part = self.parts[records.rejection_partition(src, len(self.parts))]
        entry = records.rejection_entry(outcome, src, offset, self.clock_ms)
        part.log.append((None, *records.packs([entry])))

    # stage 2 (processor.py StateProcessor._apply)
    def process(self, part: PartitionSim, batch: Sequence[tuple[bytes | None, bytes]]) -> None:
        touched: dict[bytes, UserState | SourceOutcomes] = {}
        for key, value in batch:
            for entry in records.unpack(key, value):
                self._process_entry(part, records.decode(entry), touched)
        for skey, state in touched.items():
            if isinstance(state, UserState):
                state.prune_seen()
                part.totals.add_user(state)
            else:
                part.totals.add_source(state)
            part.save(skey, state)

    def _process_entry(
        self,
        part: PartitionSim,
        rec: records.EventRecord | records.RejectionRecord,
        touched: dict[bytes, UserState | SourceOutcomes],
    ) -> None:
        user_id = rec.event.user_id if isinstance(rec, records.EventRecord) else rec.user_id
        if user_id is not None:
            user = _touch(part, touched, b"u" + user_id.encode(), UserState, part.totals.add_user)
            if user.is_replay(rec.src_partition, rec.src_offset):  # type: ignore[union-attr]
                return
            if isinstance(rec, records.RejectionRecord):  # future
                user.reject_future(rec.src_partition, rec.src_offset)  # type: ignore[union-attr]
                self._record(rec.src_partition, rec.src_offset, Outcome.FUTURE)
                return
            outcome = user.apply(rec.event, rec.arrival_ms, rec.src_partition, rec.src_offset)  # type: ignore[union-attr]
            self._record(rec.src_partition, rec.src_offset, outcome)
        else:
            assert isinstance(rec, records.RejectionRecord)
            skey = b"s%d" % rec.src_partition
            source = _touch(part, touched, skey, SourceOutcomes, part.totals.add_source)
            if source.apply(rec.outcome, rec.src_offset):  # type: ignore[union-attr]
                self._record(rec.src_partition, rec.src_offset, rec.outcome)

    def _record(self, src: int, offset: int, outcome: Outcome) -> None:
        assert (src, offset) not in self.outcomes, f"message {src}/{offset} got a second outcome {outcome}"
        self.outcomes[(src, offset)] = outcome

    def drain(self, part: PartitionSim, start: int, stop: int, batch: int) -> None:
        for i in range(start, stop, batch):
            self.process(part, part.log[i : min(i + batch, stop)])

    def run_all(self, batch: int) -> None:
        for part in self.parts:
            self.drain(part, 0, len(part.log), batch)

    def merged(self) -> AdoptionTotals:
        merged = AdoptionTotals()
        for part in self.parts:
            merged.merge(part.totals)
        return merged

    def from_scratch(self) -> AdoptionTotals:
        merged = AdoptionTotals()
        for part in self.parts:
            merged.merge(totals_of(*part.states()))
        return merged


def coords_of(src_of: Sequence[int]) -> list[tuple[int, int]]:
    """(input partition, offset) of every arrival: offsets count up per input partition."""
    nxt: dict[int, int] = {}
    out = []
    for p in src_of:
        out.append((p, nxt.get(p, 0)))
        nxt[p] = nxt.get(p, 0) + 1
    return out


def flat(totals: AdoptionTotals) -> dict[str, object]:
    return {
        "outcomes": {k: v for k, v in totals.outcomes.items() if v},
        "feature_users": {k: v for k, v in totals.feature_users.items() if v},
        "active": {(f, h): c for f, hs in totals.active_hours.items() for h, c in hs.items() if c},
        "exposed": {k: v for k, v in totals.exposed.items() if v},
        "adopted": {k: v for k, v in totals.adopted.items() if v},
        "ttfu": {k: (list(h.counts), h.sum_ns) for k, h in totals.ttfu.items() if h.count or h.sum_ns},
        "uses": {k: v for k, v in totals.uses.items() if v},
    }


class _Source:
    def __init__(self, totals: AdoptionTotals) -> None:
        self._totals = totals

    def merged_totals(self) -> AdoptionTotals:
        return self._totals

    def partition_totals(self) -> list[AdoptionTotals]:
        return [self._totals]


def scrape(totals: AdoptionTotals, scrape_ns: int) -> dict[model.SampleKey, float]:
    """Every sample AdoptionCollector exports for `totals` at T (no label caps in reach)."""
    registry = CollectorRegistry()
    registry.register(AdoptionCollector(_Source(totals), 10**6, 10**6, clock_ns=lambda: scrape_ns))
    out: dict[model.SampleKey, float] = {}
    for family in registry.collect():
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"sample exported twice: {key}"
            out[key] = s.value
    return out


def assert_samples(
    got: dict[model.SampleKey, float], expected: dict[model.SampleKey, float], what: str
) -> None:
    if got == expected:
        return
    diff = {
        k: (got.get(k), expected.get(k))
        for k in sorted(set(got) | set(expected))
        if got.get(k) != expected.get(k)
    }
    raise AssertionError(f"{what}: (implementation, model) differ on {len(diff)} samples: {diff}")


def run(
    sc: Scenario,
    raws: Sequence[bytes | None],
    *,
    n_parts: int = 1,
    codec: bool = False,
    batch: int = 1,
    src_of: Sequence[int] | None = None,
) -> Runtime:
    rt = Runtime(sc.now_ns, n_parts, _part_fn(sc, n_parts), codec)
    rt.ingest(coords_of(src_of if src_of is not None else [0] * len(raws)), raws)
    rt.run_all(batch)
    return rt


def _part_fn(sc: Scenario, n_parts: int) -> Callable[[str], int]:
    if n_parts == 1:
        return lambda u: 0
    rng = random.Random(sc.part_seed)
    table = {u: rng.randrange(n_parts) for u in USERS}
    # users the generator never writes (lone-surrogate mutations are invalid anyway) go by crc32
    return lambda u: table.get(u, records.user_partition(u, n_parts))


def check_all_variants(sc: Scenario, *, order_free: bool) -> None:
    arrivals = list(enumerate(sc.raws))
    expected = model.v1_series(model.expected_samples(arrivals, sc.now_ns, sc.scrape_ns))
    expected_outcomes = [o for o, _ in model.classify(arrivals, sc.now_ns)]
    T = sc.scrape_ns

    # (a) the given order, one input partition, one by-user partition, record by record
    rt = run(sc, sc.raws)
    got_outcomes = [rt.outcomes[c].value for c in coords_of([0] * len(sc.raws))]
    assert got_outcomes == expected_outcomes
    assert_samples(scrape(rt.merged(), T), expected, "(a) given order")
    # (f) incremental totals (add_user -1 / apply / +1) == totals_of from scratch == model
    assert flat(rt.from_scratch()) == flat(rt.merged())
    assert_samples(scrape(rt.from_scratch(), T), expected, "(f) from scratch")

    # (b) shuffled order (order-free only when duplicates carry identical content)
    if order_free:
        shuffled = [sc.raws[i] for i in sc.perm]
        assert model.v1_series(model.expected_samples(list(enumerate(shuffled)), sc.now_ns, T)) == expected
        rt_b = run(sc, shuffled, src_of=[sc.src_of[i] for i in sc.perm], batch=sc.batch)
        assert_samples(scrape(rt_b.merged(), T), expected, "(b) shuffled")

    # (c) every message replayed with its source coordinates: nothing counts twice
    coords = coords_of(sc.src_of)
    rt_c = Runtime(sc.now_ns, sc.n_parts, _part_fn(sc, sc.n_parts))
    rt_c.ingest(coords, sc.raws)
    rt_c.run_all(sc.batch)
    before = flat(rt_c.merged())
    rt_c.ingest(coords, sc.raws)  # a full re-delivery of the input (ingest crash before commit)
    rt_c.run_all(sc.batch)
    for part in rt_c.parts:  # and of the by-user topic (processor crash before commit)
        rt_c.drain(part, 0, len(part.log), sc.batch)
    assert flat(rt_c.merged()) == before
    assert sorted(o.value for o in rt_c.outcomes.values()) == sorted(expected_outcomes)
    assert_samples(scrape(rt_c.merged(), T), expected, "(c) replayed")

    # (d) split across by-user partitions, several input partitions, batches: merged totals
    rt_d = run(sc, sc.raws, n_parts=sc.n_parts, batch=sc.batch, src_of=sc.src_of)
    assert_samples(scrape(rt_d.merged(), T), expected, "(d) partitioned")
    assert flat(rt_d.from_scratch()) == flat(rt_d.merged())

    # (e) every state encoded / decoded between batches (changelog / RocksDB path)
    rt_e = run(sc, sc.raws, n_parts=sc.n_parts, codec=True, batch=sc.batch, src_of=sc.src_of)
    assert_samples(scrape(rt_e.merged(), T), expected, "(e) codec")
    assert flat(rt_e.from_scratch()) == flat(rt_e.merged())

    # crash + restore: snapshot at s, keep working to k, lose it, restore, redeliver from r <= s
    rng = random.Random(sc.rng_seed)
    rt_x = Runtime(sc.now_ns, sc.n_parts, _part_fn(sc, sc.n_parts), codec=rng.random() < 0.5)
    rt_x.ingest(coords, sc.raws)
    for part in rt_x.parts:
        n = len(part.log)
        s = rng.randint(0, n)
        k, r = rng.randint(s, n), rng.randint(0, s)
        rt_x.drain(part, 0, s, sc.batch)
        snap, kept = part.snapshot(), dict(rt_x.outcomes)
        rt_x.drain(part, s, k, sc.batch)
        part.restore(snap)
        rt_x.outcomes = kept  # the lost work's outcomes are lost with it
        rt_x.drain(part, r, n, sc.batch)
    assert_samples(scrape(rt_x.merged(), T), expected, "crash + restore")
    assert sorted(o.value for o in rt_x.outcomes.values()) == sorted(expected_outcomes)


@examples(100)
@given(scenarios(identical_duplicates=True))
def test_core_equals_model_order_free(sc: Scenario) -> None:
    check_all_variants(sc, order_free=True)


@examples(60)
@given(scenarios(identical_duplicates=False))
def test_core_equals_model_conflicting_duplicates_in_arrival_order(sc: Scenario) -> None:
    """Same (user, event_id) with different content: the first arrival wins, later ones are duplicates."""
    check_all_variants(sc, order_free=False)


@examples(40)
@given(scenarios(identical_duplicates=True, max_size=12), st.integers(0, 6))
def test_scrape_time_moves_windows_only(sc: Scenario, hours_later: int) -> None:
    """Later scrapes of unchanged totals: every sample still equals the model at the new T."""
    rt = run(sc, sc.raws, n_parts=sc.n_parts, batch=sc.batch, src_of=sc.src_of)
    arrivals = list(enumerate(sc.raws))
    for t in (
        sc.scrape_ns + hours_later * HOUR,
        sc.scrape_ns + hours_later * DAY - 1,
        sc.scrape_ns + 31 * DAY,
    ):
        want = model.v1_series(model.expected_samples(arrivals, sc.now_ns, t))
        assert_samples(scrape(rt.merged(), t), want, f"T={t}")


# -- targeted scenarios (readable, and proof that the generators reach the edges) ---------------------


def _msg(
    user: str, eid: str, etype: str, ts: object, feature: str | None = "f", cohort: str | None = None
) -> bytes:
    obj: dict[str, object] = {"event_id": eid, "user_id": user, "type": etype, "ts": ts}
    if feature is not None:
        obj["feature"] = feature
    if cohort is not None:
        obj["cohort"] = cohort
    return json.dumps(obj, ensure_ascii=False).encode()


def _check(raws: list[bytes | None], now_ns: int, scrape_ns: int) -> dict[model.SampleKey, float]:
    sc = Scenario(raws, now_ns, scrape_ns, 1, [0] * len(raws), 2, 0, 2, list(range(len(raws))), 0)
    check_all_variants(sc, order_free=False)
    return model.expected_samples(list(enumerate(raws)), now_ns, scrape_ns)


def _k(name: str, **labels: str) -> model.SampleKey:
    return name, tuple(sorted(labels.items()))


def test_window_edges_exact() -> None:
    T = H0 + 17 * 60 * NS  # H = H0
    edge = {d: H0 - (24 * d - 1) * HOUR for d in (1, 7, 30)}
    raws = [
        _msg("in-1d", "a", "use", edge[1] // MS),
        _msg("out-1d", "a", "use", (edge[1] - MS) // MS),
        _msg("in-7d", "a", "use", f"{iso(edge[7], 330, '', 9, 'T')}"),
        _msg("out-7d", "a", "use", iso(edge[7] - 1, 0, "Z", 9, "T")),
        _msg("in-30d", "a", "use", edge[30] / MS),
        _msg("out-30d", "a", "use", iso(edge[30] - 1, -480, "", 9, " ")),
    ]
    s = _check(raws, T, T)
    assert s[_k("adoptstream_active_users", feature="f", window="1d")] == 1
    assert s[_k("adoptstream_active_users", feature="f", window="7d")] == 3
    assert s[_k("adoptstream_active_users", feature="f", window="30d")] == 5
    assert s[_k("adoptstream_active_users", feature="*", window="30d")] == 5


def test_bucket_edges_and_star_rules() -> None:
    T = H0
    a = H0 - 40 * DAY  # a + 30 d is still in the past
    raws = [_msg("u", "sign", "signup", a // MS, feature=None, cohort="c1")]
    for i, b in enumerate(BUCKETS_S):
        raws += [
            _msg(f"on-{b}", "x", "exposure", a // MS),
            _msg(f"on-{b}", "y", "use", (a + b * NS) // MS),
            _msg(f"over-{b}", "x", "exposure", iso(a, 0, "Z", 9, "T")),
            _msg(f"over-{b}", "y", "use", iso(a + b * NS + 1, 0, "Z", 9, "T")),
        ]
        raws.append(_msg("u", f"use-{i}", "use", (a + b * NS) // MS, feature=f"g{i}"))
    raws.append(_msg("before", "x", "exposure", a // MS))
    raws.append(_msg("before", "y", "use", (a - DAY) // MS))  # use before exposure: ttfu 0
    s = _check(raws, T, T)
    for i, b in enumerate(BUCKETS_S):
        # the 'on' user of bound b and every smaller one, plus 'before'; 'over' users of smaller bounds
        assert (
            s[_k("adoptstream_time_to_first_use_seconds_bucket", feature="f", le=model.le_label(b))]
            == 2 * i + 2
        )
    assert s[_k("adoptstream_time_to_first_use_seconds_count", feature="f")] == 19
    assert s[_k("adoptstream_exposed_users", feature="*", cohort="c1")] == 1
    assert s[_k("adoptstream_adopted_users", feature="*", cohort="c1")] == 1
    assert (
        s[_k("adoptstream_time_to_first_use_seconds_sum", feature="*")] == 60.0
    )  # earliest use of any feature
    assert s[_k("adoptstream_feature_uses_total", feature="*")] == 19 + 9


def test_cohort_tie_rule_and_late_earlier_exposure() -> None:
    T = H0
    t = H0 - DAY
    raws = [
        _msg("u1", "a", "exposure", t // MS, cohort="wave-1"),
        _msg("u1", "b", "exposure", iso(t, 0, "Z", 0, "T"), cohort="Wave 2 ü"),  # tie: "Wave 2 ü" < "wave-1"
        _msg("u1", "c", "exposure", t / MS),  # tie: absent cohort sorts last
        _msg("u2", "a", "exposure", t // MS),
        _msg("u2", "b", "exposure", t // MS, cohort="wave-1"),  # tie: named beats absent
        _msg("u3", "a", "exposure", t // MS, cohort="wave-1"),
        _msg("u3", "b", "exposure", (t - 1) // MS),  # strictly earlier, no cohort: unassigned
        _msg("u3", "c", "use", t // MS),
    ]
    s = _check(raws, T, T)
    assert s[_k("adoptstream_exposed_users", feature="f", cohort="Wave 2 ü")] == 1
    assert s[_k("adoptstream_exposed_users", feature="f", cohort="wave-1")] == 1
    assert s[_k("adoptstream_exposed_users", feature="f", cohort="unassigned")] == 1
    assert s[_k("adoptstream_adopted_users", feature="f", cohort="unassigned")] == 1
    assert _k("adoptstream_exposed_users", feature="*", cohort="unassigned") not in s  # no signups


def test_outcome_precedence() -> None:
    T = H0
    ok = _msg("u", "e", "use", T // MS)
    future = _msg("u", "e", "use", (T + 5 * 60 * NS + MS) // MS)
    raws = [future, ok, ok, future, b"{}", _msg("u", "e", "use", T // MS - 1)]
    assert [o for o, _ in model.classify(list(enumerate(raws)), T)] == [
        "future",
        "accepted",
        "duplicate",
        "future",
        "invalid",
        "duplicate",
    ]
    _check(raws, T, T)
