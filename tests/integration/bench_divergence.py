"""What the divergence checks cost: calls/s of `Bulk.add` on a 100 MiB replicated state, checks off
and on, in the same run (3 `cohort serve` processes on 127.0.0.1, the state of `bulk.py`).

    .venv/bin/python tests/integration/bench_divergence.py [--mib 100] [--seconds 8]
        [--clients 1,8] [--every 0,1000,100,10] [--rounds 2]   (--rounds 0: in-process only)

`--every 0` is checks off (`--check-every 0 --check-interval 0`); others set `--check-every N`
(and no time trigger, so that the number of checks is the same in every run). Each row: calls/s,
p50/p99 latency, the replicas' CPU per call (user+sys of the three processes, which includes
their heartbeats) and the checks the coordinator made; then the medians over the rounds. The first check after the fill hashes every value once (new
data) and is made before the clock starts: what is measured is the steady state. Rounds alternate the settings, so drift on a shared machine
spreads over all of them. Also printed: what one check's hash costs on this state, with and
without the large values remembered (`stream.LeafDigests` vs `stream.digest`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

from cluster import Cluster  # noqa: E402
from cohort.replication import connect  # noqa: E402
from cohort.state import stream  # noqa: E402

MiB = 1 << 20


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hash_costs(mib: int) -> None:
    from bulk import Bulk

    b = Bulk()
    b.fill(0, mib)
    state = [b.__dict__, [], 1]
    t = time.perf_counter()
    stream.digest(state)
    full = time.perf_counter() - t
    leaves = stream.LeafDigests()
    leaves.digest(stream.freeze(state))
    b.add(1)
    t = time.perf_counter()
    frozen = stream.freeze(state)
    cut = time.perf_counter() - t
    t = time.perf_counter()
    leaves.digest(frozen)
    again = time.perf_counter() - t
    print(
        f"one check on {mib} MiB: cut (freeze, on the core) {cut * 1e3:.2f} ms; hash (off the "
        f"core) {again * 1e3:.2f} ms with unchanged values remembered ({leaves.hashed} bytes "
        f"hashed), {full * 1e3:.0f} ms hashing everything"
    )


def engine_costs(mib: int, calls: int = 4000, rounds: int = 2) -> None:
    """The checks' CPU alone: three engines in one process on the fake group of the engine tests
    (no network, no threads: the hash runs inline), `Bulk.add` on `mib` MiB; the best of
    `rounds` runs per setting, settings interleaved."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "replication"))
    from bulk import Bulk
    from cohort.replication.divergence import Policy
    from enginekit import Group, submit

    settings = (None, 1000, 100, 10, 1)
    best: dict = {}
    for _ in range(rounds):
        for every in settings:
            g = Group(Policy(every=every, interval=None)).form(Bulk, "abc")
            submit(g["a"], "fill", 0, mib, rid=1)
            for i in range(2, 2 + (every or 0)):  # up to the first check: it hashes all, once
                submit(g["a"], "add", 0, rid=i, done=i - 1)
            g.settle()
            rid = 2 + (every or 0)
            t = time.process_time()
            for i in range(rid, rid + calls):
                submit(g["a"], "add", 1, rid=i, done=i - 1)
                if i % 50 == 0:
                    g.settle()
            g.settle()
            per = (time.process_time() - t) / calls
            best[every] = min(best.get(every, per), per)
            del g
    base = best[None]
    for every in settings:
        per = best[every]
        line = f"engines only, checks {'every ' + str(every) if every else 'off':<11}: "
        line += f"{1 / per:7.0f} calls/s (3 engines on one CPU)"
        if every and every <= 10:
            line += f", {(per - base) * every / 3 * 1e3:.2f} ms of CPU per check per replica"
        print(line)


def load(proxies: list, seconds: float) -> list[float]:
    """One thread per proxy calling `add(1)` for `seconds`; the latencies of every call."""
    lat: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(proxy) -> None:
        mine = []
        while not stop.is_set():
            t = time.perf_counter()
            proxy.add(1)
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(px,)) for px in proxies]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    return lat


def run(tmp: str, every: int, mib: int, clients: list[int], seconds: float) -> list[tuple]:
    checks = ("--check-every", str(every), "--check-interval", "0")
    c = Cluster("tests.integration.bulk:Bulk", f"bench{every}", 3, tmp, extra=checks)
    rows = []
    try:
        c.start_all()
        with connect(c.ref, timeout=60) as p:
            for start in range(0, mib, 25):
                p.fill(start, min(25, mib - start))
        c.wait_converged(c.seeds, timeout=60)
        if every:  # the first check hashes every value once (new data); measure the steady state
            with connect(c.ref, timeout=60) as p:
                for _ in range(every):
                    p.add(0)
            c.wait(lambda s: all(x and x["check"]["recent"] for x in s.values()), c.seeds, 30)
        for n in clients:
            proxies = [connect(c.ref, timeout=20) for _ in range(n)]
            for proxy in proxies:
                proxy.add(0)  # connected before the clock starts
            before = {a: c.status(a)["check"]["recent"] for a in c.seeds}
            cpu0 = sum(cpu_seconds(c.procs[a].pid) for a in c.seeds)
            t0 = time.perf_counter()
            lat = load(proxies, seconds)
            wall = time.perf_counter() - t0
            cpu = sum(cpu_seconds(c.procs[a].pid) for a in c.seeds) - cpu0
            for proxy in proxies:
                proxy.close()
            lat.sort()
            calls = len(lat)
            st = c.status(c.seeds[0])
            last = st["check"]["recent"][-1][0] if st["check"]["recent"] else 0
            first = before[c.seeds[0]][-1][0] if before[c.seeds[0]] else 0
            made = (last - first) // every if every else 0
            row = (every, n, calls / wall, lat[calls // 2], lat[int(calls * 0.99)], cpu / calls)
            rows.append(row)
            print(_line(*row) + f"  checks made {made}", flush=True)
        sts = c.wait_converged(c.seeds, timeout=30)
        assert not any(s["check"]["diverged"] for s in sts.values())
    finally:
        c.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--every", default="0,1000,100,10")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    clients = [int(x) for x in args.clients.split(",") if x]
    settings = [int(x) for x in args.every.split(",") if x]
    hash_costs(args.mib)
    engine_costs(args.mib)
    if args.rounds == 0:
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for every in settings if r % 2 == 0 else reversed(settings):
                rows += run(tmp, every, args.mib, clients, args.seconds)
    print(f"medians of {args.rounds} rounds:")
    for every in settings:
        for n in clients:
            got = [r for r in rows if r[:2] == (every, n)]
            print(_line(every, n, *(statistics.median(r[i] for r in got) for i in (2, 3, 4, 5))))
    return 0


def _line(every: int, n: int, rate: float, p50: float, p99: float, cpu: float) -> str:
    return (
        f"checks {'every ' + str(every) if every else 'off':<11} clients {n:>2}: "
        f"{rate:6.0f} calls/s  p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms  "
        f"cpu {cpu * 1e3:5.2f} ms/call"
    )


if __name__ == "__main__":
    sys.exit(main())
