"""Benchmark of the secure stack: what encryption costs per message, and how long a rekey takes.

    .venv/bin/python tests/security/bench_secure.py sim [--messages 100000] [--members 3]
    .venv/bin/python tests/security/bench_secure.py rekey [--members 5] [--rounds 20]
    .venv/bin/python tests/security/bench_secure.py stack [--members 3] [--seconds 5]

`sim` runs `cohort bench sim` (cohort.replication.cli.sim.bench_sim: CPU per delivered message inside the
endpoints, simulator excluded) for the total stack and for the secure one, same seed and load.
`rekey` starts member processes on 127.0.0.1, then makes one more member join and leave
`rounds` times; each join and each leave is a view change with a rekey. Per view change it
reports the key distribution time (from the coordinator installing the view, which is when it
sends the wrapped keys, to the last member installing it: the rekey proper) and the whole view
change (from the join request or leave to the last member installing), for the secure stack and,
as the baseline, for the total stack.
`stack` runs `cohort bench stack`'s member processes (cohort.replication.cli.bench_stack: every member casts 64 B messages
with a window of 500 outstanding, real UDP on 127.0.0.1) for total-batch and secure-batch, then
total and secure, and reports the ordered messages per second delivered at every member.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from cohort.stack.events import View as ViewEv  # noqa: E402
from cohort.stack.transport import REAL_PARAMS, testing  # noqa: E402
from cohort.stack.transport import join as join_group  # noqa: E402

FAST = {
    "suspect": {"interval": 0.05, "timeout": 0.4, "lease": 0.2, "verify": 0.2},
    "gms": {"retry_interval": 0.025, "flush_timeout": 0.4, "join_interval": 0.1, "fresh": 0.2},
}


def _params(stack: str, secret_hex: str) -> dict:
    p = {k: dict(v) for k, v in FAST.items()}
    if "secure" in stack:
        p["auth"] = {"secret": bytes.fromhex(secret_hex)}
    return p


# --- throughput: bench_sim with and without encryption ---------------------------------------------


def bench_sim(messages: int, members: int) -> None:
    from cohort.replication.cli import sim as tools
    from cohort.stack import sim

    sim.SIM_PARAMS["auth"] = {"secret": os.urandom(32)}  # this process only: the bench's secret
    rows = {}
    for stack in ("total", "secure"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            tools.bench_sim(members=members, messages=messages, size=64, stack=stack, profile=False)
        text = out.getvalue()
        us = float(re.search(r"per member: ([\d.]+) us", text).group(1))
        rate = int(re.search(r"one core for all members: ([\d,]+)", text).group(1).replace(",", ""))
        rows[stack] = (us, rate)
        print(f"{stack:>7}: {us:6.2f} us stack CPU per delivered message per member, {rate:,} /s")
    (u0, r0), (u1, r1) = rows["total"], rows["secure"]
    print(f"encryption costs {u1 - u0:.2f} us per message per member: throughput x{r1 / r0:.2f}")


# --- rekey time on loopback ------------------------------------------------------------------------


async def _worker(listen: str, seeds: list[str], stack: str, secret_hex: str) -> None:
    group = await join_group("bench", listen, seeds, stack=stack, params=_params(stack, secret_hex))
    async for ev in group:
        if type(ev) is ViewEv:
            v = ev.view
            row = {"t": time.monotonic(), "me": listen, "vid": list(v.vid), "n": v.n}
            print(json.dumps(row), flush=True)


def _rekey(members: int, rounds: int, stack: str) -> dict[str, list[float]]:
    secret_hex = os.urandom(32).hex()
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(members)]
    fixed, extra = addrs[:-1], addrs[-1]
    rows: list[dict] = []
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "worker", a, ",".join(fixed), stack, secret_hex],
            stdout=subprocess.PIPE,
            text=True,
        )
        for a in fixed
    ]

    def read(p: subprocess.Popen) -> None:
        for line in p.stdout:
            rows.append(json.loads(line))

    import threading

    for p in procs:
        threading.Thread(target=read, args=(p,), daemon=True).start()
    changes: list[tuple[str, float, tuple]] = []  # (join|leave, start time, vid installed)

    async def cycle() -> None:
        deadline = time.monotonic() + 30
        while not any(r["n"] == len(fixed) for r in rows) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        for _ in range(rounds):
            t0 = time.monotonic()
            g = await join_group(
                "bench", extra, fixed, stack=stack, params=_params(stack, secret_hex)
            )
            changes.append(("join", t0, tuple(g.view.vid)))
            await asyncio.sleep(0.4)  # the joiner's confirming flush comes and goes
            t1 = time.monotonic()
            vid = g.view.vid
            g.ep.leave()
            g._pump()
            t_end = time.monotonic() + 5
            while time.monotonic() < t_end:  # the view without it, as the others install it
                later = [r for r in rows if tuple(r["vid"]) > tuple(vid) and r["n"] == len(fixed)]
                if later:
                    changes.append(("leave", t1, tuple(later[0]["vid"])))
                    break
                await asyncio.sleep(0.005)
            g.close()
            await asyncio.sleep(0.4)

    try:
        asyncio.run(cycle())
        time.sleep(0.3)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(5)
    out: dict[str, list[float]] = {"join rekey": [], "leave rekey": [], "join": [], "leave": []}
    for kind, t0, vid in changes:
        installs = [r["t"] for r in rows if tuple(r["vid"]) == vid]
        coord = [r["t"] for r in rows if tuple(r["vid"]) == vid and r["me"] == vid[1]]
        if len(installs) < len(fixed) or not coord:
            continue
        out[f"{kind} rekey"].append((max(installs) - coord[0]) * 1e3)
        out[kind].append((max(installs) - t0) * 1e3)
    return out


def bench_rekey(members: int, rounds: int) -> None:
    print(f"{members} members on 127.0.0.1 ({members - 1} processes + one that joins and leaves)")
    for stack in ("total", "secure"):
        res = _rekey(members, rounds, stack)
        print(f"\nstack {stack}:")
        for k, v in res.items():
            if v:
                print(
                    f"  {k:>12}: median {statistics.median(v):6.2f} ms  max {max(v):6.2f} ms"
                    f"  ({len(v)} view changes)"
                )
    from cohort.stack.layers import keyring

    ring = keyring.new_ring("g", os.urandom(32), os.urandom(32), {})
    peers = [keyring.new_ring("g", os.urandom(32), os.urandom(32), {}) for _ in range(members - 1)]
    sec = keyring.derive(os.urandom(32), "g")
    t0 = time.perf_counter()
    n = 200
    for _ in range(n):
        for p in peers:
            ctx = keyring.grant_context("g", (1, "a"), "a", "b", ring.pub, p.pub)
            sealed = keyring.wrap(sec, ring, p.pub, ctx, ring.key, b"\0" * 12)
        keyring.unwrap(sec, peers[-1], ring.pub, ctx, b"\0" * 12, sealed)
        keyring.view_cipher_key(ring.key, "g", (1, "a"), 7, "aes-256-gcm")
    cpu = (time.perf_counter() - t0) / n * 1e3
    print(
        f"\nkey transport CPU for {members} members: {cpu:.2f} ms "
        f"({members - 1} grants wrapped + one opened + the view's AEAD key derived)"
    )


# --- throughput on real sockets: cohort.replication.cli.bench_stack's workers, with the secret --------------------------


def _throughput(members: int, seconds: float, stack: str) -> float:
    addrs = [f"127.0.0.1:{p}" for p in testing.free_udp_ports(members)]
    secret_hex = os.urandom(32).hex()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "tworker", a, ",".join(addrs), str(seconds), str(i)]
            + [stack, secret_hex],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, a in enumerate(addrs)
    ]
    rates = []
    try:
        for p in procs:
            line, _ = p.communicate(timeout=seconds + 60)
            rates.append(json.loads(line.strip().splitlines()[-1])["rate"])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return min(rates)


def bench_stack(members: int, seconds: float) -> None:
    print(f"{members} member processes on 127.0.0.1, 64 B casts, window 500, {seconds}s each")
    for plain, secure in (("total-batch", "secure-batch"), ("total", "secure")):
        r0 = _throughput(members, seconds, plain)
        r1 = _throughput(members, seconds, secure)
        print(
            f"  {plain:>12}: {r0:10,.0f} msgs/s   {secure:>12}: {r1:10,.0f} msgs/s"
            f"   encryption keeps {r1 / r0:.0%} of the throughput"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        listen, seeds, stack, secret_hex = sys.argv[2:6]
        asyncio.run(_worker(listen, seeds.split(","), stack, secret_hex))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "tworker":
        from cohort.replication.cli import bench_stack as bench

        listen, seeds, seconds, index, stack, secret_hex = sys.argv[2:8]
        REAL_PARAMS["auth"] = {"secret": bytes.fromhex(secret_hex)}  # this worker only
        coro = bench._stack_worker(
            "bench", listen, seeds.split(","), float(seconds), 64, 500, int(index), stack, "udp"
        )
        print(json.dumps(asyncio.run(coro)), flush=True)
        os._exit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["sim", "rekey", "stack"])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--members", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    if a.what == "sim":
        bench_sim(a.messages, a.members or 3)
    elif a.what == "stack":
        bench_stack(a.members or 3, a.seconds)
    else:
        bench_rekey(a.members or 5, a.rounds)


if __name__ == "__main__":
    main()
