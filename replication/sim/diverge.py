"""The divergence checks in the simulated world: hashing off the core, corruption, leaving.

Why: the checks are a protocol (cuts at agreed positions, digests cast in total order, decisions
at a report), and their bugs show only in interleavings: a digest that comes back after the
replica applied more updates, a report delivered after a view change, a resync racing a join.
The world runs the real `Checker` with a driver like `Replica`'s:

- `hasher(core)`: a cut is hashed later in virtual time (a delay drawn per cut from the world's
  `hash_rng`, as the replica's hashing thread runs behind the core), and the digest goes back to
  the core as an input. The digest is computed when the delay ends, from what the engine handed
  over, so an engine that hands over the live state instead of a cut is caught.
- `corrupt(world, addr)`: changes one replica's state behind the order's back (what a
  nondeterministic method or a mutating query does), as an input of its core; recorded in
  `world.corrupted` for the checker (`cohort.replication.sim.check`: R-diverge, R-equal).
- `leaver(core)`: on_divergence="stop": the member leaves the group and does not rejoin.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cohort.replication.divergence import Hasher, Policy
from cohort.state.stream import LeafDigests

if TYPE_CHECKING:
    from cohort.replication.sim.world import Core, ReplicaWorld

__all__ = ["CHECKS", "HASH_DELAY", "Policy", "setup", "driver", "corrupt"]

#: the simulated worlds' checks: often, so that a sweep compares many positions
CHECKS = Policy(every=5, interval=0.5)
#: virtual seconds between a cut and its digest reaching the core (uniform)
HASH_DELAY = (0.001, 0.05)


def setup(world: ReplicaWorld, checks: Policy) -> None:
    """The world's side: its engines' policy, the hashing delays' generator, what happened."""
    world.checks = checks
    world.hash_rng = random.Random(world.seed * 31 + 13)
    world.corrupted: list[tuple[float, str]] = []  # (time, replica): see `corrupt`
    world.stopped: set[str] = set()  # replicas that left on divergence: they do not rejoin


def driver(core: Core) -> dict[str, Any]:
    """The engine's divergence arguments for one member's core."""
    return {"policy": core.world.checks, "hasher": hasher(core), "leave": leaver(core)}


def hasher(core: Core) -> Hasher:
    memo = LeafDigests()

    def hash_later(frozen: Any, done: Callable[[str | None], None]) -> None:
        w = core.world

        def finished() -> None:
            if not core.dead:
                core.post(done, memo.digest(frozen))
                core.pump()

        w.sim.at(w.sim.now + w.hash_rng.uniform(*HASH_DELAY), finished)

    return hash_later


def leaver(core: Core) -> Callable[[str], None]:
    def leave(reason: str) -> None:
        w = core.world
        w.stopped.add(core.addr)
        w.notes.append(f"{w.sim.now:.3f} {core.addr} left: diverged")
        core.output(lambda: w.sim.leave(core.addr))

    return leave


def corrupt(world: ReplicaWorld, addr: str) -> None:
    """Add a block to `addr`'s state (if it is ready) without an ordered update."""
    core = world.cores[addr]

    def change() -> None:
        e = core.engine
        if e.obj is not None and e.ready:
            e.obj.blocks[f"corrupt@{addr}"] = -1
            e.version += 1
            world.corrupted.append((world.sim.now, addr))

    core.post(change)
    core.pump()
    world.notes.append(f"{world.sim.now:.3f} corrupt {addr}")
