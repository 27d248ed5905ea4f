"""Replica processes on 127.0.0.1 and clients that record histories, for real-process tests.

Every process is started in its own session and reaped by `Cluster.close()` (SIGCONT first, so a
stopped one can die). Client histories are lists of `tests.history.lincheck.Op`: a call that failed
with GroupUnavailable/timeout is recorded with `ret=None` (unknown outcome: it may have been applied).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from cohort.orb.proxy import close_proxy
from cohort.orb.status import replica_status
from cohort.stack.transport.testing import free_udp_ports

from tests.history.lincheck import Op

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Cluster:
    def __init__(
        self, cls: str, group: str, n: int, log_dir: str, spare: int = 2, extra: tuple = ()
    ) -> None:
        self.cls = cls
        self.extra = list(extra)  # more `cohort serve` options, e.g. ("--transport", "tcp")
        self.group = group
        self.log_dir = log_dir
        ports = free_udp_ports(n + spare)
        self.addrs = [f"127.0.0.1:{p}" for p in ports]
        self.seeds = self.addrs[:n]
        self.procs: dict[str, subprocess.Popen] = {}
        self.env: dict[str, dict[str, str]] = {}  # addr -> more environment for that replica
        self.all_procs: list[subprocess.Popen] = []

    @property
    def ref(self) -> str:
        return f"PYROGROUP:{self.group}@{','.join(self.seeds)}"

    def start(self, addr: str, seeds: list[str] | None = None) -> None:
        """`cohort serve` at `addr` with `--seeds` the cluster's seeds (or `seeds`; [] for none)."""
        log = open(os.path.join(self.log_dir, f"{addr.replace(':', '_')}.log"), "ab")  # noqa: SIM115
        seeds = self.seeds if seeds is None else seeds
        cmd = [
            sys.executable,
            "-m",
            "cohort.replication.cli",
            "serve",
            self.cls,
            "--group",
            self.group,
            "--listen",
            addr,
            *(["--seeds", ",".join(seeds)] if seeds else []),
            *self.extra,
        ]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(self.env.get(addr, {}))
        p = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        log.close()
        self.procs[addr] = p
        self.all_procs.append(p)

    def start_all(self, timeout: float = 30) -> None:
        for a in self.seeds:
            self.start(a)
        self.wait(
            lambda s: all(
                x and x["ready"] and len(x["members"]) == len(self.seeds) for x in s.values()
            ),
            self.seeds,
            timeout,
        )

    def status(self, addr: str, digest: bool = False) -> dict | None:
        return replica_status(self.group, addr, 1.0, digest)

    def wait(self, pred, addrs: list[str], timeout: float, digest: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            sts = {a: self.status(a, digest) for a in addrs}
            if pred(sts):
                return sts
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached in {timeout}s: {self._brief(sts)}")
            time.sleep(0.1)

    def wait_converged(self, addrs: list[str], timeout: float = 20) -> dict:
        """Every replica in `addrs` ready, in one view of exactly `addrs`, with equal state."""

        def ok(sts):
            if not all(s and s["ready"] for s in sts.values()):
                return False
            views = {tuple(s["vid"]) for s in sts.values()}
            members = {frozenset(s["members"]) for s in sts.values()}
            digests = {s["digest"] for s in sts.values()}
            return len(views) == 1 and members == {frozenset(addrs)} and len(digests) == 1

        return self.wait(ok, addrs, timeout, digest=True)

    def coordinator(self, among: list[str]) -> str:
        for a in among:
            s = self.status(a)
            if s and s["members"]:
                return s["members"][0]
        raise AssertionError("no replica answered status")

    def signal(self, addr: str, sig: int) -> None:
        self.procs[addr].send_signal(sig)

    def kill(self, addr: str) -> None:
        p = self.procs[addr]
        p.send_signal(signal.SIGKILL)
        p.wait(5)

    def close(self) -> None:
        for p in self.all_procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.all_procs:
            try:
                p.wait(8)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    @staticmethod
    def _brief(sts: dict) -> str:
        return "; ".join(
            f"{a}: "
            + (
                "down"
                if not s
                else f"vid={s['vid']} members={len(s['members'])} "
                f"ready={s['ready']} applied={s['applied']}"
            )
            for a, s in sts.items()
        )


class Clients:
    """`n` client threads, each with its own proxy, calling `op(proxy, rng_state)` until stopped."""

    def __init__(self, ref: str, n: int, make_op, timeout: float = 20.0) -> None:
        from cohort.replication import connect

        self.history: list[Op] = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.proxies = [connect(ref, timeout=timeout, attempt_timeout=2.0) for _ in range(n)]
        self.make_op = make_op
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def _run(self, i: int) -> None:
        from cohort.replication import CohortError

        proxy, k = self.proxies[i], 0
        while not self.stop_ev.is_set():
            name, args = self.make_op(i, k)
            k += 1
            t0 = time.monotonic()
            try:
                result: Any = getattr(proxy, name)(*args)
                op = Op(i, t0, time.monotonic(), name, tuple(args), result)
            except (CohortError, TimeoutError, OSError) as e:
                op = Op(i, t0, None, name, tuple(args), None)  # unknown outcome
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
            except Exception as e:  # a method's own exception: definite, recorded by name
                op = Op(i, t0, time.monotonic(), name, tuple(args), type(e).__name__)
            with self.lock:
                self.history.append(op)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        for p in self.proxies:
            close_proxy(p)

    def wait_progress(self, calls: int, timeout: float = 15.0) -> int:
        """Block until `calls` more calls have completed (the load ran through whatever happened
        meanwhile); fail with the client errors seen if it does not happen within `timeout`."""
        target = self.completed() + calls
        deadline = time.monotonic() + timeout
        while self.completed() < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"clients completed {self.completed()} calls, expected {target} within "
                    f"{timeout}s; last errors: {self.errors[-3:]}"
                )
            time.sleep(0.02)
        return self.completed()

    def completed(self) -> int:
        with self.lock:
            return sum(1 for op in self.history if op.ret is not None)
