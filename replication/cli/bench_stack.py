"""`cohort bench stack`: ordered multicast throughput and latency across real processes.

Why processes: the target (>= 150k ordered 64 B msgs/s delivered at every member of 3) is about the
real runtime on this machine, with its sockets, loop and GIL per process. Each member casts with a
window of outstanding messages (its own total-order delivery is the acknowledgement), so senders do
not outrun the group; the same run measures a raw baseline (the same fan-out of the same messages
over plain batched UDP, no ordering, no reliability) so the ratio survives a noisy machine.

    python -m cohort.replication.cli.bench_stack worker RAW|STACK NAME LISTEN SEEDS SECONDS SIZE WINDOW  (one member)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time

from cohort.stack.events import Deliver
from cohort.stack.events import View as ViewEv
from cohort.stack.transport import join as join_group
from cohort.stack.transport import testing

from cohort.net import parse_addr

_HDR = struct.Struct("!dH")  # send time (monotonic, system-wide on Linux), sender index


async def _stack_worker(
    name, listen, seeds, seconds, size, window, index, stack, transport, rx_loss=0.0
) -> dict:
    group = await join_group(name, listen, seeds, stack=stack, timeout=20, transport=transport)
    await asyncio.sleep(0.5)  # let every member join before measuring
    if rx_loss:  # from now on, inbound datagrams are lost at this member (joins stay quick)
        group._sock.faults = testing.Faults(rx_loss=rx_loss, seed=index)
    views0 = group.view
    pad = b"x" * max(0, size - _HDR.size)
    outstanding = 0
    delivered = 0
    lat: list[float] = []
    start = time.monotonic()
    cpu0 = time.process_time()
    end = start + seconds

    async def consume() -> None:
        nonlocal outstanding, delivered
        async for ev in group:
            if type(ev) is not Deliver:
                continue
            t, who = _HDR.unpack_from(ev.payload)
            now = time.monotonic()
            if now > end:
                continue
            delivered += 1
            if who == index:
                outstanding -= 1
            elif len(lat) < 200_000:
                lat.append(now - t)

    consumer = asyncio.create_task(consume())
    while time.monotonic() < end:
        burst = 0
        while outstanding < window and burst < 256:
            await group.cast(_HDR.pack(time.monotonic(), index) + pad)
            outstanding += 1
            burst += 1
        await asyncio.sleep(0)
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.2)
    consumer.cancel()
    changed = group.view != views0
    group.close()
    return {**_result(delivered, seconds, cpu, lat), "view_changed": changed}


async def _raw_worker(listen, seeds, seconds, size, index) -> dict:
    """The same fan-out over plain UDP with the same batching, no stack: the ceiling."""
    from cohort.stack.transport.datagrams import Batcher, unbatch

    loop = asyncio.get_running_loop()
    peers = [parse_addr(s) for s in seeds if s != listen]
    got = 0
    lat: list[float] = []
    end_box = [float("inf")]

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr) -> None:
            nonlocal got
            now = time.monotonic()
            if now > end_box[0]:
                return
            for obj in unbatch(data):
                got += 1
                if len(lat) < 200_000:
                    lat.append(now - _HDR.unpack_from(obj)[0])

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=parse_addr(listen))
    await asyncio.sleep(0.5)
    pad = b"x" * max(0, size - _HDR.size - 3)
    import msgpack

    batcher = Batcher()
    start = time.monotonic()
    cpu0 = time.process_time()
    end_box[0] = start + seconds
    while time.monotonic() < end_box[0]:
        for _ in range(256):
            msg = msgpack.packb(_HDR.pack(time.monotonic(), index) + pad)
            for p in peers:
                batcher.add(p, msg)
        for p, data in batcher.drain():
            transport.sendto(data, p)
        await asyncio.sleep(0)
    await asyncio.sleep(0.3)
    cpu = time.process_time() - cpu0
    transport.close()
    return _result(got, seconds, cpu, lat)


def _result(count: int, seconds: float, cpu: float, lat: list[float]) -> dict:
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")

    return {
        "rate": count / seconds,
        "count": count,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "cpu_us": cpu / count * 1e6 if count else float("nan"),
    }


def _run(
    mode: str,
    members: int,
    seconds: float,
    size: int,
    window: int,
    stack: str = "total",
    transport: str = "udp",
    rx_loss: float = 0.0,
) -> list[dict]:
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(members)]
    seeds = ",".join(addrs)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cohort.replication.cli.bench_stack",
                "worker",
                mode,
                "bench",
                a,
                seeds,
            ]
            + [str(seconds), str(size), str(window), str(i), stack, transport, str(rx_loss)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, a in enumerate(addrs)
    ]
    out = []
    try:
        for p in procs:
            line, _ = p.communicate(timeout=seconds + 60)
            out.append(json.loads(line.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def bench_stack(
    members: int = 3,
    size: int = 64,
    seconds: float = 10,
    window: int = 2000,
    stack: str = "total",
    transport: str = "udp",
) -> int:
    print(
        f"{members} member processes on 127.0.0.1, {size} B messages, {seconds}s, "
        f"{transport.upper()} transport, stack {stack}"
    )
    raw = _run("RAW", members, seconds, size, window)
    total = _run("STACK", members, seconds, size, window, stack, transport)
    raw_rate = statistics.mean(r["rate"] for r in raw)
    for label, rows in (("raw batched UDP fan-out (baseline)", raw), ("total order", total)):
        print(f"\n{label}:")
        for i, r in enumerate(rows):
            print(
                f"  member {i}: {r['rate']:10,.0f} msgs/s delivered   p50 {r['p50_ms']:.2f} ms"
                f"   p99 {r['p99_ms']:.2f} ms   cpu {r['cpu_us']:.1f} us/msg"
            )
    worst = min(r["rate"] for r in total)
    print(f"\nordered msgs/s delivered at every member: {worst:,.0f}")
    print(f"ratio to the raw baseline: {worst / raw_rate:.2f}")
    return 0


def bench_loss(
    members: int = 3,
    size: int = 64,
    seconds: float = 5,
    window: int = 500,
    stacks: list[str] | tuple[str, ...] = ("total-batch",),
    losses: list[float] | tuple[float, ...] = (0.0, 0.1),
    transport: str = "udp",
) -> int:
    """Ordered throughput with each member losing a fraction of the datagrams it receives
    (`testing.Faults.rx_loss`, drawn in the receive path after the group formed)."""
    print(
        f"{members} member processes on 127.0.0.1, {size} B messages, {seconds}s, window {window}, "
        f"inbound loss at every member"
    )
    for stack in stacks:
        base = None
        for loss in losses:
            rows = _run("STACK", members, seconds, size, window, stack, transport, loss)
            worst = min(r["rate"] for r in rows)
            base = base or worst
            p50 = max(r["p50_ms"] for r in rows)
            p99 = max(r["p99_ms"] for r in rows)
            vc = sum(bool(r.get("view_changed")) for r in rows)
            print(
                f"  {stack:<12} loss {loss:4.2f}: {worst:10,.0f} msgs/s at every member "
                f"({worst / base:.0%} of lossless)   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"
                f"   view changes seen by {vc}"
            )
    return 0


async def _view_worker(listen: str, seeds: list[str], fast: bool) -> None:
    """Join, then print every view as a JSON line stamped with the system-wide monotonic clock."""
    group = await join_group("failover", listen, seeds, timeout=20, fast_detection=fast)
    async for ev in group:
        if type(ev) is ViewEv:
            row = {"t": time.monotonic(), "members": list(ev.view.members)}
            print(json.dumps(row), flush=True)


def _detection(members: int, fast: bool) -> float:
    """Kill the coordinator of a fresh group with SIGKILL; seconds until every survivor has
    installed a view without it."""
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(members)]
    cmd = [
        sys.executable,
        "-m",
        "cohort.replication.cli.bench_stack",
        "views",
        "1" if fast else "0",
        ",".join(addrs),
    ]
    procs = [subprocess.Popen([*cmd, a], stdout=subprocess.PIPE, text=True) for a in addrs]
    try:
        views = {a: None for a in addrs}
        while any(v is None or len(v["members"]) < members for v in views.values()):
            for a, p in zip(addrs, procs):  # every member reports the full view before the kill
                if views[a] is None or len(views[a]["members"]) < members:
                    views[a] = json.loads(p.stdout.readline())
        victim = views[addrs[0]]["members"][0]
        t_kill = time.monotonic()
        procs[addrs.index(victim)].send_signal(signal.SIGKILL)
        latest = 0.0
        for a, p in zip(addrs, procs):
            if a == victim:
                continue
            while True:
                row = json.loads(p.stdout.readline())
                if victim not in row["members"]:
                    latest = max(latest, row["t"] - t_kill)
                    break
        return latest
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def bench_failover(members: int = 3, repeats: int = 5) -> int:
    """SIGKILL detection: the coordinator is killed; time until all survivors are in a new view."""
    print(f"SIGKILL of the coordinator of a {members}-member group, {repeats} runs each")
    for fast, label in ((True, "with fast crash detection (fdsock)"), (False, "heartbeats only")):
        times = [_detection(members, fast) * 1000 for _ in range(repeats)]
        print(
            f"  {label:<36} median {statistics.median(times):7.1f} ms   "
            f"max {max(times):7.1f} ms   ({', '.join(f'{t:.0f}' for t in times)})"
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "views":
        asyncio.run(_view_worker(sys.argv[4], sys.argv[3].split(","), sys.argv[2] == "1"))
    elif sys.argv[1] == "worker":
        mode, name, listen, seeds, seconds, size, window, index, stack, transport = sys.argv[2:12]
        rx_loss = float(sys.argv[12]) if len(sys.argv) > 12 else 0.0
        seeds_l = seeds.split(",")
        if mode == "RAW":
            coro = _raw_worker(listen, seeds_l, float(seconds), int(size), int(index))
        else:
            coro = _stack_worker(
                name,
                listen,
                seeds_l,
                float(seconds),
                int(size),
                int(window),
                int(index),
                stack,
                transport,
                rx_loss,
            )
        print(json.dumps(asyncio.run(coro)), flush=True)
        os._exit(0)
