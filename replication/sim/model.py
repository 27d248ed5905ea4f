"""The replicated class the simulated worlds run: a large state that costs no memory, and updates
that the checker can find again.

Why a notional size: the cascade this package reproduces needs a 400 MiB state, and a sweep runs
hundreds of worlds. `Bulk` keeps `blocks` as small tokens (one int per block) and declares through
`sim_size()` that each stands for `BLOCK` bytes; the cost model (`cohort.replication.sim.world.Cost`)
charges snapshots, installs and methods by that size, so virtual time behaves as if the bytes
were there while the real transfer stays a few KiB.

Why `counts`: every update carries its id (`cid:rid`, chosen by the simulated client) and bumps
its count in the replicated state, so the checker reads off each replica which acknowledged
updates it reflects (R-lost) and whether any ran twice (R-once).
"""

from __future__ import annotations

from cohort.replication.api import query, replicated

MiB = 1 << 20
#: notional bytes per block of `Bulk.blocks`
BLOCK = MiB


@replicated
class Bulk:
    def __init__(self) -> None:
        self.blocks: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def fill(self, start: int, count: int) -> int:
        """Add blocks `start`..`start + count - 1` (notional `BLOCK` bytes each)."""
        for i in range(start, start + count):
            self.blocks[f"b{i}"] = i
        return len(self.blocks)

    def add(self, uid: str) -> int:
        """Apply update `uid` (its count says how many times it ran here)."""
        self.counts[uid] = self.counts.get(uid, 0) + 1
        return len(self.counts)

    @query
    def size(self) -> int:
        return len(self.blocks)

    def sim_size(self) -> int:
        """Notional size of the state in bytes: what the cost model charges a snapshot for."""
        return len(self.blocks) * BLOCK + 64 * len(self.counts)
