"""The worker's two stages in-process, without Kafka, compared with the brute-force model.

`Pipeline` drives `ingest.route`, `records.packs`/`unpack`, `processor.apply_batch`, the real stores,
`derive_totals`, `replace_in_totals` and `AdoptionTotals.advance` exactly as `Ingest.process` and
`StateProcessor` do around their I/O: only the topics are lists and the clocks are parameters.
Crashes and restarts are modelled by what survives them (the store's encoded values, the changelog,
a totals snapshot), never by copying live objects.

`check_all_variants` and `check_clock_moves` compare every scraped series with `model.expected_samples`
for a generated scenario (any object with the fields of `Scenario` in test_core_model.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import model
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from adoptstream.core.state import DAY_NS
from adoptstream.core.totals import AdoptionTotals
from adoptstream.exposition.collector import AdoptionCollector
from adoptstream.exposition.engagement import EngagementCollector
from adoptstream.runtime import records
from adoptstream.runtime.ingest import route
from adoptstream.runtime.processor import apply_batch, derive_totals, replace_in_totals
from adoptstream.runtime.store import MemoryStore

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Partition:
    """One by-user partition: its topic, its changelog, its store and the totals derived from it."""

    today: int  # the state stage's clock, as a date (it moves the totals' floors at the day turn)
    by_user: list[bytes] = field(default_factory=list)  # the by-user topic partition (pack values)
    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    store: MemoryStore = field(default_factory=MemoryStore)
    totals: AdoptionTotals = field(default_factory=AdoptionTotals)
    applied: int = 0  # by-user offset up to which the state stage has committed

    def process(self, stop: int | None = None, batch: int = 1) -> None:
        """Apply the by-user records from the committed offset up to `stop`, `batch` records at a time,
        saving each batch's changelog records as `StateProcessor.process` does once they are acked."""
        stop = len(self.by_user) if stop is None else stop
        for start in range(self.applied, stop, batch):
            self.totals.advance(self.today)  # StateProcessor._turn_of_day
            end = min(start + batch, stop)
            applied = apply_batch(self.store, self.totals, [(None, v) for v in self.by_user[start:end]])
            self.changelog.extend(zip(applied.keys, applied.values, strict=True))
            self.store.save(applied.keys, applied.values, len(self.changelog) - 1)
            self.applied = end

    def crash_and_restore(self, store: dict[bytes, bytes], changelog_len: int, committed: int) -> None:
        """A restart from a store holding `store` (as of changelog offset `changelog_len` - 1): the
        totals derived from it, the state stage resuming at by-user offset `committed`. The
        changelog records after it were never acknowledged: they are gone."""
        del self.changelog[changelog_len:]
        self.store = MemoryStore()
        self.store.save_raw(dict(store), changelog_len - 1)
        self.totals = derive_totals(self.store, self.today)
        self.applied = committed

    def restore_from_changelog(self, snapshot: bytes, snapshot_len: int, store: dict[bytes, bytes]) -> None:
        """A restart on a disk whose store (`store`, matching `snapshot_len` changelog records) has a
        totals snapshot: the totals come from the snapshot and the changelog tail after it."""
        self.store = MemoryStore()
        self.store.save_raw(dict(store), snapshot_len - 1)
        self.totals = AdoptionTotals.decode(snapshot)
        tail: dict[bytes, bytes | None] = {}
        for key, value in self.changelog[snapshot_len:]:
            tail[key] = value
        replace_in_totals(self.totals, self.store, tail)
        self.store.save_raw(tail, len(self.changelog) - 1)
        self.totals.advance(self.today)


