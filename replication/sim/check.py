"""Replica properties over a finished `ReplicaWorld` run (the replication layer's `cohort.stack.check`).

Why: the stack's checker proves the group delivered what it should; these say what a client of
the replicated object cares about, on the engines' final states and what the clients were told.
Each is a `check_<name>(world) -> list[Violation]`; `check()` runs all of them; `assert_ok()`
raises `ReplicaPropertyError` with the seed, the replay command and the fault notes.

- R-error   no engine input raised, and no client got an unexpected ERROR
- R-custody no replica's state ever became None after it had one, and the run does not end with
            no ready member while a live member holds a state, nor with the state gone from every
            live member unless every member that held it crashed
- R-ready   every live member of the final view is ready (the status round and transfers finish
            once the faults stop), and every client finished its updates
- R-lost    every acknowledged update (the client got OK) is in every live ready replica's state
- R-once    every update ran at most once at each live ready replica (`Bulk.counts`)
- R-equal   every live ready replica's `state_digest()` is the same
- R-diverge in a run whose replicas were never corrupted (`diverge.corrupt`), no divergence check
            found a replica diverged or a position without a majority: digests of one position
            taken at the cut agree (no false positive, however late each was hashed)
(R-lost, R-once, R-equal judge the live ready replicas of the final view of a settled run, see
`_ready`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cohort.errors import CohortError

if TYPE_CHECKING:
    from cohort.replication.sim.world import ReplicaWorld

__all__ = ["Violation", "ReplicaPropertyError", "check", "report", "assert_ok"]

#: at most this many violations are reported per property
CAP = 5


@dataclass
class Violation:
    prop: str
    detail: str
    members: tuple[str, ...] = ()

    def __str__(self) -> str:
        who = f" ({', '.join(self.members)})" if self.members else ""
        return f"[{self.prop}] {self.detail}{who}"


class ReplicaPropertyError(CohortError, AssertionError):
    def __init__(self, world: ReplicaWorld, violations: list[Violation]) -> None:
        super().__init__(report(world, violations))
        self.seed = world.seed
        self.violations = violations


def _ready(world: ReplicaWorld) -> list[str]:
    """The replicas the end-state properties judge: live, ready, core idle, in the latest primary
    view any of them is in; none when the run did not settle (R-ready reports it). Why: in a run
    that never goes quiet (the loop architecture, where the engine's own work keeps stalling
    members) a ready replica may sit in a minority view or be a few packets behind its view when
    the run stops: stale, not wrong. The custody properties are judged either way."""
    if not world.settled():
        return []
    idle = []
    for a in world.live():
        c = world.cores[a]
        e = c.engine
        if e.ready and e.view is not None and e.view.primary and not (c.busy or c.queue):
            idle.append(a)
    if not idle:
        return []
    latest = max(tuple(world.cores[a].engine.view.vid) for a in idle)
    return [a for a in idle if tuple(world.cores[a].engine.view.vid) == latest]


def check_error(world: ReplicaWorld) -> list[Violation]:
    return [Violation("R-error", f"t={t:.3f}: {what}", (a,)) for t, a, what in world.errors]


def check_custody(world: ReplicaWorld) -> list[Violation]:
    out = [
        Violation("R-custody", f"t={t:.3f}: the state became None after the replica had one", (a,))
        for t, a in world.dropped
    ]
    live = world.live()
    holders = [a for a in live if world.cores[a].engine.obj is not None]
    if live and not any(world.cores[a].engine.ready for a in live):
        if holders:
            out.append(
                Violation(
                    "R-custody", "no live member is ready, yet some hold a state", tuple(holders)
                )
            )
        else:
            had = [a for a, c in world.cores.items() if c.had_state]
            if any(a not in world.crashed for a in had):
                out.append(Violation("R-custody", "the state is gone from every live member"))
    return out


def check_ready(world: ReplicaWorld) -> list[Violation]:
    out = []
    live = world.live()
    if not world.sim.converged(live):
        out.append(Violation("R-ready", f"live members did not converge: {world.sim.views()}"))
    late = [a for a in live if not world.cores[a].engine.ready]
    if late:
        out.append(Violation("R-ready", "live members not ready at the end", tuple(late)))
    for c in world.clients:
        if c.done_at is None:
            out.append(
                Violation("R-ready", f"client {c.cid.decode()} stuck at update {c.rid}/{c.updates}")
            )
    return out


def check_lost(world: ReplicaWorld) -> list[Violation]:
    acked = {f"{cid.decode()}:{rid}" for cid, rid, _a, _t in world.acks}
    out = []
    for a in _ready(world):
        counts = world.cores[a].engine.obj.counts
        missing = sorted(u for u in acked if u not in counts)
        if missing:
            out.append(
                Violation(
                    "R-lost",
                    f"{len(missing)} acknowledged updates missing, e.g. {missing[:5]}",
                    (a,),
                )
            )
    return out


def check_once(world: ReplicaWorld) -> list[Violation]:
    out = []
    for a in _ready(world):
        twice = {u: n for u, n in world.cores[a].engine.obj.counts.items() if n != 1}
        if twice:
            out.append(Violation("R-once", f"updates applied more than once: {twice}", (a,)))
    return out


def check_equal(world: ReplicaWorld) -> list[Violation]:
    digests: dict[str, list[str]] = {}
    for a in _ready(world):
        digests.setdefault(world.cores[a].engine.state_digest(), []).append(a)
    if len(digests) <= 1:
        return []
    groups = "; ".join(f"{d[:8]}: {m}" for d, m in digests.items())
    return [Violation("R-equal", f"ready replicas differ: {groups}")]


def check_diverge(world: ReplicaWorld) -> list[Violation]:
    if world.corrupted:
        return []  # found and repaired is what R-equal judges at the end
    out = []
    for a, c in world.cores.items():
        for pos, member in c.engine.checks.events:
            what = f"{member} found diverged" if member else "no majority"
            out.append(Violation("R-diverge", f"update {pos}: {what} with no corruption", (a,)))
    return out


CHECKS = (
    check_error,
    check_custody,
    check_ready,
    check_lost,
    check_once,
    check_equal,
    check_diverge,
)


def check(world: ReplicaWorld) -> list[Violation]:
    out: list[Violation] = []
    for fn in CHECKS:
        out.extend(fn(world)[:CAP])
    return out


def report(world: ReplicaWorld, violations: list[Violation]) -> str:
    lines = [f"replica properties violated (seed={world.seed}, core={world.core}):"]
    lines += [f"  {v}" for v in violations]
    if world.notes:
        lines.append("  faults: " + "; ".join(world.notes[:40]))
    if world.replay:
        lines.append(f"  replay: {world.replay}")
    return "\n".join(lines)


def assert_ok(world: ReplicaWorld) -> None:
    violations = check(world)
    if violations:
        raise ReplicaPropertyError(world, violations)
