"""Large messages and backpressure on real UDP sockets (127.0.0.1, three members in one process).

The protocol logic is tested in the simulator (tests/stack/test_frag.py, test_flow.py); these check
what only real I/O shows: fragments really fit the datagrams and the socket buffers, a 10 MiB
message crosses in a few seconds, and a sender that bursts gets `Group.cast` to wait instead of
piling data up.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time

import pytest
from cohort.stack import check
from cohort.stack.events import Deliver, DeliverSend
from cohort.stack.transport import Group, merge_traces, testing
from cohort.stack.transport import join as join_group

FAST = {
    "suspect": {"interval": 0.05, "timeout": 0.4, "lease": 0.2, "verify": 0.2},
    "gms": {"retry_interval": 0.025, "flush_timeout": 0.4, "join_interval": 0.1, "fresh": 0.2},
}
MiB = 1 << 20


def layer(g: Group, name: str):
    return next(x for x in g.ep._layers if x.name == name)


async def group_of_three(name: str, params: dict | None = None, paths=None) -> list[Group]:
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(3)]
    merged = {**FAST, **(params or {})}
    paths = paths or [None] * 3
    return list(
        await asyncio.gather(
            *(join_group(name, a, addrs, params=merged, trace_path=p) for a, p in zip(addrs, paths))
        )
    )


async def drain(g: Group, count: int, got: dict, timeout: float) -> None:
    while len(got[g.addr]) < count:
        ev = await g.next_event(timeout)
        if type(ev) is Deliver:
            got[g.addr].append(ev.payload)


@pytest.mark.timeout(30)
def test_ten_mib_message_arrives_intact_and_in_total_order_at_every_member():
    big = random.Random(10).randbytes(10 * MiB)

    async def run() -> float:
        gs = await group_of_three("large")
        got: dict[str, list[bytes]] = {g.addr: [] for g in gs}
        drains = [asyncio.create_task(drain(g, 7, got, 10)) for g in gs]
        t0 = time.monotonic()
        await gs[0].cast(b"before:0")
        await gs[2].cast(b"before:2")
        await gs[1].cast(big)  # not the sequencer: its fragments are ordered by m0
        await gs[0].cast(b"after:0")
        await gs[2].cast(b"after:2")
        await gs[1].cast(b"after:1")
        await gs[2].cast(b"after:2b")
        await asyncio.gather(*drains)
        took = time.monotonic() - t0
        orders = {tuple(hashlib.sha256(p).digest() for p in v) for v in got.values()}
        assert len(orders) == 1  # one total order
        for v in got.values():
            assert v.count(big) == 1 and len(v) == 7
            assert v.index(b"before:2") < v.index(b"after:2") < v.index(b"after:2b")  # FIFO
            assert v.index(big) < v.index(b"after:1")
        for g in gs:
            assert not any(k.startswith(("frag.", "flow.bad")) for k in g.ep.counters), (
                g.ep.counters
            )
            g.close()
        return took

    took = asyncio.run(run())
    print(f"10 MiB delivered at 3 members in {took:.2f}s")
    assert took < 10.0


@pytest.mark.timeout(30)
def test_ten_mib_sends_arrive_intact_point_to_point():
    """pt2pt resends everything unacknowledged on each retry; without flow's per-destination
    window a send this large overflows the socket buffers on every round and never completes."""
    payloads = [random.Random(k).randbytes(10 * MiB) for k in range(2)]

    async def run() -> float:
        gs = await group_of_three("sends")
        t0 = time.monotonic()
        gs[1].send(gs[2].addr, payloads[0])
        gs[0].send(gs[2].addr, payloads[1])
        gs[1].send(gs[2].addr, b"small")
        got = []
        while len(got) < 3:
            ev = await gs[2].next_event(10)
            if type(ev) is DeliverSend:
                got.append((ev.origin, ev.payload))
        took = time.monotonic() - t0
        from1 = [p for o, p in got if o == gs[1].addr]
        assert from1 == [payloads[0], b"small"]  # FIFO per sender
        assert (gs[0].addr, payloads[1]) in got
        for g in gs:
            g.close()
        return took

    took = asyncio.run(run())
    print(f"2 x 10 MiB sent point to point in {took:.2f}s")
    assert took < 10.0


@pytest.mark.timeout(60)
def test_a_burst_of_casts_waits_for_credit_instead_of_piling_up():
    window, size, count = MiB, 100_000, 150  # 15 MB burst through a 1 MiB window

    async def run() -> None:
        gs = await group_of_three("burst", {"flow": {"window": window}})
        sender = gs[1]
        got: dict[str, list[bytes]] = {g.addr: [] for g in gs}
        drains = [asyncio.create_task(drain(g, count, got, 15)) for g in gs]
        worst = {"inflight": 0, "queued": 0, "held": 0}
        stop = False

        async def sample() -> None:
            while not stop:
                f = layer(sender, "flow")
                worst["inflight"] = max(worst["inflight"], f.inflight)
                worst["queued"] = max(worst["queued"], len(f.queue))
                for g in gs:
                    held = layer(g, "nak").held[g.view.rank(sender.addr)]
                    worst["held"] = max(worst["held"], sum(len(p) for p, _ in held.values()))
                await asyncio.sleep(0.002)

        sampler = asyncio.create_task(sample())
        payloads = [b"%04d:" % k + os.urandom(8) * (size // 8) for k in range(count)]
        for p in payloads:
            await sender.cast(p)  # no pacing of our own: the flow layer must push back
        await asyncio.gather(*drains)
        stop = True
        await sampler
        assert all(v == payloads for v in got.values())
        assert sender.backpressure_waits > 0  # cast really waited
        frag_size = layer(sender, "frag").frag_size
        per_cast = -(-size // frag_size)
        assert worst["queued"] <= 2 * per_cast  # the layer held one cast or two, never the burst
        assert worst["inflight"] <= window
        assert worst["held"] <= window  # nak's buffer (bytes) for the sender, at every member
        for g in gs:
            g.close()

    asyncio.run(run())


@pytest.mark.timeout(30)
def test_mixed_sizes_with_traces_pass_the_checker(tmp_path):
    paths = [str(tmp_path / f"m{i}.jsonl") for i in range(3)]

    async def run() -> None:
        gs = await group_of_three("mixed", paths=paths)
        got: dict[str, list[bytes]] = {g.addr: [] for g in gs}
        drains = [asyncio.create_task(drain(g, 30, got, 10)) for g in gs]
        for k in range(10):
            for i, g in enumerate(gs):
                size = 150_000 if (k + i) % 4 == 0 else 20
                await g.cast(b"%d:%d:" % (i, k) + b"z" * size)
        await asyncio.gather(*drains)
        assert len({tuple(v) for v in got.values()}) == 1
        for g in gs:
            await asyncio.sleep(0.3)  # let Safe reach everybody before the traces end
            g.close()

    asyncio.run(run())
    trace = merge_traces(paths)
    trace.live, trace.liveness = (), False
    violations = check.check(trace)
    assert not violations, check.report(trace, violations)


def test_a_cast_beyond_max_size_is_refused_at_once():
    async def run() -> None:
        (port,) = testing.free_udp_ports(1)
        addr = f"127.0.0.1:{port}"
        g = await join_group(
            "solo-big", addr, [addr], params={**FAST, "frag": {"frag_size": 100, "max_size": 1000}}
        )
        with pytest.raises(ValueError, match="max_size"):
            await g.cast(b"x" * 1001)
        g.close()

    asyncio.run(run())
