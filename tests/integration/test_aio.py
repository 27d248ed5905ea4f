"""Real groups on 127.0.0.1: the asyncio runtime, real UDP sockets, real processes and signals.

Protocol behaviour is tested in the simulator; these check what only real I/O can show: sockets,
the loop's timers, process crashes (SIGKILL) and hangs (SIGSTOP). Every trace is merged and
checked; every spawned process is reaped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from cohort.stack import check
from cohort.stack.events import Deliver
from cohort.stack.transport import group_tag, merge_traces, testing
from cohort.stack.transport import join as join_group

FAST = {
    "suspect": {"interval": 0.05, "timeout": 0.4, "lease": 0.2, "verify": 0.2},
    "gms": {"retry_interval": 0.025, "flush_timeout": 0.4, "join_interval": 0.1, "fresh": 0.2},
}
MEMBER = os.path.join(os.path.dirname(__file__), "member.py")


def checked(paths, live) -> None:
    trace = merge_traces(paths)
    trace.live, trace.liveness = tuple(live), False
    violations = check.check(trace)
    if violations and os.environ.get("COHORT_KEEP_TRACES"):
        keep = os.environ["COHORT_KEEP_TRACES"]
        os.makedirs(keep, exist_ok=True)
        with open(os.path.join(keep, "merged.jsonl"), "w") as f:
            f.write(trace.dumps())
    assert not violations, check.report(trace, violations)


@pytest.mark.timeout(30)
def test_three_members_in_one_process_total_order_and_failover(tmp_path):
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(3)]
    paths = [str(tmp_path / f"m{i}.jsonl") for i in range(3)]

    async def run() -> float:
        joins = (join_group("t", a, addrs, params=FAST, trace_path=p) for a, p in zip(addrs, paths))
        gs = await asyncio.gather(*joins)
        for i in range(50):
            for g in gs:
                await g.cast(f"{g.addr}:{i}".encode())
        got: dict[str, list[bytes]] = {g.addr: [] for g in gs}

        async def drain(g) -> None:
            while len(got[g.addr]) < 150:
                ev = await g.next_event(5)
                if type(ev) is Deliver:
                    got[g.addr].append(ev.payload)

        await asyncio.gather(*(drain(g) for g in gs))
        assert len({tuple(v) for v in got.values()}) == 1  # one total order
        t0 = time.monotonic()
        gs[0].close()  # the coordinator and sequencer stops dead
        await gs[1].wait_view(lambda v: addrs[0] not in v.members, 5)
        took = time.monotonic() - t0
        await gs[1].leave()
        await gs[2].leave()
        return took

    took = asyncio.run(run())
    assert took < 2.0
    checked(paths, [])


@pytest.mark.timeout(60)
def test_total_order_and_virtual_synchrony_under_loss_and_duplication_on_real_sockets(tmp_path):
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(3)]
    paths = [str(tmp_path / f"m{i}.jsonl") for i in range(3)]

    async def run() -> None:
        gs = await asyncio.gather(
            *(
                join_group(
                    "lossy",
                    a,
                    addrs,
                    params=FAST,
                    trace_path=p,
                    timeout=20,
                    faults=testing.Faults(loss=0.10, dup=0.05, seed=i),
                )
                for i, (a, p) in enumerate(zip(addrs, paths))
            )
        )
        got: dict[str, list[bytes]] = {g.addr: [] for g in gs}

        async def drain(g) -> None:
            while len(got[g.addr]) < 300:
                ev = await g.next_event(10)
                if type(ev) is Deliver:
                    got[g.addr].append(ev.payload)

        drains = [asyncio.create_task(drain(g)) for g in gs]
        for i in range(100):
            for g in gs:
                await g.cast(f"{g.addr}:{i}".encode())
            await asyncio.sleep(0.002)
        await asyncio.gather(*drains)
        assert len({tuple(v) for v in got.values()}) == 1 and len(got[addrs[0]]) == 300
        assert sum(g._sock.faults.dropped for g in gs) > 0  # the faults really happened
        for g in gs:
            g.close()

    asyncio.run(run())
    checked(paths, [])


@pytest.mark.timeout(30)
def test_garbage_datagrams_are_counted_and_the_member_keeps_working(tmp_path):
    (port,) = testing.free_udp_ports(1)
    addr = f"127.0.0.1:{port}"

    async def run() -> None:
        g = await join_group("solo", addr, [addr], params=FAST)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tag = group_tag("solo")
        junk = [b"", b"\x00", os.urandom(3), group_tag("other") + b"x" * 10]
        junk += [tag + os.urandom(n) for n in (0, 1, 5, 40, 400)]
        junk += [tag + b"\x95\x00\x01\x02\x90\xc4\x00"]  # well framed, wrong view tag and rank
        for data in junk * 20:
            s.sendto(data, ("127.0.0.1", port))
        s.close()
        await asyncio.sleep(0.2)
        await g.cast(b"still here")
        ev = await g.next_event(2)
        while type(ev) is not Deliver:
            ev = await g.next_event(2)
        assert ev.payload == b"still here"
        dropped = g._sock.unknown_group + g._sock.short + sum(g.ep.counters.values())
        assert dropped >= len(junk) * 20 - 20  # everything counted (empty datagrams may vanish)
        await g.leave()

    asyncio.run(run())


class Cluster:
    """Member processes on 127.0.0.1, always reaped."""

    def __init__(self, tmp_path, n: int, count: int = 200, transport: str = "udp") -> None:
        self.tmp_path, self.count, self.transport = tmp_path, count, transport
        self.addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(n)]
        self.seeds = ",".join(self.addrs)
        self.paths: list[str] = []
        self.procs: list[subprocess.Popen] = []
        for addr in list(self.addrs):
            self.spawn(addr)

    def spawn(self, addr: str) -> int:
        """Start a member process at `addr` (a seed, or a joiner); returns its index."""
        if addr not in self.addrs:
            self.addrs.append(addr)
        path = str(self.tmp_path / f"m{len(self.paths)}.jsonl")
        self.paths.append(path)
        cmd = [sys.executable, MEMBER, "t", addr, self.seeds, str(self.count), path]
        env = dict(os.environ, COHORT_TRANSPORT=self.transport)
        self.procs.append(
            subprocess.Popen(
                [*cmd, json.dumps(FAST)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
        return len(self.procs) - 1

    def wait_line(self, i: int, line: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[i]
        while time.monotonic() < deadline:
            out = proc.stdout.readline()
            if out.strip() == line:
                return
            if not out and proc.poll() is not None:
                raise AssertionError(f"member {i} exited: {proc.stderr.read()}")
        raise AssertionError(f"member {i} did not print {line} in {timeout}s")

    def views_of(self, i: int) -> list[tuple]:
        """The views member i has recorded so far: complete lines only, since the member may be
        writing its trace file as we read it."""
        with open(self.paths[i]) as f:
            complete = f.read().split("\n")[:-1]  # what follows the last newline is half-written
        rows = [json.loads(x) for x in complete if x.strip()]
        return [r[3] for r in rows if r[2] == "install"]

    def wait_view_without(self, i: int, addr: str, timeout: float = 10) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            views = self.views_of(i)
            if views and addr not in views[-1][1]:
                return time.monotonic() - t0
            time.sleep(0.01)
        raise AssertionError(f"member {i} never installed a view without {addr}")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sigkill_of_the_coordinator_and_sigstop_of_a_member(tmp_path, transport):
    c = Cluster(tmp_path, 4, transport=transport)
    try:
        for i in range(4):
            c.wait_line(i, "JOINED")
        c.procs[0].kill()  # SIGKILL the coordinator/sequencer while everyone casts
        took = c.wait_view_without(1, c.addrs[0])
        assert took < 0.3  # fast crash detection (heartbeats alone: 0.4 s timeout + 0.2 s lease)
        c.procs[3].send_signal(signal.SIGSTOP)  # hang a member past the suspicion timeout
        c.wait_view_without(1, c.addrs[3])
        time.sleep(0.3)
        c.procs[3].send_signal(signal.SIGCONT)  # it wakes up with a stale view, must not deliver
        for i in (1, 2):
            c.wait_line(i, "CAST", 20)
        deadline = time.monotonic() + 10  # the resumed member rejoins
        while c.addrs[3] not in c.views_of(1)[-1][1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.addrs[3] in c.views_of(1)[-1][1]
        for i in (1, 2, 3):
            c.procs[i].terminate()
        for i in (1, 2, 3):
            assert c.procs[i].wait(10) == 0
    finally:
        c.close()
    checked(c.paths, [])


@pytest.mark.timeout(60)
def test_a_member_joins_under_load_and_another_is_killed(tmp_path):
    c = Cluster(tmp_path, 3, count=400)
    try:
        for i in range(3):
            c.wait_line(i, "JOINED")
        joiner = c.spawn(f"127.0.0.1:{testing.free_udp_ports(1)[0]}")  # while everyone casts
        c.wait_line(joiner, "JOINED", 15)
        assert c.addrs[joiner] in c.views_of(0)[-1][1]
        c.procs[1].kill()  # a plain member this time
        c.wait_view_without(0, c.addrs[1])
        for i in (0, 2, joiner):
            c.wait_line(i, "CAST", 30)
        for i in (0, 2, joiner):
            c.procs[i].terminate()  # graceful leaves
        for i in (0, 2, joiner):
            assert c.procs[i].wait(10) == 0
    finally:
        c.close()
    checked(c.paths, [])
