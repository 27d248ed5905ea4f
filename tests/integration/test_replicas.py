"""Replicated objects in real processes on 127.0.0.1: crashes, pauses, joins and restarts under load.

Each test records the clients' history and checks it for linearizability against a sequential model
(unknown-outcome calls may or may not have taken effect), then checks that the live replicas
converge on one view with equal state digests (reply caches included). Failing runs leave replica
logs in the pytest tmp directory, named in the assertion message.
"""

from __future__ import annotations

import signal
import time

import pytest
from cluster import Clients, Cluster
from cohort.orb.proxy import proxy_info

from tests.history.lincheck import check
from tests.history.models import CounterModel, KVModel

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def counter_cluster(tmp_path):
    c = Cluster("cohort.samples.counter:Counter", "counter", 3, str(tmp_path))
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def counter_ops(i: int, k: int):
    return ("get", ()) if k % 4 == 3 else ("add", (1 + (i + k) % 3,))


def assert_linearizable(history, model, log_dir) -> None:
    result = check(history, model, timeout=60)
    assert result.ok is True, f"{result.explanation}\n(replica logs in {log_dir})"


def test_coordinator_crash_under_load_is_linearizable(counter_cluster):
    c = counter_cluster
    with Clients(c.ref, 3, counter_ops) as clients:
        clients.wait_progress(100)
        coord = c.coordinator(c.seeds)
        c.kill(coord)
        clients.wait_progress(100)  # the clients carry on through the crash
    live = [a for a in c.seeds if a != coord]
    c.wait_converged(live)
    assert_linearizable(clients.history, CounterModel(), c.log_dir)


def test_kill_the_answering_replica_mid_call_executes_once(tmp_path):
    c = Cluster("tests.integration.slow:Slow", "slow", 3, str(tmp_path))
    try:
        c.start_all()
        from cohort.replication import connect

        with connect(c.ref, timeout=20, attempt_timeout=5) as proxy:
            assert proxy.add(1) == 1
            coord = c.coordinator(c.seeds)
            import threading

            result = {}
            t = threading.Thread(target=lambda: result.update(v=proxy.slow_add(10, 0.6)))
            t.start()
            time.sleep(0.3)  # the call is now executing everywhere; its replica dies
            c.kill(coord)
            t.join(30)
            assert result.get("v") == 11, result
            assert proxy_info(proxy).failovers >= 1
            assert proxy.get() == 11  # executed exactly once
        live = [a for a in c.seeds if a != coord]
        sts = c.wait_converged(live)
        assert {s["applied"] for s in sts.values()} == {2}
    finally:
        c.close()


def test_paused_member_is_excluded_and_rejoins(counter_cluster):
    c = counter_cluster
    with Clients(c.ref, 2, counter_ops) as clients:
        clients.wait_progress(50)
        coord = c.coordinator(c.seeds)
        victim = next(a for a in c.seeds if a != coord)
        c.signal(victim, signal.SIGSTOP)
        others = [a for a in c.seeds if a != victim]
        c.wait(lambda s: all(x and victim not in x["members"] for x in s.values()), others, 10)
        clients.wait_progress(50)  # the majority keeps serving
        c.signal(victim, signal.SIGCONT)
        c.wait(lambda s: all(x and x["ready"] for x in s.values()), [victim], 15)
        clients.wait_progress(50)
    c.wait_converged(c.seeds, timeout=20)  # the resumed replica rejoined with a state transfer
    assert_linearizable(clients.history, CounterModel(), c.log_dir)


def test_join_with_state_transfer_under_load(tmp_path):
    c = Cluster("cohort.samples.kvstore:KVStore", "kv", 3, str(tmp_path))

    def kv_ops(i: int, k: int):
        key = f"k{(i + k) % 4}"
        if k % 3 == 2:
            return "get", (key,)
        if k % 5 == 4:
            return "cas", (key, k - 1, k)
        return "put", (key, k)

    try:
        c.start_all()
        joiner = c.addrs[3]
        with Clients(c.ref, 3, kv_ops) as clients:
            clients.wait_progress(100)
            c.start(joiner)
            c.wait(lambda s: s[joiner] and s[joiner]["ready"], [joiner], 20)
            clients.wait_progress(50)
            c.kill(c.seeds[0])  # the donor may be gone now: the joiner must hold the state
            clients.wait_progress(100)
        live = c.seeds[1:] + [joiner]
        sts = c.wait_converged(live)
        assert sts[joiner]["transfers"], "the joiner never received a snapshot"
        assert_linearizable(clients.history, KVModel(), c.log_dir)
    finally:
        c.close()


def test_restart_on_the_same_address(counter_cluster):
    c = counter_cluster
    with Clients(c.ref, 2, counter_ops) as clients:
        clients.wait_progress(50)
        coord = c.coordinator(c.seeds)
        victim = next(a for a in c.seeds if a != coord)
        c.kill(victim)
        others = [a for a in c.seeds if a != victim]
        c.wait(lambda s: all(x and victim not in x["members"] for x in s.values()), others, 10)
        c.start(victim)  # a new incarnation on the same host:port
        c.wait(lambda s: s[victim] and s[victim]["ready"], [victim], 20)
        clients.wait_progress(50)
    sts = c.wait_converged(c.seeds, timeout=20)
    assert sts[victim]["transfers"], "the restarted replica must get the state by transfer"
    assert_linearizable(clients.history, CounterModel(), c.log_dir)


def test_passive_style_survives_a_coordinator_crash(tmp_path):
    c = Cluster("tests.integration.passive:PassiveCounter", "passive", 3, str(tmp_path))
    try:
        c.start_all()
        with Clients(c.ref, 3, counter_ops) as clients:
            clients.wait_progress(100)
            coord = c.coordinator(c.seeds)
            c.kill(coord)
            clients.wait_progress(100)  # progress after the coordinator died
        live = [a for a in c.seeds if a != coord]
        sts = c.wait_converged(live)
        assert all(s["style"] == "passive" for s in sts.values())
        assert_linearizable(clients.history, CounterModel(), c.log_dir)
    finally:
        c.close()


def test_a_killed_replica_is_out_of_the_view_before_any_heartbeat_timeout(counter_cluster):
    """Fast crash detection (cohort.stack.transport.fdsock): the watcher's TCP connection closes with the process.
    Heartbeats alone need the 1 s suspicion timeout plus the 0.5 s lease; allow well under that."""
    c = counter_cluster
    coord = c.coordinator(c.seeds)
    others = [a for a in c.seeds if a != coord]
    t0 = time.monotonic()
    c.kill(coord)
    c.wait(lambda s: all(x and coord not in x["members"] for x in s.values()), others, 5)
    assert time.monotonic() - t0 < 0.8


def test_replicas_over_the_tcp_transport_survive_a_coordinator_crash(tmp_path):
    c = Cluster(
        "cohort.samples.counter:Counter", "tcpc", 3, str(tmp_path), extra=("--transport", "tcp")
    )
    try:
        c.start_all()
        with Clients(c.ref, 2, counter_ops) as clients:
            clients.wait_progress(100)
            coord = c.coordinator(c.seeds)
            c.kill(coord)
            clients.wait_progress(100)
        live = [a for a in c.seeds if a != coord]
        c.wait_converged(live)
        assert_linearizable(clients.history, CounterModel(), c.log_dir)
    finally:
        c.close()
