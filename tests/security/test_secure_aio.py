"""The secure stack on real sockets (127.0.0.1): joins, refusals, rekeys, replayed datagrams, and a
replicated object whose group runs on it. Protocol behaviour is tested in the simulator; these
show the same code works with real I/O, and the traces are checked.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest
from cohort.replication.cli.options import UsageError
from cohort.replication.cli.options import secret_options as _secret_opts
from cohort.samples.counter import Counter
from cohort.stack import check
from cohort.stack.events import Deliver
from cohort.stack.transport import JoinRefused, merge_traces, testing
from cohort.stack.transport import join as join_group
from seckit import SECRET, WRONG

from cohort import replication
from cohort.net import parse_addr

FAST = {
    "suspect": {"interval": 0.05, "timeout": 0.4, "lease": 0.2, "verify": 0.2},
    "gms": {"retry_interval": 0.025, "flush_timeout": 0.4, "join_interval": 0.1, "fresh": 0.2},
}

pytestmark = pytest.mark.timeout(60)


def params(secret: bytes | None = SECRET) -> dict:
    p = {k: dict(v) for k, v in FAST.items()}
    if secret is not None:
        p["auth"] = {"secret": secret}
    return p


async def drain(g, want: set[bytes], timeout: float = 5.0) -> None:
    got: set[bytes] = set()
    while not want <= got:
        ev = await g.next_event(timeout)
        if type(ev) is Deliver:
            got.add(ev.payload)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_secure_group_on_loopback_refuses_strangers_and_rekeys_on_leave(tmp_path, transport):
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(5)]
    paths = [str(tmp_path / f"m{i}.jsonl") for i in range(3)]

    async def run() -> None:
        gs = await asyncio.gather(
            *(
                join_group(
                    "sec", a, addrs[:3], "secure", params(), trace_path=p, transport=transport
                )
                for a, p in zip(addrs, paths)
            )
        )
        v0 = gs[0].view
        k0 = v0.keys.key
        assert all(g.view == v0 and g.view.keys.key == k0 for g in gs)
        with pytest.raises(JoinRefused, match="another group secret"):
            await join_group(
                "sec", addrs[3], addrs[:3], "secure", params(WRONG), timeout=5, transport=transport
            )
        with pytest.raises(JoinRefused, match="only authenticated members"):
            await join_group(
                "sec", addrs[4], addrs[:3], "total", params(None), timeout=5, transport=transport
            )
        assert all(g.view == v0 for g in gs)  # the refusals changed nothing
        payloads = {f"{g.addr}:{i}".encode() for g in gs for i in range(20)}
        for i in range(20):
            for g in gs:
                await g.cast(f"{g.addr}:{i}".encode())
        await asyncio.gather(*(drain(g, payloads) for g in gs))
        await gs[2].leave()
        await gs[0].wait_view(lambda v: addrs[2] not in v.members, 5)
        await gs[1].wait_view(lambda v: addrs[2] not in v.members, 5)
        assert gs[0].view.keys.key == gs[1].view.keys.key != k0  # rekeyed on the leave
        more = {f"after:{g.addr}".encode() for g in gs[:2]}
        for g in gs[:2]:
            await g.cast(f"after:{g.addr}".encode())
        await asyncio.gather(*(drain(g, more) for g in gs[:2]))
        for g in gs[:2]:
            g.close()

    asyncio.run(run())
    trace = merge_traces(paths)
    trace.live, trace.liveness = (), False
    check.assert_ok(trace)


def test_replayed_and_forged_datagrams_from_a_stranger_are_counted_not_delivered():
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(2)]

    async def run() -> None:
        gs = await asyncio.gather(*(join_group("rp", a, addrs, "secure", params()) for a in addrs))
        sent: list[bytes] = []
        sock = gs[0]._sock
        original = sock.send

        def capture(tag: bytes, dest: str, data: bytes) -> None:
            sent.append(tag + data)
            original(tag, dest, data)

        sock.send = capture  # type: ignore[method-assign]
        for i in range(10):
            await gs[0].cast(b"real-%d" % i)
        await drain(gs[1], {b"real-%d" % i for i in range(10)})
        sock.send = original  # type: ignore[method-assign]
        before = sum(gs[1].ep.counters.values())
        delivered = []
        rogue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        host, port = parse_addr(addrs[1])
        junk = [d[:4] + os.urandom(len(d) - 4) for d in sent]
        for d in [*sent, *junk]:
            rogue.sendto(d, (host, port))
        rogue.close()
        t_end = asyncio.get_running_loop().time() + 0.5
        while asyncio.get_running_loop().time() < t_end:
            try:
                ev = await gs[1].next_event(0.1)
                if type(ev) is Deliver:
                    delivered.append(ev.payload)
            except asyncio.TimeoutError:
                pass
        assert delivered == []
        dropped = sum(gs[1].ep.counters.values()) - before
        assert dropped >= len(sent)  # each captured datagram holds one or more packets
        for g in gs:
            g.close()

    asyncio.run(run())


def test_a_replicated_object_on_the_secure_stack_and_cohort_serve_secret_file(tmp_path):
    secret_file = tmp_path / "group.key"
    secret_file.write_bytes(SECRET + b"\n")
    opts = _secret_opts(str(secret_file), "total", {"gms": {"flush_timeout": 0.4}})
    assert opts["stack"] == "secure" and opts["params"]["auth"]["secret"] == SECRET
    with pytest.raises(UsageError, match="at least 16"):
        short = tmp_path / "short.key"
        short.write_bytes(b"tiny")
        _secret_opts(str(short), "total", None)
    with pytest.raises(UsageError, match="needs a secure stack"):
        _secret_opts(str(secret_file), "fifo", None)
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(3)]
    replicas = [
        replication.Replica(Counter, "sc", a, addrs, stack=opts["stack"], params=opts["params"])
        for a in addrs
    ]
    starters = [threading.Thread(target=r.start) for r in replicas]
    t0 = time.monotonic()
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    try:
        assert time.monotonic() - t0 < 30
        with replication.connect(f"PYROGROUP:sc@{','.join(addrs)}") as c:
            assert c.add(2) == 2 and c.add(3) == 5 and c.get() == 5
    finally:
        for r in replicas:
            r.stop()
