"""The worker's garbage-collection policy: young collections between batches, not in the middle."""

from __future__ import annotations

import gc

from adoptstream.runtime.worker import YOUNG_COLLECTION_OBJECTS, collect_between_batches


def test_young_collection_runs_between_batches_once_due() -> None:
    saved = gc.get_threshold()
    gc.set_threshold(10 * YOUNG_COLLECTION_OBJECTS, 50, 100)  # as tune_gc: the automatic one far off
    try:
        gc.collect()
        collected: list[int] = []
        gc.callbacks.append(
            lambda phase, info: collected.append(info["generation"]) if phase == "stop" else 0
        )
        few = [[] for _ in range(YOUNG_COLLECTION_OBJECTS // 2)]
        collect_between_batches()
        assert collected == []  # not due yet
        many = [[] for _ in range(YOUNG_COLLECTION_OBJECTS)]
        collect_between_batches()
        assert collected == [0]
        assert gc.get_count()[0] < YOUNG_COLLECTION_OBJECTS
        del few, many
    finally:
        gc.callbacks.pop()
        gc.set_threshold(*saved)