class Pipeline:
    """Ingest and state stage over `n` by-user partitions; the state stage's clock reads `state_ns`."""

    def __init__(self, n: int = 1, state_ns: int = 0) -> None:
        self.n = n
        self.parts = [Partition(state_ns // DAY_NS) for _ in range(n)]

    def set_state_clock(self, state_ns: int) -> None:
        for part in self.parts:
            part.today = state_ns // DAY_NS

    def ingest(
        self, coords: Sequence[tuple[int, int]], raws: Sequence[bytes | None], now_ns: int, batch: int = 1
    ) -> None:
        """Route input messages (at (input partition, offset) `coords`), `batch` at a time, at `now_ns`."""
        recs = [
            ConsumerRecord("in", p, off, 0, 0, None, raw, None, 0, len(raw or b""), [])
            for (p, off), raw in zip(coords, raws, strict=True)
        ]
        for i in range(0, len(recs), batch):
            for partition, entries in route(recs[i : i + batch], self.n, now_ns).by_user.items():
                self.parts[partition].by_user.extend(records.packs(entries))

    def process(self, batch: int = 1) -> None:
        for part in self.parts:
            part.process(batch=batch)

    def totals(self) -> list[AdoptionTotals]:
        """Every partition's totals (what one worker owning them all scrapes)."""
        return [part.totals for part in self.parts]

    def merged(self) -> AdoptionTotals:
        """The sum of the partitions' totals (section 3 answers then computed from all the counts)."""
        merged = AdoptionTotals()
        for part in self.parts:
            merged.merge(part.totals)
        return merged

    def derived(self) -> list[AdoptionTotals]:
        """The totals of every stored state, from scratch (what a restart of every worker derives)."""
        return [derive_totals(part.store, part.today) for part in self.parts]


def coords_of(src_of: Sequence[int]) -> list[tuple[int, int]]:
    """(input partition, offset) of every arrival: offsets count up per input partition."""
    nxt: dict[int, int] = {}
    out = []
    for p in src_of:
        out.append((p, nxt.get(p, 0)))
        nxt[p] = nxt.get(p, 0) + 1
    return out


class _Source:
    """What the collectors read of a worker: its partitions' totals, and their merge without section 3
    (as `StateProcessor.merged_totals`)."""

    def __init__(self, parts: list[AdoptionTotals]) -> None:
        self._parts = parts

    def partition_totals(self) -> list[AdoptionTotals]:
        return self._parts

    def merged_totals(self) -> AdoptionTotals:
        merged = AdoptionTotals()
        for totals in self._parts:
            merged.merge(totals, section_3=False)
        return merged


def scrape(totals: AdoptionTotals | list[AdoptionTotals], scrape_ns: int) -> dict[SampleKey, float]:
    """Every sample the contract collectors export at T for one worker owning the partitions of
    `totals` (no label caps in reach)."""
    source = _Source(totals if isinstance(totals, list) else [totals])
    registry = CollectorRegistry()
    adoption = AdoptionCollector(source, 10**6, 10**6, clock_ns=lambda: scrape_ns)
    registry.register(adoption)
    registry.register(EngagementCollector(source, adoption.features, clock_ns=lambda: scrape_ns))
    out: dict[SampleKey, float] = {}
    for family in registry.collect():
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"sample exported twice: {key}"
            out[key] = s.value
    return out


def assert_samples(got: dict[SampleKey, float], expected: dict[SampleKey, float], what: str) -> None:
    """`got` equals `expected` on every sample name the model computes (a model of sections 1 and 2
    only does not judge the section 3 families; the model of section 3 computes every family)."""
    names = {name for name, _ in expected}
    got = {key: value for key, value in got.items() if key[0] in names}
    if got == expected:
        return
    diff = {
        k: (got.get(k), expected.get(k))
        for k in sorted(set(got) | set(expected))
        if got.get(k) != expected.get(k)
    }
    raise AssertionError(f"{what}: (implementation, model) differ on {len(diff)} samples: {diff}")


def flat(totals: AdoptionTotals | list[AdoptionTotals]) -> AdoptionTotals:
    """Totals (summed, if several) without their zero counts: comparable with ==."""
    if isinstance(totals, list):
        merged = AdoptionTotals()
        for part in totals:
            merged.merge(part)
        totals = merged
    return AdoptionTotals.decode(totals.encode())


def run(sc: Any, raws: Sequence[bytes | None], *, n_parts: int = 1, batch: int = 1, src_of=None) -> Pipeline:
    pipe = Pipeline(n_parts, sc.now_ns)
    pipe.ingest(coords_of(src_of if src_of is not None else [0] * len(raws)), raws, sc.now_ns, batch)
    pipe.process(batch)
    return pipe


def check_all_variants(sc: Any, *, order_free: bool) -> None:
    """Every variation that must not change the numbers gives the model's samples at T."""
    arrivals = list(enumerate(sc.raws))
    expected = model.expected_samples(arrivals, sc.now_ns, sc.scrape_ns)
    T = sc.scrape_ns

    # (a) the given order, one input partition, one by-user partition, message by message
    pipe = run(sc, sc.raws)
    assert_samples(scrape(pipe.totals(), T), expected, "(a) given order")
    # (f) incremental totals (remove / apply / add) == derived from the stored states == model
    assert flat(pipe.derived()) == flat(pipe.totals())
    assert_samples(scrape(pipe.derived(), T), expected, "(f) derived")
    assert_samples(scrape(pipe.merged(), T), expected, "(f) merged, section 3 from all the counts")

    # (b) shuffled order (order-free only when duplicates carry identical content)
    if order_free:
        shuffled = [sc.raws[i] for i in sc.perm]
        assert model.expected_samples(list(enumerate(shuffled)), sc.now_ns, T) == expected
        pipe_b = run(sc, shuffled, n_parts=sc.n_parts, src_of=[sc.src_of[i] for i in sc.perm], batch=sc.batch)
        assert_samples(scrape(pipe_b.totals(), T), expected, "(b) shuffled")

    # (c) every message delivered again with its source coordinates: nothing counts twice
    coords = coords_of(sc.src_of)
    pipe_c = Pipeline(sc.n_parts, sc.now_ns)
    pipe_c.ingest(coords, sc.raws, sc.now_ns, sc.batch)
    pipe_c.process(sc.batch)
    before = flat(pipe_c.totals())
    pipe_c.ingest(coords, sc.raws, sc.now_ns, sc.batch)  # a full re-delivery of the input (ingest crash)
    pipe_c.process(sc.batch)
    for part in pipe_c.parts:  # and of the by-user topic (state stage crash before its commit)
        part.applied = 0
        part.process(batch=sc.batch)
    assert flat(pipe_c.totals()) == before
    assert_samples(scrape(pipe_c.totals(), T), expected, "(c) replayed")

    # (d) split across by-user partitions, several input partitions, batches: merged totals
    pipe_d = run(sc, sc.raws, n_parts=sc.n_parts, batch=sc.batch, src_of=sc.src_of)
    assert_samples(scrape(pipe_d.totals(), T), expected, "(d) partitioned")
    assert flat(pipe_d.derived()) == flat(pipe_d.totals())
    summed: dict[SampleKey, float] = {}  # one worker per partition, summed without (instance)
    for totals in pipe_d.totals():
        for key, value in scrape(totals, T).items():
            summed[key] = summed.get(key, 0) + value
    for key, value in summed.items():  # a sum of floats (_sum series) is exact to its rounding only
        if key[0].endswith("_sum") and math.isclose(value, expected.get(key, math.nan), rel_tol=1e-12):
            summed[key] = expected[key]
    assert_samples(summed, expected, "(d) one worker per partition, summed")

    # (e) crashes: the state stage loses its local work at a random point and restarts from what
    # survived, then reads the by-user topic again from its last commit
    rng = random.Random(sc.rng_seed)
    pipe_e = Pipeline(sc.n_parts, sc.now_ns)
    pipe_e.ingest(coords, sc.raws, sc.now_ns, sc.batch)
    for part in pipe_e.parts:
        n = len(part.by_user)
        s = rng.randint(0, n)
        part.process(s, sc.batch)
        store, written, snapshot = part.store.encoded(), len(part.changelog), part.totals.encode()
        part.process(rng.randint(s, n), sc.batch)
        committed = rng.randint(0, s)
        how = rng.randrange(3)
        if how == 0:  # changelog records after s never acknowledged: the store of s, totals derived
            part.crash_and_restore(store, written, committed)
        elif how == 1:  # everything acknowledged, commits lost: the store restored from the changelog
            part.crash_and_restore(part.store.encoded(), len(part.changelog), committed)
        else:  # the disk kept the store of s with its totals snapshot: the changelog tail brought along
            part.restore_from_changelog(snapshot, written, store)
            part.applied = rng.randint(0, part.applied)
        part.process(batch=sc.batch)
    assert_samples(scrape(pipe_e.totals(), T), expected, "(e) crash + restore")
    assert flat(pipe_e.derived()) == flat(pipe_e.totals())


def midnights_after(t_ns: int, days: int) -> list[int]:
    """Scrape times around each of the next `days` UTC midnights after `t_ns` and far beyond them."""
    first = t_ns - t_ns % DAY_NS + DAY_NS
    out = [t_ns]
    for d in range(days):
        m = first + d * DAY_NS
        out += [m - 1, m, m + 1]
    return [*out, first + 29 * DAY_NS, first + 59 * DAY_NS + 1, first + 89 * DAY_NS, first + 200 * DAY_NS]


def check_clock_moves(sc: Any) -> None:
    """No new event, the clocks move on across UTC midnights: every series follows the model at each T.

    The state stage's clock crosses midnight between batches (its totals drop what no period reaches
    any more), the scrapes go on for months, and a restart derives the totals at a later date.
    """
    arrivals = list(enumerate(sc.raws))
    coords = coords_of(sc.src_of)
    pipe = Pipeline(sc.n_parts, sc.now_ns)
    pipe.ingest(coords, sc.raws, sc.now_ns, sc.batch)
    midnight = sc.now_ns - sc.now_ns % DAY_NS + DAY_NS
    for part in pipe.parts:
        part.process(len(part.by_user) // 2, sc.batch)
    pipe.set_state_clock(midnight)  # the rest is applied after the day turn
    pipe.process(sc.batch)
    for t in midnights_after(max(sc.scrape_ns, midnight), 2):
        expected = model.expected_samples(arrivals, sc.now_ns, t)
        # the scrape's clock first (the state stage may not have seen the new date yet), then both
        assert_samples(scrape(pipe.totals(), t), expected, f"T={t}, state stage behind")
        pipe.set_state_clock(t)
        for part in pipe.parts:
            part.totals.advance(part.today)  # the idle state stage at the turn of the day
        assert_samples(scrape(pipe.totals(), t), expected, f"T={t}")
        assert_samples(scrape(pipe.derived(), t), expected, f"derived at T={t}")
