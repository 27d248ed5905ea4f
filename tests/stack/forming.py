"""Scenarios of a group forming from its seeds: any majority of them, started in any order.

Why a family of its own: `run_scenario` forms its groups before any fault (or starts from a
static first view), so it never sees seeds that start one by one, a seed that never starts, or a
seed that crashes, pauses or loses packets while the group forms, where two forming components
could each make a first primary view. Here nobody is up at time 0: the seeds start in a given
order, at times drawn from the seed, with the faults below, and the checker judges the trace.

Liveness (the live members end in one primary view of exactly themselves, L1/L2) is judged
whenever it is owed. A crash during formation does not always leave it owed, by design of the
primary partition: a first primary view of two seeds out of three that loses one blocks the
other for good, and so does a proposal that may have been installed, until its members return.
Such a crash is `stranding`: at the moment it happens the victim is an acceptor of a primary view
some member installed, or of a primary proposal some member confirmed, whose acceptors still up
are no majority of them. Runs with a stranding crash are judged on safety alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cohort.stack import check
from cohort.stack.layers.gms_wire import view_from_wire
from cohort.stack.sim import REPAIR_BOUND, Net, Sim
from cohort.stack.trace import Trace
from cohort.stack.view import majority_of

#: what `run_forming` may do besides starting the seeds ("cut": one link fails for a while)
FAULTS = ("absent", "crash", "pause", "cut", "loss")


@dataclass
class Forming:
    seed: int
    trace: Trace
    sim: Sim
    violations: list
    owed: bool  # liveness was judged (no stranding crash)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        return check.report(self.trace, self.violations) + "\n  " + "; ".join(self.notes)


def _gms(sim: Sim, addr: str):
    return next(layer for layer in sim.eps[addr]._layers if layer.name == "gms")


def bindings(sim: Sim) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(acceptors, reference): a live member can go on only once the acceptors still up hold a
    majority of the reference. For the primary view it is in: that view's acceptors. For a primary
    proposal it confirmed or coordinates (it may have been installed): the proposal's acceptors,
    against their own and against the reference of the view it was proposed in (a re-proposal
    that only some of them confirm needs a majority of both). For a flush it takes part in, in a
    view whose members hold a majority of its reference: those members (the flush may yet make a
    primary view that counts all of them)."""
    out = []
    for addr, ep in sim.eps.items():
        if not ep.alive:
            continue
        v, g = ep.view, _gms(sim, addr)
        if v.primary:
            out.append((v.last_primary, v.last_primary))
        if g.accepted is not None and majority_of(v.members, v.last_primary):
            out.append((v.members, v.last_primary))
        for wire in (g.done[1] if g.done else None, g.coord.proposal):
            p = view_from_wire(wire) if wire is not None else None
            if p is not None and p.primary:
                out += [(p.last_primary, p.last_primary), (p.last_primary, v.last_primary)]
    return out


def stranding(sim: Sim, victim: str, down: set[str]) -> bool:
    """Would crashing `victim` (with `down` already gone) leave a live member bound to wait for
    it (see `bindings`)?"""
    gone = down | {victim}
    return any(
        victim in acceptors and not majority_of(set(acceptors) - gone, ref)
        for acceptors, ref in bindings(sim)
    )


