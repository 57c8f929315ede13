"""Batched produce: records go into one aiokafka batch per (topic, partition), one await per flush."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

Headers = Sequence[tuple[str, bytes]]
_NO_HEADERS: list[tuple[str, bytes]] = []  # read only: aiokafka iterates it


@dataclass(slots=True)
class SentBatch:
    """Where one flushed batch landed: its first offset and record count."""

    topic: str
    partition: int
    base_offset: int
    count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.count - 1


class BatchSender:
    """Collects records per (topic, partition) into aiokafka batches; `flush` sends and waits for all acks.

    `append` is synchronous (no await per record); full batches wait in memory until `flush`.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], list] = {}  # slot -> [batch, count]
        self._full: list[tuple[str, int, object, int]] = []

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
    ) -> None:
        """Add one record; `timestamp_ms` is its CreateTime (None: the clock now)."""
        entry = self._slot(topic, partition)
        hdrs = list(headers) if headers else _NO_HEADERS
        if entry[0].append(key=key, value=value, timestamp=timestamp_ms, headers=hdrs) is None:
            self._roll_over(topic, partition, entry, value)
            if entry[0].append(key=key, value=value, timestamp=timestamp_ms, headers=hdrs) is None:
                raise ValueError(f"record of {len(value or b'')} bytes is larger than the batch size")
        entry[1] += 1

    def extend(self, topic: str, partition: int, keys: list[bytes], values: list[bytes]) -> None:
        """Add records without headers, `keys[i]` with `values[i]`, stamped now (the changelog's hot path)."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        entry = self._slot(topic, partition)
        batch, count = entry
        append = batch.append
        for key, value in zip(keys, values, strict=False):  # lengths checked above
            if append(key=key, value=value, timestamp=None, headers=_NO_HEADERS) is None:
                entry[1] = count
                self._roll_over(topic, partition, entry, value)
                batch, count = entry
                append = batch.append
                if append(key=key, value=value, timestamp=None, headers=_NO_HEADERS) is None:
                    raise ValueError(f"record of {len(value)} bytes is larger than the batch size")
            count += 1
        entry[1] = count

    def _slot(self, topic: str, partition: int) -> list:
        slot = (topic, partition)
        entry = self._open.get(slot)
        if entry is None:
            entry = self._open[slot] = [self._producer.create_batch(), 0]
        return entry

    def _roll_over(self, topic: str, partition: int, entry: list, value: bytes | None) -> None:
        """The open batch of a slot is full: queue it and open a new one."""
        if entry[1] == 0:
            raise ValueError(f"record of {len(value or b'')} bytes does not fit in an empty batch")
        self._full.append((topic, partition, entry[0], entry[1]))
        entry[0], entry[1] = self._producer.create_batch(), 0

    async def flush(self) -> list[SentBatch]:
        """Send every collected batch and wait until the broker acknowledged all of them."""
        ready = self._full + [(t, p, b, n) for (t, p), (b, n) in self._open.items()]
        self._full, self._open = [], {}
        if not ready:
            return []
        futures = [await self._producer.send_batch(b, t, partition=p) for t, p, b, _ in ready]
        metas = await asyncio.gather(*futures)
        return [SentBatch(t, p, m.offset, n) for (t, p, _, n), m in zip(ready, metas, strict=True)]

    def discard(self) -> None:
        """Drop what was collected (after a failure the input batch is read again)."""
        self._full, self._open = [], {}
