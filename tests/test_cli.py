"""The `cohort` command line as a user runs it."""

from __future__ import annotations

import pytest
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


def test_version_and_help_name_what_arguments_mean(capsys):
    import cohort

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cohort {cohort.__version__}"
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "MODULE:CLASS" in out and "--group" in out and "SECONDS" in out
    assert "total-batch" in out  # the stack presets are listed


def test_serve_says_where_it_looked_when_the_class_cannot_be_imported(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "no_such_module:Thing", "--group", "g", "--listen", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot import 'no_such_module'" in err and str(tmp_path) in err and "sys.path" in err
    assert "Traceback" not in err


def test_call_arguments_are_typed_and_results_readable():
    from decimal import Decimal

    from cohort.replication.cli.call import readable, split_args
    from cohort.state.codec import Record

    args, kwargs = split_args(["5", "word", '{"$decimal": "59.94"}', "limit=3", 'tags=["a"]'])
    assert args == [5, "word", Decimal("59.94")] and kwargs == {"limit": 3, "tags": ["a"]}
    assert readable(Decimal("59.94")) == {"$decimal": "59.94"}
    assert readable(Record("shop.Item", {"n": 2})) == {"$type": "shop.Item", "n": 2}
    assert readable({"b": b"\x01"}) == {"b": {"$bytes": "01"}}


def test_a_proxy_attribute_is_always_the_object_s_method():
    from cohort.orb.proxy import GroupProxy, _Method, proxy_info

    p = GroupProxy("PYROGROUP:g@127.0.0.1:1")
    for name in ("close", "members", "failovers", "status", "invoke", "describe"):
        assert isinstance(getattr(p, name), _Method), name  # none is shadowed by the proxy
    info = proxy_info(p)
    assert info.group == "g" and info.members == ("127.0.0.1:1",) and info.failovers == 0
