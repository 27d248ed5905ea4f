"""`cohort demo`: a replicated bank in three processes, a coordinator crash, a join, and the checks.

Why these steps: they are what a fault-tolerant service must survive without a client noticing
more than a stall — the sequencer dies mid-run (SIGKILL), a fresh replica joins and receives the
state while clients keep transferring money, and at the end money is conserved and every replica
holds the same state.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from cohort.orb.proxy import close_proxy, proxy_info
from cohort.orb.status import replica_status
from cohort.stack.transport.testing import free_udp_ports

ACCOUNTS = 10
INITIAL = 1000


def spawn_replica(
    cls: str, group: str, addr: str, seeds: list[str], log_dir: str, extra: tuple = ()
) -> subprocess.Popen:
    log = open(os.path.join(log_dir, f"replica-{addr.replace(':', '_')}.log"), "ab")  # noqa: SIM115
    cmd = [
        sys.executable,
        "-m",
        "cohort.replication.cli",
        "serve",
        cls,
        "--group",
        group,
        "--listen",
        addr,
        "--seeds",
        ",".join(seeds),
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(group: str, addrs: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = [replica_status(group, a) for a in addrs]
        if all(s and s.get("ready") for s in sts):
            return
        time.sleep(0.1)
    raise TimeoutError(f"replicas {addrs} not ready after {timeout}s")


def reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 6
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Clients:
    """Threads doing random transfers through ONE shared proxy (it is thread-safe)."""

    def __init__(self, proxy: Any, n: int) -> None:
        self.proxy = proxy
        self.n = n
        self.stop = threading.Event()
        self.calls = 0
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        while not self.stop.is_set():
            a, b = rng.sample(range(ACCOUNTS), 2)
            t0 = time.monotonic()
            try:
                self.proxy.transfer(f"acct{a}", f"acct{b}", rng.randint(1, 50))
            except Exception as e:
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
                continue
            with self.lock:
                self.calls += 1
                self.latencies.append((t0, time.monotonic() - t0))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(40)


def run_demo(seconds: float = 12.0, clients: int = 4) -> int:
    from cohort.replication import connect

    group = "bank"
    ports = free_udp_ports(4)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    seeds = addrs[:3]
    log_dir = tempfile.mkdtemp(prefix="cohort-demo-")
    procs: list[subprocess.Popen] = []
    ok = True
    print(f"cohort demo: a replicated bank (samples/bank.py) on {', '.join(seeds)}")
    print(f"replica logs: {log_dir}")
    try:
        t0 = time.monotonic()
        procs = [spawn_replica("cohort.samples.bank:Bank", group, a, seeds, log_dir) for a in seeds]
        wait_ready(group, seeds, 30)
        print(f"  3 replicas formed the group in {time.monotonic() - t0:.2f}s")
        bank = connect(f"PYROGROUP:{group}@{','.join(seeds)}", timeout=30)
        for i in range(ACCOUNTS):
            bank.open(f"acct{i}", INITIAL)
        work = Clients(bank, clients)
        start = time.monotonic()
        work.start()
        time.sleep(seconds / 3)
        st = replica_status(group, seeds[0]) or replica_status(group, seeds[1])
        coord = st["members"][0]
        victim = procs[seeds.index(coord)]
        victim.send_signal(signal.SIGKILL)
        kill_at = time.monotonic()
        print(f"  t={kill_at - start:4.1f}s  SIGKILL the coordinator/sequencer {coord}")
        time.sleep(seconds / 3)
        join_at = time.monotonic()
        procs.append(spawn_replica("cohort.samples.bank:Bank", group, addrs[3], seeds, log_dir))
        print(
            f"  t={join_at - start:4.1f}s  start a fresh replica {addrs[3]} (joins, gets the state)"
        )
        live = [a for a in seeds if a != coord] + [addrs[3]]
        wait_ready(group, [addrs[3]], 30)
        ready_at = time.monotonic()
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
        work.join()
        elapsed = time.monotonic() - start
        total = bank.total()
        stalls = sorted(work.latencies, key=lambda x: -x[1])
        longest = stalls[0] if stalls else (0.0, 0.0)
        # every live replica must hold the same state once the last call is applied everywhere
        deadline = time.monotonic() + 10
        while True:
            sts = {a: replica_status(group, a, digest=True) for a in live}
            digests = {(s or {}).get("digest") for s in sts.values()}
            applied = {(s or {}).get("applied") for s in sts.values()}
            if (len(digests) == 1 and None not in digests) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        joiner = sts.get(addrs[3]) or {}
        xfer = (joiner.get("transfers") or [{}])[-1]
        print()
        print("report")
        print(
            f"  calls completed        {work.calls} in {elapsed:.1f}s by {clients} client threads"
        )
        print(
            f"  client errors          {len(work.errors)}"
            + (f" ({work.errors[0]})" if work.errors else "")
        )
        print(f"  failovers (proxy)      {proxy_info(bank).failovers}")
        print(
            f"  longest client stall   {longest[1] * 1000:.0f} ms (call started t={longest[0] - start:.1f}s)"
        )
        print(
            f"  state transfer         {xfer.get('bytes', '?')} bytes from {xfer.get('donor', '?')}"
            f" in {xfer.get('seconds', 0) * 1000:.0f} ms; joiner serving {ready_at - join_at:.2f}s after start"
        )
        print("  view history (at " + live[0] + "):")
        for vid, members in (sts.get(live[0]) or {}).get("views", []):
            print(f"    ({vid[0]},{vid[1]})  {', '.join(members)}")
        checks = [
            (
                f"money conserved: total {total} == {ACCOUNTS * INITIAL}",
                total == ACCOUNTS * INITIAL,
            ),
            (
                f"every live replica has the same state ({len(live)} replicas, applied {sorted(a for a in applied if a)})",
                len(digests) == 1 and None not in digests,
            ),
            ("the joiner received the state", bool(joiner.get("ready"))),
            ("no client call failed", not work.errors),
            (
                "clients kept completing calls after the crash",
                any(t > kill_at + 0.5 for t, _ in work.latencies),
            ),
        ]
        print()
        for text, good in checks:
            print(f"  [{'ok' if good else 'FAILED'}] {text}")
            ok = ok and good
        close_proxy(bank)
    except Exception as e:
        print(f"demo failed: {type(e).__name__}: {e} (replica logs in {log_dir})")
        ok = False
    finally:
        reap(procs)
    print("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="a replicated bank in 3 processes through a coordinator crash and a join",
        description="Start 3 replicas of cohort.samples.bank:Bank, run client threads that move "
        "money, SIGKILL the coordinator mid-run, start a fresh replica, then check that money is "
        "conserved, every replica holds the same state and no call failed (exit status 0).",
    )
    p.add_argument(
        "--simulated", action="store_true", help="the simulated-group demo (the stack alone)"
    )
    p.add_argument("--seconds", type=float, default=12.0, help="how long the clients run")
    p.add_argument("--clients", type=int, default=4, help="client threads")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.simulated:
        from cohort.replication.cli.sim import demo

        return demo()
    return run_demo(seconds=args.seconds, clients=args.clients)
