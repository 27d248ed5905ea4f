"""Divergence detection in real processes: a method calling `random.random()` directly.

Three `cohort serve` replicas of `nondet.Dice`; two share a seed (they agree), the third is the
minority. The check every 10 updates finds it: an ERROR naming the position and the methods,
`cohort status` marks it DIVERGED and exits 3, and it resyncs (or, with `--on-divergence stop`,
leaves and exits with status 3).
"""

from __future__ import annotations

import os
import time

import pytest
from cluster import Cluster
from cohort.replication import connect
from cohort.replication.cli import main

pytestmark = pytest.mark.timeout(120)

CHECKS = ("--check-every", "10", "--check-interval", "0")  # positions 10, 20, ... only


def start(tmp_path, group: str, *extra: str) -> Cluster:
    c = Cluster("tests.integration.nondet:Dice", group, 3, str(tmp_path), extra=(*CHECKS, *extra))
    a, b, x = c.seeds
    c.env = {a: {"DICE_SEED": "1"}, b: {"DICE_SEED": "1"}, x: {"DICE_SEED": "2"}}
    c.start_all()
    return c


def log_of(c: Cluster, addr: str) -> str:
    with open(os.path.join(c.log_dir, f"{addr.replace(':', '_')}.log"), errors="replace") as f:
        return f.read()


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def divergence_lines(c: Cluster, addr: str) -> list[str]:
    return [line for line in log_of(c, addr).splitlines() if "DIVERGENCE" in line]


def test_random_in_an_update_is_reported_marked_and_resynced(tmp_path, capsys):
    c = start(tmp_path, "dice")
    a, b, x = c.seeds
    try:
        with connect(c.ref, timeout=20) as dice:
            for _ in range(10):
                dice.roll()
            for addr in c.seeds:  # every replica decides alike, and says so
                lines = wait_for(lambda a=addr: divergence_lines(c, a), 15, f"ERROR at {addr}")
                line = lines[0]
                assert " ERROR cohort.replica " in line
                assert "DIVERGENCE at update 10" in line and f"{x} holds state digest" in line
                assert "methods applied since" in line and "roll x10" in line
                assert f"{x} takes a fresh state from" in line
            capsys.readouterr()
            assert main(["status", c.ref]) == 3
            table = capsys.readouterr().out
            marked = [row for row in table.splitlines() if "DIVERGED" in row]
            assert len(marked) == 1 and marked[0].startswith(x), table
            assert "DIVERGED at update 10" in marked[0]
            c.wait_converged(c.seeds)  # resync: x took a majority replica's state
            st = c.status(x)
            assert st["check"]["resyncs"] == 1 and st["transfers"][-1]["donor"] in (a, b)
            for _ in range(10):  # deterministic updates: the check at 20 agrees everywhere
                dice.add(1)
            assert dice.get()[1] == 20

            def clean():
                capsys.readouterr()
                code = main(["status", c.ref])
                out = capsys.readouterr().out
                return code == 0 and "DIVERGED" not in out

            wait_for(clean, 15, "status exits 0 once the check at update 20 agrees")
            assert all(c.status(m)["check"]["recent"][-1][0] == 20 for m in c.seeds)
        c.wait_converged(c.seeds)
    finally:
        c.close()


def test_on_divergence_stop_makes_the_minority_leave_and_exit_3(tmp_path):
    c = start(tmp_path, "dicestop", "--on-divergence", "stop")
    a, b, x = c.seeds
    try:
        with connect(c.ref, timeout=20) as dice:
            for _ in range(10):
                dice.roll()
            proc = c.procs[x]
            wait_for(lambda: proc.poll() is not None, 20, f"{x} exits")
            assert proc.returncode == 3
            text = log_of(c, x)
            assert "diverged from the majority at update 10 and left the group" in text
            assert "on_divergence='stop'" in text
            c.wait(
                lambda s: all(v and v["ready"] and len(v["members"]) == 2 for v in s.values()),
                [a, b],
                20,
            )
            assert dice.add(1) == 11  # the majority serves on
    finally:
        c.close()
