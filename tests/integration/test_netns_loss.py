"""Loss without collapse, through the kernel: 3 replicas in 3 network namespaces, 10% of every
member's inbound group datagrams dropped by iptables (`statistic` match; `tc netem` is not in
this kernel). Prints write throughput and latency at 0% and 10% loss, same clients, same run.

Issue "Never lose the state" measured 11,265 -> 322 writes/s (-97%) here before the nak layer
asked for holes at once; the figure is printed, not asserted (timing on a shared 2-core machine is
not a test). The test asserts that calls keep completing, without errors, at 10% loss.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from cohort.orb.status import replica_status
from cohort.replication import connect
from netns import Hosts, available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
why_not = available()
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(why_not is not None, reason=why_not or ""),
]


def measure(ref: str, seconds: float, threads: int = 16) -> tuple[int, list[float], list]:
    lat: list[float] = []
    errors: list = []
    stop = time.monotonic() + seconds

    def run() -> None:
        with connect(ref, timeout=20) as p:
            while time.monotonic() < stop:
                t = time.monotonic()
                try:
                    p.add(1)
                except Exception as e:  # recorded and asserted by the test
                    errors.append(e)
                lat.append(time.monotonic() - t)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 30)
    return len(lat), sorted(lat), errors


def test_writes_keep_flowing_at_10_percent_loss_per_member(tmp_path):
    hosts = Hosts(3)
    procs: list[subprocess.Popen] = []
    try:
        addrs = [f"{ip}:7001" for ip in hosts.ips]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for i, addr in enumerate(addrs):
            log = open(tmp_path / f"r{i}.log", "ab")  # noqa: SIM115
            cmd = [
                sys.executable,
                "-m",
                "cohort.replication.cli",
                "serve",
                "cohort.samples.counter:Counter",
            ]
            cmd += ["--group", "lossy", "--listen", addr, "--seeds", ",".join(addrs)]
            procs.append(
                subprocess.Popen(
                    hosts.prefix_cmd(i) + cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,
                )
            )
            log.close()
        deadline = time.monotonic() + 30
        while True:
            sts = [replica_status("lossy", a, 1.0) for a in addrs]
            if all(s and s["ready"] and len(s["members"]) == 3 for s in sts):
                break
            assert time.monotonic() < deadline, f"group did not form: {sts}"
            time.sleep(0.2)
        ref = f"PYROGROUP:lossy@{','.join(addrs)}"
        measure(ref, 1.0)  # warm up
        n0, lat0, err0 = measure(ref, 5.0)
        for i in range(3):
            hosts.drop_udp_in(i, 0.1)
        n1, lat1, err1 = measure(ref, 5.0)
        views = [len(replica_status("lossy", a, 2.0)["views"]) for a in addrs]

        def p(xs, q):
            return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3

        print(
            f"\n3 replicas in network namespaces, 16 client threads: lossless {n0 / 5:.0f} "
            f"writes/s (p50 {p(lat0, 0.5):.1f} ms, p99 {p(lat0, 0.99):.1f} ms); 10% inbound "
            f"UDP loss at every member {n1 / 5:.0f} writes/s (p50 {p(lat1, 0.5):.1f} ms, p99 "
            f"{p(lat1, 0.99):.1f} ms): {n1 / max(n0, 1):.0%} of lossless; views per replica "
            f"{views}"
        )
        assert not err0 and not err1, (err0 + err1)[:3]
        assert n1 > 0
    finally:
        for pr in procs:
            try:
                os.killpg(pr.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            pr.wait(5)
        hosts.close()
