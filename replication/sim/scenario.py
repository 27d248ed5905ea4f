"""Scenarios for `ReplicaWorld`: the 400 MiB join (the cascade) and random fault schedules.

Each function builds a world from a seed, runs it to the end (faults, then quiet until the group
must have settled) and returns it for `cohort.replication.sim.check`. Times are virtual seconds.
"""

from __future__ import annotations

import random

from cohort.orb import errors as st
from cohort.replication.sim.diverge import corrupt
from cohort.replication.sim.world import Cost, ReplicaWorld
from cohort.stack.sim import Net

__all__ = ["form", "fill", "cascade", "random_world", "diverge_world"]


def form(world: ReplicaWorld, within: float = 5.0) -> None:
    """Run until the seeds formed one group and all are ready."""
    ok = world.run_until(
        lambda: world.sim.converged() and all(c.engine.ready for c in world.cores.values()),
        within,
    )
    assert ok, f"seed={world.seed}: the group did not form: {world.sim.views()}"


def fill(world: ReplicaWorld, mib: int, step: int = 25, addr: str = "m0") -> None:
    """Grow the state to `mib` notional MiB, `step` at a time (each call costs step MiB of work
    at every replica, kept below the suspect timeout as `tests/integration/test_state_custody`
    does with its 50 MiB calls)."""
    rid = 0
    for start in range(0, mib, step):
        rid += 1
        got = world.call(addr, "fill", start, min(step, mib - start), cid=b"fill", rid=rid)
        assert world.run_until(lambda got=got: bool(got), 10.0) and got[0][0] == st.OK, got


def cascade(
    seed: int,
    core: str,
    mib: int = 400,
    members: int = 3,
    params: dict | None = None,
    jitter: float = 0.3,
) -> ReplicaWorld:
    """Three replicas with `mib` MiB of state, two clients updating, and a fourth joins: the
    scenario of the 400 MiB cascade (before the fix the donor, snapshotting on its loop, was
    excluded, and the replicas that came back dropped their states)."""
    replay = (
        f"cohort.replication.sim.scenario.cascade({seed}, {core!r}, mib={mib}, members={members})"
    )
    world = ReplicaWorld(seed, members, core=core, params=params, replay=replay)
    form(world)
    fill(world, mib)
    world.cost = Cost(jitter=jitter)  # the fill is the same everywhere; the rest varies by seed
    t = world.sim.now
    for i in range(2):
        world.add_client(f"c{i}".encode(), 30, t + 0.05, think=0.1)
    world.at(t + 0.5, lambda: world.join(f"m{members}"))
    world.run(t + 4.0)
    world.settle(within=30.0)
    return world


def random_world(seed: int, core: str = "thread", members: int = 3, mib: int = 0) -> ReplicaWorld:
    """A random schedule: clients updating throughout, and faults on a minority (crash, pause,
    partition), joins, loss; then quiet until the group must settle."""
    rng = random.Random(seed * 104_729 + members)
    net = Net(loss=rng.choice([0.0, 0.0, 0.01, 0.05]), reorder=rng.choice([0.0, 0.05]))
    replay = f"cohort.replication.sim.scenario.random_world({seed}, {core!r}, {members}, mib={mib})"
    world = ReplicaWorld(seed, members, core=core, net=net, replay=replay)
    saved, world.sim.net = world.sim.net, Net()
    form(world)
    world.sim.net = saved
    if mib:
        fill(world, mib)
    t0 = world.sim.now
    horizon = 3.0
    names = list(world.cores)
    for i in range(rng.randint(1, 3)):
        world.add_client(f"c{i}".encode(), rng.randint(5, 25), t0 + rng.uniform(0, 0.5), think=0.05)
    budget = (members - 1) // 2
    victims = rng.sample(names, budget)
    if victims and rng.random() < 0.5 and "m0" not in victims:
        victims[0] = "m0"
    split = rng.random() < 0.3  # decided first: with it, no crash (the split needs everyone)
    for v in victims:
        kind = rng.choice(["pause", "pause", "partition", "partition"] + ["crash"] * (not split))
        t = t0 + rng.uniform(0.1, horizon)
        d = rng.uniform(0.2, 1.5)
        if kind == "crash":
            world.at(t, lambda v=v: world.crash(v))
        elif kind == "pause":
            world.at(t, lambda v=v: world.pause(v))
            world.at(t + d, lambda v=v: world.resume(v))
        else:
            world.at(t, lambda v=v: world.partition([v], [m for m in world.cores if m != v]))
            world.at(t + d, world.heal)
    if split:
        # everyone cut off: one member first (its state goes stale while the others take
        # updates), then all apart, then all back. The next primary view has no ready member:
        # its status round must resume from the latest state, not the stale one.
        stale = "m0" if rng.random() < 0.5 else rng.choice(names)
        t1 = t0 + rng.uniform(0.2, 1.0)
        t2 = t1 + rng.uniform(0.5, 1.5)
        t3 = t2 + rng.uniform(0.5, 1.0)
        world.at(t1, lambda: world.partition([stale], [m for m in world.cores if m != stale]))
        world.at(t2, lambda: world.partition(*[[m] for m in world.cores]))
        world.at(t3, world.heal)
        horizon = max(horizon, t3 - t0)
    for j in range(rng.choice([0, 0, 1, 1, 2])):
        addr = f"m{members + j}"
        world.at(t0 + rng.uniform(0.1, horizon), lambda a=addr: world.join(a))
    quiet = t0 + horizon + 1.6
    world.at(quiet, lambda: setattr(world.sim.net, "loss", 0.0))
    world.run(quiet)
    world.settle(within=20.0)
    return world


def diverge_world(seed: int, members: int = 3) -> ReplicaWorld:
    """One replica's state is corrupted behind the order's back (a nondeterministic method) while
    clients update; loss, reordering and a pause of another member on the way. The checks must
    find it and the resync repair it: R-equal at the end."""
    rng = random.Random(seed * 7_919 + members)
    net = Net(loss=rng.choice([0.0, 0.01, 0.05]), reorder=rng.choice([0.0, 0.05]))
    replay = f"cohort.replication.sim.scenario.diverge_world({seed}, {members})"
    world = ReplicaWorld(seed, members, net=net, replay=replay)
    saved, world.sim.net = world.sim.net, Net()
    form(world)
    world.sim.net = saved
    t0 = world.sim.now
    names = list(world.cores)
    for i in range(2):
        world.add_client(f"c{i}".encode(), 30, t0 + rng.uniform(0, 0.2), think=0.05)
    victim = rng.choice(names)
    world.at(t0 + rng.uniform(0.1, 0.8), lambda: corrupt(world, victim))
    if rng.random() < 0.5:
        other = rng.choice([m for m in names if m != victim])
        t = t0 + rng.uniform(0.1, 1.0)
        world.at(t, lambda: world.pause(other))
        world.at(t + rng.uniform(0.2, 1.0), lambda: world.resume(other))
    quiet = t0 + 2.5
    world.at(quiet, lambda: setattr(world.sim.net, "loss", 0.0))
    world.run(quiet)
    world.settle(within=20.0)
    return world
