"""The exactly-once reply cache: part of the replicated state, so it travels with state transfer.

Why every replica keeps it, not only the one that answered: a client whose replica dies retries at
another one with the same request id, and that replica must answer from the cache rather than run
the update a second time. Pruning is driven by the client's `done` watermark, which arrives inside
the ordered invocation, so every replica prunes at the same point and caches stay identical.
"""

from __future__ import annotations

from typing import Any

Entry = tuple[int, bytes]  # (status, encoded result or exception)


class ReplyCache:
    #: clients remembered at most; the least recently active is forgotten first (deterministically,
    #: since activity is counted in ordered invocations)
    MAX_CLIENTS = 100_000

    def __init__(self) -> None:
        self.entries: dict[bytes, dict[int, Entry]] = {}
        self.done: dict[bytes, int] = {}

    def get(self, cid: bytes, rid: int) -> Entry | None:
        per = self.entries.get(cid)
        return per.get(rid) if per else None

    def is_stale(self, cid: bytes, rid: int) -> bool:
        """Completed and already forgotten: executing it now would be a second execution."""
        return rid <= self.done.get(cid, 0) and self.get(cid, rid) is None

    def forget_upto(self, cid: bytes, done: int) -> None:
        if done <= self.done.get(cid, 0):
            return
        self.done[cid] = done
        per = self.entries.get(cid)
        if per:
            for rid in [r for r in per if r <= done]:
                del per[rid]

    def store(self, cid: bytes, rid: int, entry: Entry) -> None:
        per = self.entries.pop(cid, None)
        if per is None:
            per = {}
            if len(self.entries) >= self.MAX_CLIENTS:
                oldest = next(iter(self.entries))
                del self.entries[oldest]
                self.done.pop(oldest, None)
        per[rid] = entry
        self.entries[cid] = per  # re-inserted last: most recently active

    def __len__(self) -> int:
        return sum(len(p) for p in self.entries.values())

    def dump(self) -> list[Any]:
        """Rows [cid, done, items, listed]; `listed` keeps a client whose entries were all pruned
        in the LRU order, so a joiner's cache (and state digest) equals its donor's."""
        rows = [
            [cid, self.done.get(cid, 0), [[rid, s, b] for rid, (s, b) in per.items()], True]
            for cid, per in self.entries.items()
        ]
        rows += [[cid, d, [], False] for cid, d in self.done.items() if cid not in self.entries]
        return rows

    @classmethod
    def load(cls, data: list[Any]) -> ReplyCache:
        cache = cls()
        for cid, done, items, listed in data:
            if done:
                cache.done[cid] = done
            if listed:
                cache.entries[cid] = {rid: (s, b) for rid, s, b in items}
        return cache