def run_forming(
    seed: int,
    members: int = 3,
    order: tuple[str, ...] | None = None,
    absent: tuple[str, ...] | None = None,
    faults: tuple[str, ...] = FAULTS,
    settle: float = 10.0,
) -> Forming:
    """Start the seeds of a `members`-seed group in `order` but those `absent` (both drawn from
    `seed` when None; "absent" in `faults` lets the draw leave out a minority), at times drawn
    from `seed`, with casts and `faults`; then let it settle and check the trace."""
    rng = random.Random(seed * 7919 + members * 31 + 17)
    net = Net(loss=rng.choice([0.0, 0.01, 0.05, 0.1, 0.2]) if "loss" in faults else 0.0)
    replay = f"tests/stack/forming.py: run_forming({seed}, {members}, {order!r}, {absent!r})"
    sim = Sim(seed, members, net=net, form="none", replay=replay)
    sim.trace.add(0.0, "", check.SCHEDULE, REPAIR_BOUND)  # every fault below is recorded
    names = list(order) if order is not None else rng.sample(sim.seeds, members)
    budget = (members - 1) // 2  # seeds that may be absent or crash: a majority stays
    if absent is None:
        drawn = "absent" in faults and budget and rng.random() < 0.5
        absent = tuple(rng.sample(names, rng.randint(1, budget))) if drawn else ()
    started = [m for m in names if m not in absent]
    notes = [f"order={names}", f"absent={list(absent)}", f"loss={net.loss}"]
    t, start = 0.0, {}
    for m in started:
        t += rng.choice([0.0, rng.uniform(0.0, 0.05), rng.uniform(0.05, 0.8)])
        start[m] = t
        sim.at(t, lambda m=m: join(m))
    notes.append("starts " + ", ".join(f"{m}@{start[m]:.3f}" for m in started))
    last = t

    def join(m: str) -> None:
        sim.trace.add(sim.now, m, check.JOINING)
        sim.join(m)

    def cut(a: str, b: str) -> None:
        sim.cut(a, b)
        sim.trace.add(sim.now, a, check.CUT, b)

    def heal() -> None:
        sim.heal()
        sim.trace.add(sim.now, "", check.HEAL)

    down: set[str] = set()
    owed = [True]

    def crash(m: str) -> None:
        if sim.eps[m].alive:
            if stranding(sim, m, down):
                owed[0] = False
                notes.append(f"crash of {m} at {sim.now:.3f} strands the group")
            down.add(m)
            sim.crash(m)

    quiet = last
    left = budget - len(absent)
    if "crash" in faults and left > 0 and rng.random() < 0.6:
        for v in rng.sample(started, rng.randint(1, left)):
            at = rng.uniform(start[v], last + 0.6)
            sim.at(at, lambda v=v: crash(v))
            quiet = max(quiet, at)
            notes.append(f"crash {v} at {at:.3f}")
    if "pause" in faults and rng.random() < 0.5:
        v = rng.choice(started)
        at, d = rng.uniform(start[v], last + 0.6), rng.uniform(0.1, 1.5)
        sim.at(at, lambda v=v: sim.pause(v))
        sim.at(at + d, lambda v=v: sim.resume(v))
        quiet = max(quiet, at + d)
        notes.append(f"pause {v} at {at:.3f} for {d:.3f}")
    if "cut" in faults and len(started) > 1 and rng.random() < 0.5:
        a, b = rng.sample(started, 2)
        at, d = rng.uniform(max(start[a], start[b]), last + 0.6), rng.uniform(0.05, 1.0)
        sim.at(at, lambda: cut(a, b))
        sim.at(at + d, heal)
        quiet = max(quiet, at + d)
        notes.append(f"cut {a}->{b} at {at:.3f} for {d:.3f}")
    for m in started:  # traffic from the start on: casts wait for a primary view
        for k in range(rng.randint(1, 6)):
            payload = f"{m}:{k}".encode()
            sim.at(rng.uniform(start[m], last + 1.0), lambda m=m, p=payload: sim.cast(m, p))
    quiet = max(quiet, last + 1.0) + 0.1
    sim.at(quiet, lambda: setattr(sim.net, "loss", 0.0))
    sim.run(quiet)
    deadline = quiet + settle

    def settled() -> bool:
        return sim.converged() and not any(sim.eps[m].pending_casts for m in sim.live())

    while owed[0]:
        sim.run_until(settled, within=max(0.0, deadline - sim.now))
        sim.run(sim.now + 0.5)  # the last deliveries and stability gossip
        if settled() or sim.now >= deadline:
            break
    if not owed[0]:
        sim.run(deadline)
    tr = sim.trace
    tr.live = tuple(sim.live())
    tr.quiet_since = quiet
    tr.end_time = sim.now
    tr.liveness = owed[0]
    violations = check.check(tr)
    for m, ep in sim.eps.items():  # no garbage was injected: any drop for bad input is a bug
        bad = {k: v for k, v in ep.counters.items() if ".bad_" in k}
        if bad:
            violations.append(check.Violation("INTERNAL", f"{m} counted {bad}", (m,), ()))
    return Forming(seed, tr, sim, violations, owed[0], notes)
