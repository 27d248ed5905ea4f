"""`cohort bench calls`: replicated `Counter.add` against plain Pyro5 (and PySyncObj) in the same run.

Why ratios: absolute numbers on a shared 2-core machine move from run to run; the baselines are
measured right beside ours, with the same client threads, so the ratio is what to compare.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from cohort.orb.proxy import close_proxy
from cohort.orb.status import replica_status
from cohort.replication.cli.demo import reap, spawn_replica, wait_ready
from cohort.stack.transport.testing import free_udp_ports

PLAIN_SERVER = """
import sys
from Pyro5 import api, config
config.SERIALIZER = "msgpack"
config.SERVERTYPE = "thread"
config.THREADPOOL_SIZE = 64
@api.expose
class Counter:
    value = 0
    def add(self, n):
        Counter.value += n
        return Counter.value
daemon = api.Daemon(host="127.0.0.1", port=int(sys.argv[1]))
daemon.register(Counter, "counter")
print("ready", flush=True)
daemon.requestLoop()
"""


ORB_SERVER = """
import asyncio, sys
from cohort.orb.wire import WireServer
value = [0]
def add(n):
    value[0] += n
    return value[0]
async def main():
    server = WireServer({"counter": {"add": add}})
    await server.start("127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _serve_counter(script: str, port: int) -> tuple[subprocess.Popen, Callable]:
    """Start an unreplicated counter server (`script`) on `port`; return it and a factory of
    `add(1)` callers, one plain Pyro5 proxy (msgpack) per client thread."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE, text=True
    )
    proc.stdout.readline()

    def make_call():
        from Pyro5 import api, config

        config.SERIALIZER = "msgpack"
        proxy = api.Proxy(f"PYRO:counter@127.0.0.1:{port}")
        return lambda: proxy.add(1)

    return proc, make_call


def _run_clients(
    make_call: Callable[[], Callable[[], object]], clients: int, seconds: float
) -> dict:
    stop = threading.Event()
    lat: list[list[float]] = [[] for _ in range(clients)]
    starts: list[list[float]] = [[] for _ in range(clients)]
    errors = [0]

    def worker(i: int) -> None:
        call = make_call()
        mine, mstart = lat[i], starts[i]
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                call()
            except Exception:
                errors[0] += 1
                continue
            mine.append(time.perf_counter() - t0)
            mstart.append(t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - t0
    all_lat = sorted(x for xs in lat for x in xs)
    n = len(all_lat)
    pairs = sorted((s, d) for ss, ds in zip(starts, lat) for s, d in zip(ss, ds))
    return {
        "calls": n,
        "rate": n / elapsed,
        "p50": all_lat[n // 2] * 1000 if n else float("nan"),
        "p99": all_lat[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "max": all_lat[-1] * 1000 if n else float("nan"),
        "errors": errors[0],
        "series": pairs,
        "t0": t0,
    }


def bench_calls(
    replicas: int,
    client_counts: list[int],
    seconds: float,
    failover: bool,
    plot: str | None = None,
    secure: bool = False,
) -> int:
    from cohort.replication import connect

    ports = free_udp_ports(replicas + 1)
    addrs = [f"127.0.0.1:{p}" for p in ports[:replicas]]
    log_dir = tempfile.mkdtemp(prefix="cohort-bench-")
    procs = [
        spawn_replica("cohort.samples.counter:Counter", "counter", a, addrs, log_dir) for a in addrs
    ]
    plain, plain_call = _serve_counter(PLAIN_SERVER, ports[-1])
    procs.append(plain)
    orb_port = free_udp_ports(1)[0]
    # the same counter behind our asyncio Pyro5-protocol server, without the group (the "asyncio orb" row)
    orb, orb_call = _serve_counter(ORB_SERVER, orb_port)
    procs.append(orb)
    ref = f"PYROGROUP:counter@{','.join(addrs)}"
    secure_call = None
    if secure:  # the same group on the secure stack (authenticated joins, AEAD, rekeying)
        key = os.path.join(log_dir, "group.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        saddrs = [f"127.0.0.1:{p}" for p in free_udp_ports(replicas)]
        procs += [
            spawn_replica(
                "cohort.samples.counter:Counter",
                "scounter",
                a,
                saddrs,
                log_dir,
                ("--secret-file", key),
            )
            for a in saddrs
        ]
    try:
        wait_ready("counter", addrs, 30)
        shared = connect(ref)

        def replicated_call():
            return lambda: shared.add(1)

        shared.add(0)
        if secure:
            wait_ready("scounter", saddrs, 30)
            sproxy = connect(f"PYROGROUP:scounter@{','.join(saddrs)}")
            sproxy.add(0)

            def secure_call():
                return lambda: sproxy.add(1)

        print(f"cohort bench calls: {replicas} replicas, {seconds:g}s per run, Counter.add(1)")
        print(f"{'clients':>8} {'system':<12}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
        for clients in client_counts:
            base = _run_clients(plain_call, clients, seconds)
            server = _run_clients(orb_call, clients, seconds)
            ours = _run_clients(replicated_call, clients, seconds)
            print(
                f"{clients:>8} {'pyro5 plain':<12}{base['rate']:>10.0f}{base['p50']:>9.2f}{base['p99']:>9.2f}"
            )
            print(
                f"{clients:>8} {'asyncio orb':<12}{server['rate']:>10.0f}{server['p50']:>9.2f}"
                f"{server['p99']:>9.2f}{server['rate'] / base['rate']:>7.2f}x  (unreplicated)"
            )
            print(
                f"{clients:>8} {'cohort':<12}{ours['rate']:>10.0f}{ours['p50']:>9.2f}{ours['p99']:>9.2f}"
                f"{ours['rate'] / base['rate']:>7.2f}x"
            )
            print(
                f"{'':>8} p50 ratio cohort/plain: {ours['p50'] / base['p50']:.2f}x"
                f"   errors: {ours['errors']}"
            )
            if secure_call is not None:
                sec = _run_clients(secure_call, clients, seconds)
                print(
                    f"{clients:>8} {'cohort secure':<12}{sec['rate']:>10.0f}{sec['p50']:>9.2f}"
                    f"{sec['p99']:>9.2f}{sec['rate'] / base['rate']:>7.2f}x  "
                    f"(keeps {100 * sec['rate'] / ours['rate']:.0f}% of cohort's throughput)"
                )
            raft = _pysyncobj(clients, seconds)
            if raft is None:
                print(f"{clients:>8} {'pysyncobj':<12} skipped (pip install pysyncobj to compare)")
            else:
                print(
                    f"{clients:>8} {'pysyncobj':<12}{raft['rate']:>10.0f}{raft['p50']:>9.2f}"
                    f"{raft['p99']:>9.2f}   cohort/pysyncobj {ours['rate'] / raft['rate']:.1f}x"
                )
        if failover:
            st = replica_status("counter", addrs[0]) or {}
            coord = (st.get("members") or addrs)[0]
            victim = procs[addrs.index(coord)]
            killed_at = [0.0]

            def kill() -> None:
                killed_at[0] = time.perf_counter()
                victim.send_signal(signal.SIGKILL)

            timer = threading.Timer(seconds / 2, kill)
            timer.start()
            run = _run_clients(replicated_call, 1, seconds)
            timer.join()
            print(
                f"failover: SIGKILL of the coordinator {coord} mid-run: longest stall "
                f"{run['max']:.0f} ms, {run['calls']} calls, {run['errors']} errors"
            )
            if plot:
                _plot(run, killed_at[0], coord, plot)
        close_proxy(shared)
    finally:
        reap(procs)
    return 0


PYSYNCOBJ_NODE = """
import sys, threading, time
from pysyncobj import SyncObj, SyncObjConf, replicated

class Counter(SyncObj):
    def __init__(self, me, others):
        super().__init__(me, others, conf=SyncObjConf(dynamicMembershipChange=False))
        self.value = 0

    @replicated
    def add(self, n):
        self.value += n
        return self.value

me, others, clients, seconds = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4])
c = Counter(me, others)
if clients == 0:
    time.sleep(seconds + 60)
    sys.exit(0)
