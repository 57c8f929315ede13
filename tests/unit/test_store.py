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
    for offset in range(3):
        store.save([user_key(f"u{offset}")], [state], [state.encode()], offset)
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
