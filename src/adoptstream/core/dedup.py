"""The deduplication memory of hot users: event ids in shard records, keyed apart from the user state.

A user state keeps the event ids of its dedup window itself (`UserState.seen`) up to
`INLINE_SEEN_MAX`; beyond that they move to 2**depth shard records, an id in the one the CRC-32 of
its UTF-8 picks. No record grows without bound whatever one user sends (the broker refuses messages
over ~1 MiB): a shard holds at most `SHARD_SEEN_MAX` ids, and when one would hold more every shard
is split in two (the depth grows by one). A batch rewrites only the shards it touched, so a hot user
also costs less per batch than one record holding all its ids.

A user's records are written in one changelog flush, but a crash can keep some of them and lose
others. Two rules keep the memory exact whatever survives:

* records of a new depth are new keys, written before the user state that names that depth; the old
  depth's records are deleted (tombstones) after it. The state always names a complete depth.
* each id remembers the source coordinates of the message that brought it: an id counts only if the
  user state counts that message as applied (its offset is at most the one the state remembers for
  its input partition). An id in a shard whose user state was lost with its batch counts as new
  when that message is applied again, as it is.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import msgspec

DEDUP_PREFIX = b"d"
INLINE_SEEN_MAX = 256  # ids a user state keeps itself
# ids per shard: 512 of the longest (128 characters, up to 6 bytes each in JSON) stay under 420 kB
SHARD_SEEN_MAX = 512
_SPILL_FILL = SHARD_SEEN_MAX // 4  # a new or split depth leaves room to grow


class SeenId(msgspec.Struct, array_like=True, gc=False):
    """An accepted event id: when it arrived and the message that brought it (-1, -1: applied long ago)."""

    arrival_ms: int
    src_partition: int = -1
    src_offset: int = -1


class SeenShard(msgspec.Struct, array_like=True, gc=False):
    """One shard record of a user's dedup memory."""

    ids: dict[str, SeenId] = {}

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, data: bytes) -> SeenShard:
        return _decode(data)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(SeenShard).decode


Loader = Callable[[bytes], "SeenShard | None"]  # the store's load
Record = tuple[bytes, "bytes | None"]  # a changelog record (None: a deletion)


def shard_key(user_id: str, depth: int, index: int) -> bytes:
    """Store and changelog key of one shard (fixed-width depth and index first: no user id is a prefix)."""
    return DEDUP_PREFIX + depth.to_bytes(1, "big") + index.to_bytes(4, "big") + user_id.encode()


def _index(event_id: str, depth: int) -> int:
    return zlib.crc32(event_id.encode()) & ((1 << depth) - 1)


class SeenShards:
    """One hot user's dedup memory during a batch: the shards it reads, loaded once, and what to write."""

    def __init__(self, user_id: str, depth: int, load: Loader) -> None:
        self.user_id = user_id
        self.depth = depth
        self._old_depth = depth  # the depth the stored user state names
        self._load = load
        self._shards: dict[int, dict[str, SeenId]] = {}
        self._touched: set[int] = set()
        self.latest_ms = 0  # the latest arrival applied in this batch

    @classmethod
    def spill(cls, user_id: str, seen: dict[str, int], load: Loader) -> SeenShards:
        """A user state's own ids moved to shards (they were all applied, or are lost with it)."""
        depth = 1
        while len(seen) > _SPILL_FILL << depth:
            depth += 1
        memory = cls(user_id, depth, load)
        memory._old_depth = 0
        memory._shards = {i: {} for i in range(1 << depth)}
        memory._touched = set(memory._shards)
        for event_id, arrival_ms in seen.items():
            memory._shards[_index(event_id, depth)][event_id] = SeenId(arrival_ms)
        memory.latest_ms = max(seen.values(), default=0)
        return memory

    def _shard(self, index: int) -> dict[str, SeenId]:
        ids = self._shards.get(index)
        if ids is None:
            stored = self._load(shard_key(self.user_id, self.depth, index))
            ids = self._shards[index] = {} if stored is None else stored.ids  # type: ignore[union-attr]
        return ids

    def remembers(self, event_id: str, sources: dict[int, int], src_partition: int, src_offset: int) -> bool:
        """Was `event_id` accepted by a message the user state counts as applied? (`sources` already
        holds the message being applied, at (`src_partition`, `src_offset`).)"""
        seen = self._shard(_index(event_id, self.depth)).get(event_id)
        if seen is None:
            return False
        p, offset = seen.src_partition, seen.src_offset
        if p < 0:
            return True
        return (p, offset) != (src_partition, src_offset) and offset <= sources.get(p, -1)

    def add(self, event_id: str, arrival_ms: int, src_partition: int, src_offset: int) -> None:
        index = _index(event_id, self.depth)
        self._shard(index)[event_id] = SeenId(arrival_ms, src_partition, src_offset)
        self._touched.add(index)
        if arrival_ms > self.latest_ms:
            self.latest_ms = arrival_ms

    def records(self, window_ms: int) -> tuple[list[Record], list[Record]]:
        """The records to write before the user state (which names `self.depth` from now on) and after it.

        Touched shards forget ids that arrived `window_ms` before this batch's latest arrival. When a
        shard would hold more than `SHARD_SEEN_MAX` ids, every shard is laid out again at a greater
        depth (the untouched ones read as they are stored).
        """
        horizon = self.latest_ms - window_ms
        for index in self._touched:
            ids = self._shards[index]
            if any(seen.arrival_ms < horizon for seen in ids.values()):
                self._shards[index] = {k: v for k, v in ids.items() if v.arrival_ms >= horizon}
        if any(len(self._shards[i]) > SHARD_SEEN_MAX for i in self._touched):
            everything: dict[str, SeenId] = {}
            for index in range(1 << self.depth):
                everything.update(self._shard(index))
            everything = {k: v for k, v in everything.items() if v.arrival_ms >= horizon}
            depth = self.depth + 1
            while len(everything) > _SPILL_FILL << depth:
                depth += 1
            while True:  # a depth where no shard is over the limit (the hash may be unlucky)
                shards: dict[int, dict[str, SeenId]] = {i: {} for i in range(1 << depth)}
                for event_id, seen in everything.items():
                    shards[_index(event_id, depth)][event_id] = seen
                if all(len(ids) <= SHARD_SEEN_MAX for ids in shards.values()):
                    break
                depth += 1
            self.depth, self._shards, self._touched = depth, shards, set(shards)
        before = [(shard_key(self.user_id, self.depth, i), self._encoded(i)) for i in sorted(self._touched)]
        return before, self._tombstones()

    def _encoded(self, index: int) -> bytes:
        return SeenShard(self._shards[index]).encode()

    def _tombstones(self) -> list[Record]:
        """Deletions of the stored depth's shards once the user state names another depth."""
        if self._old_depth in (0, self.depth):
            return []
        return [(shard_key(self.user_id, self._old_depth, i), None) for i in range(1 << self._old_depth)]
