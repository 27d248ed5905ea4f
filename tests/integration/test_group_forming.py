"""Forming a group on real sockets and processes: without the first seed, alone, or not at all.

The protocol is tested in the simulator (tests/stack/test_forming.py); these check the user's
edge of it: `cohort serve` replicas that form a group from two of three seeds and serve while the
first seed's process is not running (it joins when started last), a group of one (no --seeds, or
itself as the only seed, and `Replica(..., seeds=[self])`), and what `JoinTimeout` says when a
group cannot be joined.
"""

from __future__ import annotations

import asyncio

import pytest
from cluster import Cluster
from cohort.samples.counter import Counter
from cohort.stack.transport import JoinTimeout, testing
from cohort.stack.transport import join as join_group
from cohort.stack.transport.group import join_timeout_message

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


async def _join_timeout(name: str, listen: str, seeds: list[str], other: tuple) -> str:
    """Join `name` at `listen` (timing out in 1.5 s) while `other` = (name, listen, seeds) tries
    to join too (and times out later): the message of our JoinTimeout."""
    ours = join_group(name, listen, seeds, params=FAST, timeout=1.5)
    theirs = join_group(*other, params=FAST, timeout=2.5)
    got = await asyncio.gather(ours, theirs, return_exceptions=True)
    for g in got:
        if not isinstance(g, BaseException):
            g.close()
    assert all(isinstance(g, JoinTimeout) for g in got), got
    return str(got[0])


def test_join_timeout_says_whom_it_heard_from_and_blames_no_missing_majority():
    """Seed b runs the group with another seed list (it takes us in, but its views cannot be
    primary), seed c does not run: with us that is two of three seeds up, so the message must
    not blame a missing majority; it says whom it heard from and what else may differ."""
    a, b, c = (f"127.0.0.1:{p}" for p in testing.free_udp_ports(3))
    elsewhere = [b, *(f"127.0.0.1:{p}" for p in testing.free_udp_ports(2))]
    msg = asyncio.run(_join_timeout("j", a, [a, b, c], ("j", b, elsewhere)))
    assert f"Heard from {b} in this group" in msg and f"Nothing from {c}" in msg
    assert "(2 of 3, counting us)" in msg and "same seed list, stack and group secret" in msg
    assert "forms once a majority" not in msg


def test_join_timeout_says_when_a_seed_runs_another_group_and_who_said_nothing():
    a, b, c = (f"127.0.0.1:{p}" for p in testing.free_udp_ports(3))
    msg = asyncio.run(_join_timeout("mine", a, [a, b, c], ("theirs", b, [b, a])))
    assert f"{b} sent datagrams for another group only" in msg and "name 'mine'" in msg
    assert f"Nothing from {c}: not running, or not reachable there" in msg
    assert "forms once a majority of its seeds runs it; here 1 of 3 did, counting us" in msg


def test_the_join_timeout_message_states_only_what_is_known():
    seeds = ["a:1", "b:2", "c:3"]
    alone = join_timeout_message("g", "a:1", seeds, 5.0, set(), set())
    assert "Nothing from b:2, c:3" in alone and "here 1 of 3 did, counting us." in alone
    two = join_timeout_message("g", "b:2", seeds, 5.0, {"c:3"}, set())
    assert "Heard from c:3 in this group" in two and "Nothing from a:1" in two
    assert "forms once a majority" not in two and "2 of 3, counting us" in two
    foreign = join_timeout_message("g", "a:1", seeds, 5.0, set(), {"b:2"})
    assert "b:2 sent datagrams for another group only: do they use the group name 'g'?" in foreign
    outsider = join_timeout_message("g", "x:9", seeds, 5.0, {"a:1", "b:2"}, set())
    assert "(2 of 3)" in outsider and "counting us" not in outsider