while c._getLeader() is None:
    time.sleep(0.05)
c.add(0, sync=True, timeout=10)
lat = []
stop = threading.Event()
lock = threading.Lock()
def worker():
    mine = []
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            c.add(1, sync=True, timeout=10)
        except Exception:
            continue
        mine.append(time.perf_counter() - t0)
    with lock:
        lat.extend(mine)
ts = [threading.Thread(target=worker) for _ in range(clients)]
t0 = time.perf_counter()
for t in ts:
    t.start()
time.sleep(seconds)
stop.set()
for t in ts:
    t.join()
el = time.perf_counter() - t0
lat.sort()
n = len(lat)
print(n / el, lat[n // 2] * 1000 if n else 0, lat[min(n - 1, int(n * 0.99))] * 1000 if n else 0)
"""


def _pysyncobj(clients: int, seconds: float) -> dict | None:
    """3 PySyncObj (Raft) nodes in separate processes; `sync=True` callers on one node."""
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return None
    addrs = [f"127.0.0.1:{p}" for p in free_udp_ports(3)]
    procs = []
    try:
        for i, me in enumerate(addrs):
            others = ",".join(a for a in addrs if a != me)
            n = clients if i == 0 else 0
            cmd = [sys.executable, "-c", PYSYNCOBJ_NODE, me, others, str(n), str(seconds)]
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            )
        out, _ = procs[0].communicate(timeout=seconds + 60)
        rate, p50, p99 = (float(x) for x in out.split())
        return {"rate": rate, "p50": p50, "p99": p99}
    except (subprocess.TimeoutExpired, ValueError):
        return None
    finally:
        reap(procs)


def _plot(run: dict, killed_at: float, victim: str, path: str) -> None:
    """Latency over time around the kill (matplotlib is an optional extra: cohort[plot])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install 'cohort[plot]'")
        return
    t0 = run["t0"]
    xs = [s - t0 for s, _ in run["series"]]
    ys = [d * 1000 for _, d in run["series"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(xs, ys, ".", markersize=2)
    ax.axvline(killed_at - t0, color="red", linestyle="--", label=f"SIGKILL {victim}")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("call latency (ms)")
    ax.set_title("replicated Counter.add, one client, coordinator killed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"latency plot written to {path}")
