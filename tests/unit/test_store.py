"""RocksStore durability without a write-ahead log: what a killed process leaves on disk."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("rocksdict")

from adoptstream.core.state import UserState
from adoptstream.runtime.store import RocksStore, user_key


def _write_and_die(path: str, flush_interval_s: float, idle: bool) -> None:
    store = RocksStore(Path(path), flush_interval_s=flush_interval_s)
    state = UserState(accepted=1)
    for offset in range(3):  # as the state stage does: a save, then a flush if one is due
        store.save([user_key(f"u{offset}")], [state.encode()], offset)
        store.maybe_flush()
    if idle:  # the interval has passed with no more writes: the worker's idle tick flushes
        store._flush_at = 0.0
        store.maybe_flush()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(  # the background flushes the store asked for, if any
        store._db.property_int_value(p)
        for p in ("rocksdb.mem-table-flush-pending", "rocksdb.num-running-flushes")
    ):
        time.sleep(0.01)  # poll until the flushes finish or the deadline
    os._exit(0)  # no close(): like SIGKILL, memtables are not flushed


@pytest.mark.parametrize(
    ("interval_s", "idle", "expected"), [(0.0, False, 2), (3600.0, False, -1), (3600.0, True, 2)]
)
def test_periodic_flush_bounds_what_a_crash_loses(
    tmp_path: Path, interval_s: float, idle: bool, expected: int
) -> None:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_write_and_die, args=(str(tmp_path / "db"), interval_s, idle))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    store = RocksStore(tmp_path / "db")
    try:
        # the offset key is written in the same batch as the values: a consistent older state or none
        assert store.changelog_offset == expected
        assert (store.load(user_key("u2")) is not None) == (expected == 2)
    finally:
        store.close()


def test_reads_and_full_scan_span_memtables_and_files(tmp_path: Path) -> None:
    """Point reads and `states()` see every key, whether in a (hash) memtable or a flushed file.

    Keys longer than the 128 bytes RocksDB hashes share a bucket and must still be told apart.
    """
    long_prefix = "x" * 200
    ids = [f"u{i}" for i in range(500)] + [f"{long_prefix}{i}" for i in range(50)]
    store = RocksStore(tmp_path / "db")
    try:
        expected: dict[bytes, int] = {}
        for round_, chunk in enumerate((ids[:300], ids[200:])):  # overlap: later values win
            keys = [user_key(i) for i in chunk]
            states = [UserState(accepted=round_ * 1000 + n) for n in range(len(chunk))]
            store.save(keys, [s.encode() for s in states], round_)
            expected.update((k, s.accepted) for k, s in zip(keys, states, strict=True))
            if round_ == 0:
                store._db.flush()  # the first round goes to a file, the second stays in memory
        assert {key: state.accepted for key, state in store.states()} == expected
        for key, accepted in expected.items():
            state = store.load(key)
            assert state is not None and state.accepted == accepted
        assert store.load(user_key(long_prefix)) is None
        assert store.load(user_key("u500")) is None
    finally:
        store.close()
    reopened = RocksStore(tmp_path / "db")
    try:
        assert reopened.changelog_offset == 1
        assert {key: state.accepted for key, state in reopened.states()} == expected
    finally:
        reopened.close()


