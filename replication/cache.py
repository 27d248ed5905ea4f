"""The exactly-once reply cache: part of the replicated state, so it travels with state transfer.

Why every replica keeps it, not only the one that answered: a client whose replica dies retries at
another one with the same request id, and that replica must answer from the cache rather than run
the update a second time. Pruning is driven by the client's `done` watermark, which arrives inside
the ordered invocation, so every replica prunes at the same point and caches stay identical.

Why a cap per client: a client that never advances `done` (a stuck call it never gives up, or a
client that does not number its requests like `GroupProxy` does) would otherwise grow its entries
without bound, in every snapshot and state digest. So `store` keeps at most `MAX_ENTRIES` entries
and `MAX_BYTES` of result bodies per client, evicting that client's oldest stored entries first
(the newest entry always stays, however large). Eviction depends only on the sequence of ordered
invocations (no clocks, no randomness), so every replica evicts the same entries. An evicted
request is remembered by a per-client eviction watermark (the highest evicted request id): a retry
at or below it is STALE, as if the client had reported it done, and is never executed again. The
watermark travels in `dump`/`load`, so a joiner's cache (and state digest) equals its donor's.
"""

from __future__ import annotations

from typing import Any

Entry = tuple[int, bytes]  # (status, encoded result or exception)


class ReplyCache:
    #: clients remembered at most; the least recently active is forgotten first (deterministically,
    #: since activity is counted in ordered invocations)
    MAX_CLIENTS = 100_000
    #: entries kept per client above its `done` watermark; beyond it the oldest stored is evicted
    #: and a retry of it answers STALE. A well-behaved client has far fewer calls outstanding.
    MAX_ENTRIES = 1_000
    #: bytes of result bodies kept per client (1 MiB); the oldest entries are evicted beyond it,
    #: except the newest one, which is kept even when it alone is larger
    MAX_BYTES = 1 << 20

    def __init__(self) -> None:
        self.entries: dict[bytes, dict[int, Entry]] = {}
        self.done: dict[bytes, int] = {}
        #: per client: the highest request id evicted by the cap (absent: none evicted)
        self.evicted: dict[bytes, int] = {}
        self._bytes: dict[bytes, int] = {}  # per client: len of the cached bodies (derived)

    def get(self, cid: bytes, rid: int) -> Entry | None:
        per = self.entries.get(cid)
        return per.get(rid) if per else None

    def is_stale(self, cid: bytes, rid: int) -> bool:
        """Completed (or evicted by the cap) and already forgotten: executing it now could be a
        second execution."""
        upto = max(self.done.get(cid, 0), self.evicted.get(cid, 0))
        return rid <= upto and self.get(cid, rid) is None

    def forget_upto(self, cid: bytes, done: int) -> None:
        if done <= self.done.get(cid, 0):
            return
        self.done[cid] = done
        per = self.entries.get(cid)
        if per:
            freed = 0
            for rid in [r for r in per if r <= done]:
                freed += len(per.pop(rid)[1])
            if freed:
                self._bytes[cid] -= freed

    def store(self, cid: bytes, rid: int, entry: Entry) -> None:
        per = self.entries.pop(cid, None)
        if per is None:
            per = {}
            if len(self.entries) >= self.MAX_CLIENTS:
                oldest = next(iter(self.entries))
                del self.entries[oldest]
                self.done.pop(oldest, None)
                self.evicted.pop(oldest, None)
                self._bytes.pop(oldest, None)
        old = per.pop(rid, None)
        size = self._bytes.get(cid, 0) + len(entry[1]) - (len(old[1]) if old else 0)
        per[rid] = entry
        while len(per) > 1 and (len(per) > self.MAX_ENTRIES or size > self.MAX_BYTES):
            gone = next(iter(per))  # the oldest stored: the same at every replica
            size -= len(per.pop(gone)[1])
            if gone > self.evicted.get(cid, 0):
                self.evicted[cid] = gone
        self._bytes[cid] = size
        self.entries[cid] = per  # re-inserted last: most recently active

    def __len__(self) -> int:
        return sum(len(p) for p in self.entries.values())

    def size(self, cid: bytes) -> int:
        """Bytes of result bodies cached for `cid`."""
        return self._bytes.get(cid, 0)

    def dump(self) -> list[Any]:
        """Rows [cid, done, items, listed] plus [evicted] when the cap evicted any of the client's
        entries (so caches that never hit the cap dump as before); `listed` keeps a client whose
        entries were all pruned in the LRU order, so a joiner's cache (and state digest) equals its
        donor's."""
        ev = self.evicted
        rows = [
            [cid, self.done.get(cid, 0), [[rid, s, b] for rid, (s, b) in per.items()], True]
            for cid, per in self.entries.items()
        ]
        rows += [[cid, d, [], False] for cid, d in self.done.items() if cid not in self.entries]
        if ev:
            for row in rows:
                if row[0] in ev:
                    row.append(ev[row[0]])
        return rows

    @classmethod
    def load(cls, data: list[Any]) -> ReplyCache:
        cache = cls()
        for row in data:
            cid, done, items, listed = row[:4]
            evicted = row[4] if len(row) > 4 else 0  # rows dumped before the cap had 4 fields
            if done:
                cache.done[cid] = done
            if evicted:
                cache.evicted[cid] = evicted
            if listed:
                per = {rid: (s, b) for rid, s, b in items}
                cache.entries[cid] = per
                cache._bytes[cid] = sum(len(b) for _s, b in per.values())
        return cache
