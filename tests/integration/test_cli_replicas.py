"""`cohort serve`, `cohort call`, `cohort status` and `cohort demo` against real processes."""

from __future__ import annotations

import pytest
from cluster import Cluster
from cohort.replication.cli import main

pytestmark = pytest.mark.timeout(120)


def test_call_and_status_against_served_replicas(tmp_path, capsys):
    c = Cluster("cohort.samples.kvstore:KVStore", "kv", 3, str(tmp_path))
    try:
        c.start_all()
        assert main(["call", c.ref, "put", "color", '"blue"']) == 0
        assert main(["call", c.ref, "cas", "color", '"blue"', '"red"']) == 0
        assert main(["call", c.ref, "get", "color"]) == 0
        out = capsys.readouterr().out.split()
        assert out == ["null", "true", '"red"']
        with pytest.raises(AttributeError, match="no method 'nope'"):
            main(["call", c.ref, "nope"])
        c.wait_converged(c.seeds)
        assert main(["status", c.ref]) == 0
        table = capsys.readouterr().out
        assert "coord" in table and all(a in table for a in c.seeds)
        c.kill(c.seeds[2])
        assert main(["status", c.ref]) == 0  # still answers, and shows the dead one as down
        assert "down" in capsys.readouterr().out
    finally:
        c.close()


def test_demo_passes_its_own_checks(capsys):
    assert main(["demo", "--seconds", "4", "--clients", "2"]) == 0
    out = capsys.readouterr().out
    assert "money conserved" in out and "FAILED" not in out


def test_bench_calls_runs_and_prints_its_ratios(capsys):
    assert main(["bench", "calls", "--seconds", "0.3", "--clients", "1", "--replicas", "3"]) == 0
    out = capsys.readouterr().out
    assert "pyro5 plain" in out and "asyncio orb" in out and "p50 ratio cohort/plain" in out
    assert "errors: 0" in out
