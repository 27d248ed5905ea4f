"""The `cohort` command line as a user runs it."""

from __future__ import annotations

from cohort.replication.cli import main


def test_sim_reports_zero_violations_and_exits_zero(capsys):
    assert main(["sim", "--scenarios", "5", "--members", "3", "--seed-start", "4242"]) == 0
    out = capsys.readouterr().out
    assert "5 scenarios, 0 violations" in out


def test_sim_accepts_a_user_stack_and_params(capsys):
    args = ["sim", "--scenarios", "5", "--members", "3", "--faults", "loss,dup,reorder"]
    args += ["--stack", "fifo", "--param", "nak.xmit_interval=0.03"]
    assert main(args) == 0
    assert "0 violations" in capsys.readouterr().out


def test_sim_refuses_an_impossible_stack_with_the_fix(capsys):
    assert main(["sim", "--scenarios", "1", "--stack", "top:sequencer:nak:bottom"]) == 2
    out = capsys.readouterr().err
    assert "requires 'flush'" in out and "add one of: flush" in out


def test_sim_finds_violations_in_an_unsafe_stack_and_exits_nonzero(capsys, tmp_path):
    # nak without stability gossip cannot see a lost last message: liveness (L1) must fail
    args = ["sim", "--scenarios", "20", "--members", "3", "--faults", "loss"]
    args += ["--stack", "top:pt2pt:nak:bottom", "--trace-dir", str(tmp_path)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "seed=" in out and "L1" in out
    assert list(tmp_path.glob("seed-*.jsonl"))


def test_unknown_fault_is_a_clear_error(capsys):
    assert main(["sim", "--faults", "meteor"]) == 2
    err = capsys.readouterr().err
    assert "unknown fault(s) meteor; choose from" in err and "Traceback" not in err


def test_demo_runs_and_the_checker_passes(capsys):
    assert main(["demo", "--simulated"]) == 0
    out = capsys.readouterr().out
    assert "m0 crashes" in out and "trace ok" in out


def test_bench_sim_prints_cpu_per_message(capsys):
    assert main(["bench", "sim", "--messages", "3000", "--no-profile"]) == 0
    assert "CPU per delivered message per member" in capsys.readouterr().out
