"""A replica cut off from the majority (iptables on 127.0.0.1) says so at once, then comes back.

The rules drop the replica's group datagrams (its UDP port, both directions) and leave its client
port reachable, so the test can ask the cut-off replica itself. Needs root and iptables (`make
test` installs Debian's iptables when it can); skipped otherwise. Every rule carries a comment
unique to the test and is deleted on the way out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest
from cluster import Cluster
from cohort.orb import errors as st
from cohort.orb.connection import Connection
from cohort.orb.refs import INVOKE
from cohort.replication import connect
from cohort.replication.cli import main as cohort_main
from cohort.state import codec

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables"
    ),
]


class Cut:
    """Drop the UDP datagrams of one port, both ways, on the loopback interface."""

    def __init__(self, port: int) -> None:
        self.tag = f"cohort-test-{uuid.uuid4().hex[:8]}"
        self.rules = [
            ["INPUT", "-i", "lo", "-p", "udp", "--dport", str(port)],
            ["INPUT", "-i", "lo", "-p", "udp", "--sport", str(port)],
        ]

    def _run(self, op: str, rule: list[str]) -> None:
        comment = ["-m", "comment", "--comment", self.tag]
        subprocess.run(["iptables", op, *rule, *comment, "-j", "DROP"], check=True)

    def __enter__(self) -> Cut:
        for r in self.rules:
            self._run("-I", r)
        return self

    def __exit__(self, *exc) -> None:
        for r in self.rules:
            subprocess.run(
                ["iptables", "-D", *r, "-m", "comment", "--comment", self.tag, "-j", "DROP"],
                check=False,
            )


def test_a_cut_off_replica_reports_not_primary_and_refuses_at_once(tmp_path, capsys):
    c = Cluster("cohort.samples.counter:Counter", "part", 3, str(tmp_path))
    try:
        c.start_all()
        with connect(c.ref, timeout=20) as p:
            p.add(1)
        victim = c.seeds[2]
        others = c.seeds[:2]
        with Cut(int(victim.rsplit(":", 1)[1])):
            t0 = time.monotonic()
            st_v = c.wait(lambda s: s[victim] and not s[victim]["primary"], [victim], 10)[victim]
            took = time.monotonic() - t0
            assert st_v["cut_off"] is None or "cut off" in st_v["cut_off"]
            cohort_main(["status", f"PYROGROUP:part@{victim}"])  # says why it does not serve
            out = capsys.readouterr().out
            row = next(line for line in out.splitlines() if line.startswith(victim))
            assert f"{victim}: {victim} is cut off" in out or "minority" in row, out
            # a call to the cut-off replica is refused at once, not after a timeout
            conn = Connection(victim, "cohort.part", 5.0)
            t1 = time.monotonic()
            status, body, _view = conn.call(
                INVOKE, [os.urandom(8), 1, "add", codec.dumps([[1], {}]), 0, 0, None]
            )
            refused_in = time.monotonic() - t1
            conn.close()
            assert status == st.NO_QUORUM, (status, body)
            print(
                f"\ncut-off replica not primary after {took:.2f} s; a call refused in {refused_in * 1000:.1f} ms: {body}"
            )
            assert refused_in < 0.5
            # the majority goes on without it
            c.wait(lambda s: all(x and len(x["members"]) == 2 for x in s.values()), others, 15)
            with connect(f"PYROGROUP:part@{','.join(others)}", timeout=20) as p:
                assert p.add(1) == 2
        c.wait_converged(c.seeds, timeout=30)  # healed: it rejoins and gets the current state
        with connect(c.ref, timeout=20) as p:
            assert p.get() == 2
    finally:
        c.close()
