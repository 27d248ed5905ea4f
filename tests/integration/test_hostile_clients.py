"""Hostile clients against one replica of a real 3-process group (`cohort serve`, default limits).

Each input below once got a replica excluded from its group: its event loop, which also runs the
heartbeats, spent seconds parsing or gigabytes buffering, or ran out of file descriptors. Here the
inputs are fired at one replica while an honest client calls the group through that replica and a
prober times the replica's own `status` call. The test prints the replica's RSS (and peak RSS)
before and after, and asserts that it stays bounded, that no replica ever installs a new view
(the attacked one is never excluded), and that the honest calls kept completing.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading
import time
import zlib

import pytest
from cluster import Clients, Cluster
from cohort.orb.connection import Connection
from cohort.orb.refs import STATUS, object_id

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "orb"))
from orbkit import SERPENT, annotation, connect_frame, exchange, frame  # noqa: E402

pytestmark = pytest.mark.timeout(90)
MiB = 1 << 20
INVOKE = 4


def mem(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))  # noqa: SIM115
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def zip_bomb(size: int) -> bytes:
    z = zlib.compressobj(9)
    chunk = b"\x00" * MiB
    return b"".join(z.compress(chunk) for _ in range(size // MiB)) + z.flush()


class Prober(threading.Thread):
    """Calls the attacked replica's `status` over its own connection; keeps the worst latency."""

    def __init__(self, group: str, addr: str) -> None:
        super().__init__(daemon=True)
        self.group, self.addr = group, addr
        self.worst, self.calls, self.errors = 0.0, 0, []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = Connection(self.addr, object_id(self.group), 5.0)
        while not self.halt.is_set():
            t = time.perf_counter()
            try:
                conn.call(STATUS, [], 5.0)
            except Exception as e:  # recorded for the test
                self.errors.append(repr(e))
                return
            self.worst = max(self.worst, time.perf_counter() - t)
            self.calls += 1
            time.sleep(0.02)
        conn.close()


def test_hostile_inputs_leave_the_replica_in_its_group(tmp_path):
    c = Cluster("cohort.samples.kvstore:KVStore", "hostile", 3, str(tmp_path))
    flood: list[socket.socket] = []
    try:
        # as in the report: 1,100 idle connections against a replica under `ulimit -n 1024`
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
        try:
            c.start_all()  # the replicas inherit the limit
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        sts = c.wait_converged(c.seeds)
        vids = {a: s["vid"] for a, s in sts.items()}
        target = c.seeds[1]
        pid = c.procs[target].pid
        rss0, _ = mem(pid)
        print(f"\nreplica {target} pid {pid}: RSS before {rss0} MiB")

        prober = Prober(c.group, target)
        prober.start()
        ops = lambda i, k: ("put", (f"k{i}", k)) if k % 2 else ("get", (f"k{i}",))  # noqa: E731
        with Clients(f"PYROGROUP:{c.group}@{target}", 2, ops, timeout=10.0) as clients:
            clients.wait_progress(20)
            hello = connect_frame(obj=object_id(c.group))
            hostile = {
                "4 MB serpent body": frame(INVOKE, SERPENT, b"[" + b"1," * (2 * MiB - 1) + b"1]"),
                "zlib bomb (400 MB)": frame(INVOKE, 4, zip_bomb(400 * MiB), flags=2),
                "header announcing 1 GiB": frame(INVOKE, 4, b"\0" * MiB, data_size=1 << 30),
                "200 MB annotation": frame(
                    INVOKE, 4, b"", annotations=annotation(b"BIG!", b"", 200 * MiB)
                ),
                "non-ASCII annotation id": frame(
                    INVOKE, 4, b"\x90", annotations=annotation(b"\xff\xfe\x00\x01", b"x")
                ),
                "16 MiB of empty msgpack maps": frame(  # within the size limit: 1 GB of dicts
                    INVOKE,
                    4,
                    b"\xdd" + (16 * MiB - 5).to_bytes(4, "big") + b"\x80" * (16 * MiB - 5),
                ),
                "marshal serializer": frame(1, 2, b"\x00", seq=0),
            }
            for name, data in hostile.items():
                payload = data if name == "marshal serializer" else hello + data
                raw, took = exchange(target, payload, timeout=10.0)
                print(f"  {name}: {len(data)} bytes refused in {took * 1000:.1f} ms")
                assert took < 5.0, name
            serpent = frame(INVOKE, SERPENT, b"[" + b"1," * (32 * 1024 - 2) + b"1]")  # 64 KiB - 1
            t = time.perf_counter()
            threads = [
                threading.Thread(
                    target=lambda: [
                        exchange(target, connect_frame(SERPENT, object_id(c.group)) + serpent)
                        for _ in range(5)
                    ]
                )
                for _ in range(3)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            print(
                f"  15 serpent bodies at the 64 KiB limit decoded in {time.perf_counter() - t:.2f}s"
            )
            t = time.perf_counter()
            for _ in range(1100):
                try:
                    flood.append(socket.create_connection(tuple(target.split(":")), timeout=5))
                except OSError:
                    break
            print(f"  {len(flood)} idle connections opened in {time.perf_counter() - t:.2f}s")
            t = time.perf_counter()
            with pytest.raises(ConnectionError, match="connection limit"):
                Connection(target, object_id(c.group), 5.0)
            print(
                f"  a new client refused at the limit in {(time.perf_counter() - t) * 1000:.1f} ms"
            )
            clients.wait_progress(20)
            for s in flood:
                s.close()
            flood.clear()
            time.sleep(0.5)
            Connection(target, object_id(c.group), 5.0).close()  # room again
            clients.wait_progress(20)
            done = clients.completed()
        prober.halt.set()
        prober.join(10)
        rss1, hwm = mem(pid)
        print(f"replica {target}: RSS after {rss1} MiB, peak {hwm} MiB (before {rss0} MiB)")
        print(f"honest calls completed: {done}; worst status latency {prober.worst * 1000:.0f} ms")
        assert prober.errors == [] and prober.calls > 20
        assert rss1 < rss0 + 200 and hwm < rss0 + 200
        sts = {a: c.status(a) for a in c.seeds}
        assert {a: s["vid"] for a, s in sts.items()} == vids, "a view change: someone was excluded"
        orb = sts[target]["orb"]
        print(f"orb counters: {orb}")
        expected = {"too_large": 3, "expansion": 1, "bad_annotation": 2, "refused_serializer": 1}
        expected["bad_message"] = 15  # the serpent bodies: decoded, but not a call (reported)
        assert {k: orb.get(f"orb.{k}", 0) for k in expected} == expected
        assert orb["orb.refused_connection"] >= 500
        log = open(os.path.join(c.log_dir, f"{target.replace(':', '_')}.log")).read()  # noqa: SIM115
        assert "Too many open files" not in log and "Traceback" not in log
    finally:
        for s in flood:
            s.close()
        c.close()
