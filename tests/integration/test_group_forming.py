"""Forming a group on real sockets and processes: without the first seed, or alone.

The protocol is tested in the simulator (tests/stack/test_forming.py); these check the user's
edge of it: `cohort serve` replicas that form a group from two of three seeds and serve while the
first seed's process is not running (it joins when started last), and a group of one (no
--seeds, or itself as the only seed, and `Replica(..., seeds=[self])`).
"""

from __future__ import annotations

import asyncio

import pytest
from cluster import Cluster
from cohort.samples.counter import Counter
from cohort.stack.transport import join as join_group
from cohort.stack.transport import testing

from cohort import replication

pytestmark = pytest.mark.timeout(120)

FAST = {
    "suspect": {"interval": 0.05, "timeout": 0.4, "lease": 0.2, "verify": 0.2},
    "gms": {"retry_interval": 0.025, "flush_timeout": 0.4, "join_interval": 0.1, "fresh": 0.2},
}
COUNTER = "cohort.samples.counter:Counter"


def _ready_in(c: Cluster, addrs: list[str], timeout: float = 30) -> dict:
    """Every replica of `addrs` ready, in one view of exactly `addrs`."""

    def ok(sts: dict) -> bool:
        return all(s and s["ready"] and sorted(s["members"]) == sorted(addrs) for s in sts.values())

    return c.wait(ok, addrs, timeout)


def test_two_of_three_seeds_serve_without_the_first_which_joins_when_started_last(tmp_path):
    c = Cluster(COUNTER, "no-first", 3, str(tmp_path))
    first, *others = c.seeds
    try:
        for a in reversed(others):  # the last seed first, and the first seed's process not at all
            c.start(a)
        _ready_in(c, others)
        with replication.connect(c.ref, timeout=20) as counter:  # the ref names the first seed too
            assert [counter.add(1) for _ in range(5)] == [1, 2, 3, 4, 5]
            c.start(first)
            c.wait_converged(c.seeds, timeout=30)
            assert counter.add(10) == 15
        assert all(s["applied"] == 6 for s in c.wait_converged(c.seeds).values())
    finally:
        c.close()


@pytest.mark.parametrize("seeds", ["none", "itself"], ids=["no-seeds", "seeds-itself"])
def test_a_group_of_one_serves(tmp_path, seeds):
    """`cohort serve ... --listen A` with no --seeds, or --seeds A: ready and serving (it stayed
    `ready False` for good)."""
    c = Cluster(COUNTER, f"one-{seeds}", 1, str(tmp_path))
    (a,) = c.seeds
    try:
        c.start(a, seeds=[] if seeds == "none" else [a])
        _ready_in(c, [a])
        with replication.connect(c.ref, timeout=20) as counter:
            assert counter.add(2) == 2 and counter.get() == 2
    finally:
        c.close()


def test_an_embedded_replica_whose_only_seed_is_itself_serves():
    (port,) = testing.free_udp_ports(1)
    a = f"127.0.0.1:{port}"
    r = replication.Replica(Counter, "alone", a, [a])
    try:
        r.start(timeout=20)
        with replication.connect(f"PYROGROUP:alone@{a}", timeout=20) as counter:
            assert counter.add(5) == 5 and counter.get() == 5
    finally:
        r.stop()


def test_two_of_three_seeds_form_a_group_of_the_stack_without_the_first():
    first, b, c = (f"127.0.0.1:{p}" for p in testing.free_udp_ports(3))
    seeds = [first, b, c]

    async def run() -> None:
        gs = await asyncio.gather(*(join_group("nf", a, seeds, params=FAST) for a in (c, b)))
        try:
            assert {tuple(sorted(g.view.members)) for g in gs} == {tuple(sorted((b, c)))}
            assert all(g.view.primary for g in gs)
        finally:
            for g in gs:
                g.close()

    asyncio.run(run())
