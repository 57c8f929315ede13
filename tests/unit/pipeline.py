"""The worker's two stages in-process, without Kafka: the real stage functions around in-memory topics.

`Pipeline` drives `ingest.route`, `records.packs`/`unpack`, `processor.apply_batch`, the real stores,
`derive_totals` and `replace_in_totals` exactly as `Ingest.process` and `StateProcessor` do around their
I/O: only the topics are lists. Crashes and restarts are modelled by what survives them (the store's
encoded values, the changelog, a totals snapshot), never by copying live objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from adoptstream.core.totals import AdoptionTotals
from adoptstream.exposition.collector import AdoptionCollector
from adoptstream.runtime import records
from adoptstream.runtime.ingest import route
from adoptstream.runtime.processor import apply_batch, derive_totals, replace_in_totals
from adoptstream.runtime.store import MemoryStore

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Partition:
    """One by-user partition: its topic, its changelog, its store and the totals derived from it."""

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
            end = min(start + batch, stop)
            applied = apply_batch(self.store, self.totals, [(None, v) for v in self.by_user[start:end]])
            self.changelog.extend(zip(applied.keys, applied.values, strict=True))
            self.store.save(applied.keys, applied.values, len(self.changelog) - 1)
            self.applied = end

    def crash_and_restore(self, store: dict[bytes, bytes], changelog_len: int, committed: int) -> None:
        """A restart from a store holding `store` (as of changelog offset `changelog_len` - 1): the
        totals derived from it, the changelog tail after it brought along, the state stage resuming
        at by-user offset `committed`. What the crash lost is gone."""
        del self.changelog[changelog_len:]  # changelog records never acknowledged
        self.store = MemoryStore()
        self.store.save_raw(dict(store), changelog_len - 1)
        self.totals = derive_totals(self.store)
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


class Pipeline:
    """Ingest and state stage over `n` by-user partitions."""

    def __init__(self, n: int = 1) -> None:
        self.n = n
        self.parts = [Partition() for _ in range(n)]

    def ingest(
        self, coords: Sequence[tuple[int, int]], raws: Sequence[bytes | None], now_ns: int, batch: int = 1
    ) -> None:
        """Route input messages (at (input partition, offset) `coords`), `batch` at a time."""
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

    def merged(self) -> AdoptionTotals:
        merged = AdoptionTotals()
        for part in self.parts:
            merged.merge(part.totals)
        return merged

    def derived(self) -> AdoptionTotals:
        """The totals of every stored state, from scratch (what a restart of every worker derives)."""
        merged = AdoptionTotals()
        for part in self.parts:
            merged.merge(derive_totals(part.store))
        return merged


def coords_of(src_of: Sequence[int]) -> list[tuple[int, int]]:
    """(input partition, offset) of every arrival: offsets count up per input partition."""
    nxt: dict[int, int] = {}
    out = []
    for p in src_of:
        out.append((p, nxt.get(p, 0)))
        nxt[p] = nxt.get(p, 0) + 1
    return out


class _Source:
    def __init__(self, totals: AdoptionTotals) -> None:
        self._totals = totals

    def merged_totals(self) -> AdoptionTotals:
        return self._totals


def scrape(totals: AdoptionTotals, scrape_ns: int) -> dict[SampleKey, float]:
    """Every sample the contract collectors export for `totals` at T (no label caps in reach)."""
    registry = CollectorRegistry()
    registry.register(AdoptionCollector(_Source(totals), 10**6, 10**6, clock_ns=lambda: scrape_ns))
    out: dict[SampleKey, float] = {}
    for family in registry.collect():
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"sample exported twice: {key}"
            out[key] = s.value
    return out


def assert_samples(got: dict[SampleKey, float], expected: dict[SampleKey, float], what: str) -> None:
    if got == expected:
        return
    diff = {
        k: (got.get(k), expected.get(k))
        for k in sorted(set(got) | set(expected))
        if got.get(k) != expected.get(k)
    }
    raise AssertionError(f"{what}: (implementation, model) differ on {len(diff)} samples: {diff}")


def same_totals(a: AdoptionTotals, b: AdoptionTotals) -> bool:
    """Equal counts, where a count of zero and no entry are the same (as for an exporter)."""
    return AdoptionTotals.decode(a.encode()) == AdoptionTotals.decode(b.encode())
