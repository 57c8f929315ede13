"""Local state stores of one by-user partition: RocksDB (durable, default) or memory.

A store holds user and source states plus the changelog offset it reflects. It is only written
after the changelog has acknowledged the same values, so it is never ahead of the changelog:
restoring reads the changelog from `changelog_offset + 1` to its end.

A RocksDB store also keeps a snapshot of its partition's totals, written just before each of its
memtable flushes (and at close) together with the offset it matches. After a restart on the same disk
the totals come from there plus the changelog tail, instead of from decoding every state again.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from adoptstream.core.dedup import DEDUP_PREFIX, SeenShard
from adoptstream.core.state import SourceOutcomes, UserState, UserSummary, decode_summary
from adoptstream.core.totals import AdoptionTotals

State = UserState | SourceOutcomes | SeenShard
USER_PREFIX = b"u"
SOURCE_PREFIX = b"s"
# DEDUP_PREFIX (b"d"): shard records of hot users' dedup memory (core.dedup)
META_PREFIX = b"\x00"  # keys that are not states
_OFFSET_KEY = META_PREFIX + b"changelog-offset"
_TOTALS_KEY = META_PREFIX + b"totals"
CHANGELOG_ID_KEY = META_PREFIX + b"changelog-id"  # the id of the changelog topic the store mirrors
MAX_KEY_BYTES = 128  # the prefix of a key that RocksDB hashes (its limit; user ids are mostly shorter)
MEMTABLE_BUCKETS = 200_000  # about the entries of one 64 MB memtable of user states
WRITE_BUFFER_BYTES = 64 << 20  # RocksDB's default memtable size, set explicitly
FLUSH_AT_BYTES = 48 << 20  # flush (with a totals snapshot) before RocksDB would do it on its own
IDLE_FLUSH_AFTER_S = 5.0  # an idle store flushes once this long after its last flush
_MEMTABLE_BYTES = "rocksdb.cur-size-active-mem-table"  # the RocksDB property FLUSH_AT_BYTES compares
_BACKGROUND_ERRORS = "rocksdb.background-errors"  # failed flushes and compactions so far
_PROBE_KEY = META_PREFIX + b"probe"
Snapshot = Callable[[], bytes]  # the partition's encoded totals, matching the store's states now
_NO_TOTALS = AdoptionTotals().encode()


def user_key(user_id: str) -> bytes:
    return USER_PREFIX + user_id.encode()


def source_key(src_partition: int) -> bytes:
    return SOURCE_PREFIX + str(src_partition).encode()


def is_store_error(exc: BaseException) -> bool:
    """True for an error of the local store: the disk full or unwritable, a file missing or corrupt.

    rocksdict raises plain `Exception`s: RocksDB's failures carry its status text, the file system's
    (creating the store's directory) Rust's "... (os error N)".
    """
    if isinstance(exc, OSError):
        return True
    text = str(exc)
    return type(exc) is Exception and (
        text.startswith(("IO error", "Corruption", "Invalid argument")) or "(os error " in text
    )


def decode_state(key: bytes, value: bytes) -> State:
    """Decode a stored value by its key's kind."""
    kind = key[:1]
    if kind == USER_PREFIX:
        return UserState.decode(value)
    if kind == DEDUP_PREFIX:
        return SeenShard.decode(value)
    return SourceOutcomes.decode(value)


def decode_for_totals(key: bytes, value: bytes) -> State | UserSummary:
    """Decode a stored value as far as the totals read it (user states without their dedup map)."""
    if key[:1] == USER_PREFIX:
        return decode_summary(value)
    return SourceOutcomes.decode(value)


class PartitionStore(Protocol):
    """Storage of one partition's states."""

    changelog_offset: int

    def load(self, key: bytes) -> State | None: ...

    def save(self, keys: list[bytes], values: list[bytes | None], changelog_offset: int) -> None:
        """Write `values[i]` at `keys[i]` (None: delete it) with the changelog offset they reflect."""

    def save_raw(self, values: dict[bytes, bytes | None], changelog_offset: int) -> None: ...

    def states(self) -> Iterator[tuple[bytes, State]]: ...

    def summaries(self) -> Iterator[tuple[bytes, State | UserSummary]]:
        """The states the totals read (users and sources), decoded as far as they read them."""

    def totals_snapshot(self) -> bytes | None: ...

    def meta(self, key: bytes) -> bytes | None: ...

    def set_meta(self, key: bytes, value: bytes) -> None: ...

    def maybe_flush(self, totals: Snapshot | None = None, idle: bool = False) -> None: ...

    def close(self, totals: Snapshot | None = None, flush: bool = True) -> None: ...


class MemoryStore:
    """Encoded states in a dict, like RocksDB holds them: rebuilt from the changelog on every assignment."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._meta: dict[bytes, bytes] = {}
        self.changelog_offset = -1

    def load(self, key: bytes) -> State | None:
        value = self._data.get(key)
        return None if value is None else decode_state(key, value)

    def save(self, keys: list[bytes], values: list[bytes | None], changelog_offset: int) -> None:
        data = self._data
        for key, value in zip(keys, values, strict=True):
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self.changelog_offset = changelog_offset

    def save_raw(self, values: dict[bytes, bytes | None], changelog_offset: int) -> None:
        self.save(list(values), list(values.values()), changelog_offset)

    def states(self) -> Iterator[tuple[bytes, State]]:
        return ((key, decode_state(key, value)) for key, value in list(self._data.items()))

    def summaries(self) -> Iterator[tuple[bytes, State | UserSummary]]:
        return (
            (key, decode_for_totals(key, value))
            for key, value in list(self._data.items())
            if key[:1] != DEDUP_PREFIX
        )

    def encoded(self) -> dict[bytes, bytes]:
        """Every stored value as it is (what a restart from the changelog would read)."""
        return dict(self._data)

    def totals_snapshot(self) -> bytes | None:
        return None  # nothing survives the process: the totals are derived from the states

    def meta(self, key: bytes) -> bytes | None:
        return self._meta.get(key)

    def set_meta(self, key: bytes, value: bytes) -> None:
        self._meta[key] = value

    def maybe_flush(self, totals: Snapshot | None = None, idle: bool = False) -> None:
        return None

    def close(self, totals: Snapshot | None = None, flush: bool = True) -> None:
        self._data.clear()


class RocksStore:
    """RocksDB (rocksdict) on local disk: survives restarts, so restore reads only the changelog tail.

    No decoded states are kept between batches: a cache of them (100k per partition) cost more than
    it saved. Its states outlived every batch, so each young garbage collection walked them (6 ms per
    collection, 4-5% of the worker on `make bench`'s data, where 83% of a batch's users are new), and
    it held ~1.6 GB at 1M users. A returning user's value is in a memtable or the block cache anyway,
    and decoding it costs about 1.5 µs.
    """

    def __init__(self, path: Path, flush_interval_s: float = 30.0) -> None:
        self._flush_interval_s = flush_interval_s
        self._flushed_at = time.monotonic()
        self._flush_at = self._flushed_at + flush_interval_s
        self._dirty = False
        from rocksdict import (
            BlockBasedOptions,
            MemtableFactory,
            Options,
            Rdict,
            ReadOptions,
            SliceTransform,
            WriteOptions,
        )

        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)  # a new user's lookup rarely touches the disk
        options.set_block_based_table_factory(table)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        # Memtables are hash tables of whole keys: the hot path only reads and writes single keys, and
        # an insert costs less than half of one into the default skip list (~1.5 against ~3.4 µs at
        # 150k entries). The sorting moves to the flush, in RocksDB's background thread (~5 against
        # ~1 µs per key), and to `states()`, the only full scan (total order). On the main thread,
        # which limits the worker, that is the better trade (bench/RESULTS.md, section 6).
        options.set_prefix_extractor(SliceTransform.create_max_len_prefix(MAX_KEY_BYTES))
        options.set_allow_concurrent_memtable_write(False)  # hash memtables need one writer
        options.set_memtable_factory(MemtableFactory.hash_link_list(MEMTABLE_BUCKETS))
        # ... and a bloom filter in front of them: a new user's lookup searches no bucket at all
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
        self._scan = ReadOptions()
        self._scan.set_total_order_seek(True)
        self._db = Rdict(str(path), options)
        # No write-ahead log: every value is in the changelog first, and the offset key is written in
        # the same atomic batch, so after a crash the store is an older consistent state and
        # restoring reads the changelog from there.
        self._write_options = WriteOptions()
        self._write_options.disable_wal = True
        raw = self._db.get(_OFFSET_KEY)
        self.changelog_offset = int(raw) if raw is not None else -1
        self._background_errors = self._db.property_int_value(_BACKGROUND_ERRORS)

    def load(self, key: bytes) -> State | None:
        raw = self._db.get(key)
        return None if raw is None else decode_state(key, raw)

    def save(self, keys: list[bytes], values: list[bytes | None], changelog_offset: int) -> None:
        self._write(zip(keys, values, strict=True), changelog_offset)

    def save_raw(self, values: dict[bytes, bytes | None], changelog_offset: int) -> None:
        self._write(values.items(), changelog_offset)

    def _write(self, values: Iterable[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        """Values (None: a deletion) and the changelog offset they reflect, in one atomic batch."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for key, value in values:
            if value is None:
                delete(key)
            else:
                put(key, value)
        put(_OFFSET_KEY, str(changelog_offset).encode())
        self._db.write(batch, self._write_options)
        self.changelog_offset = changelog_offset
        self._dirty = True

    def maybe_flush(self, totals: Snapshot | None = None, idle: bool = False) -> None:
        """Flush memtables when the flush interval has passed (or they fill up) and there are writes;
        when `idle`, already `IDLE_FLUSH_AFTER_S` after the last flush.

        Without a WAL, what is only in memtables is gone after a crash (and comes back from the
        changelog); a flush now and then bounds that tail for a restart on the same disk. `totals`,
        when given, is written as the snapshot of this offset first, so the flushed files hold both.
        Flushing before the memtable is full means RocksDB rarely flushes on its own, between two
        snapshots; when it does, the snapshot no longer matches the offset and is not used.
        """
        if idle:
            self._check_background_errors()
        if not self._dirty:
            return
        now = time.monotonic()
        if (
            now < self._flush_at
            and not (idle and now >= self._flushed_at + IDLE_FLUSH_AFTER_S)
            and self._db.property_int_value(_MEMTABLE_BYTES) < FLUSH_AT_BYTES
        ):
            return
        self._flush(totals, wait=False)  # in RocksDB's background thread
        self._flushed_at = now
        self._flush_at = now + self._flush_interval_s

    def _check_background_errors(self) -> None:
        """A flush in RocksDB's thread that failed (a full disk) only shows in a counter, and in the
        writes that follow: write, so that the error is raised now, with RocksDB's own reason."""
        if self._db.property_int_value(_BACKGROUND_ERRORS) > self._background_errors:
            self._db.put(_PROBE_KEY, b"", self._write_options)
            self._background_errors = self._db.property_int_value(_BACKGROUND_ERRORS)  # recovered

    def _flush(self, totals: Snapshot | None, wait: bool) -> None:
        if totals is not None:
            self._db.put(_TOTALS_KEY, b"%d " % self.changelog_offset + totals(), self._write_options)
        self._db.flush(wait)
        self._dirty = False

    def totals_snapshot(self) -> bytes | None:
        """The encoded totals of the stored states, if the last snapshot matches them.

        An empty store's are zero: its restore then brings them along the changelog, with no scan of
        every state after it.
        """
        if self.changelog_offset < 0:
            return _NO_TOTALS
        raw = self._db.get(_TOTALS_KEY)
        if raw is None:
            return None
        offset, _, blob = raw.partition(b" ")
        return blob if int(offset) == self.changelog_offset else None

    def states(self) -> Iterator[tuple[bytes, State]]:
        return ((key, decode_state(key, value)) for key, value in self._stored())

    def summaries(self) -> Iterator[tuple[bytes, State | UserSummary]]:
        """Every stored state the totals read (not dedup shards), decoded only as far as they read it."""
        return (
            (key, decode_for_totals(key, value)) for key, value in self._stored() if key[:1] != DEDUP_PREFIX
        )

    def _stored(self) -> Iterator[tuple[bytes, bytes]]:
        return ((k, v) for k, v in self._db.items(read_opt=self._scan) if k[:1] != META_PREFIX)

    def meta(self, key: bytes) -> bytes | None:
        """A value kept next to the states (its key starts with META_PREFIX)."""
        return self._db.get(key)

    def set_meta(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value, self._write_options)
        self._dirty = True

    def close(self, totals: Snapshot | None = None, flush: bool = True) -> None:
        """Flush (without a WAL, unflushed memtables would have to come from the changelog) and close.

        Closed even when the flush fails: what it held comes back from the changelog. When `flush` is
        false (the disk failed) it is closed in a thread of its own: without a WAL RocksDB flushes at
        close anyway, and on a failing disk it retries for a second first.
        """
        if not flush:
            threading.Thread(target=self._close_quietly, name=f"close-{self._path.name}", daemon=True).start()
            return
        try:
            self._flush(totals, wait=True)
        finally:
            self._db.close()

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):  # nothing only it holds: the changelog has it all
            self._db.close()


def open_store(kind: str, state_dir: Path, partition: int) -> PartitionStore:
    """A store for one by-user partition."""
    if kind == "memory":
        return MemoryStore()
    return RocksStore(_store_path(state_dir, partition))


def discard_store(kind: str, state_dir: Path, partition: int) -> None:
    """Delete a (closed) store's files."""
    if kind != "memory":
        shutil.rmtree(_store_path(state_dir, partition), ignore_errors=True)


def _store_path(state_dir: Path, partition: int) -> Path:
    return state_dir / f"p{partition:04d}"
