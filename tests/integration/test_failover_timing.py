"""How long clients stall when the coordinator is paused, in real processes (cohort.orb.proxy's watcher).

A SIGSTOPped replica keeps its TCP connections open, so only the group notices it (heartbeat
timeout, about 1 s). The proxy probes another replica's view while a call waits and moves to the new
coordinator as soon as the group has excluded the paused one; the aim is a stall of the exclusion
time plus one probe interval (0.1 s). A legitimately slow method, on the other hand, must stay at
its replica: not re-sent, no failover.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from cluster import Cluster
from cohort.orb.connection import Connection
from cohort.orb.proxy import close_proxy, proxy_info
from cohort.orb.refs import INVOKE
from cohort.orb.status import replica_status

from tests.history.lincheck import Op, check
from tests.history.models import CounterModel

pytestmark = pytest.mark.timeout(90)


class ExclusionClock:
    """Polls the other replicas' status and notes when each first reports a view without `gone`."""

    def __init__(self, group: str, others: list[str], gone: str) -> None:
        self.group, self.others, self.gone = group, others, gone
        self.seen: dict[str, float] = {}
        self.views: dict[str, list] = {}
        self.t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.seen) < len(self.others):
            for a in self.others:
                if a in self.seen:
                    continue
                s = replica_status(self.group, a, 1.0)
                if s and s["members"] and self.gone not in s["members"]:
                    self.seen[a] = time.monotonic()
                    self.views[a] = s["views"]
            time.sleep(0.005)

    def wait(self, timeout: float) -> float:
        """Seconds from t0 until every other replica had excluded `gone` (the slowest of them)."""
        self._thread.join(timeout)
        self._stop.set()
        assert len(self.seen) == len(self.others), f"not excluded within {timeout}s: {self.seen}"
        return max(self.seen.values()) - self.t0


def test_sigstop_of_the_coordinator_stalls_clients_about_the_exclusion_time(tmp_path):
    from cohort.replication import CohortError, connect

    c = Cluster("cohort.samples.counter:Counter", "pause", 3, str(tmp_path))
    stopped: str | None = None
    proxies = []
    try:
        c.start_all()
        proxies = [connect(c.ref) for _ in range(3)]  # the default options
        history: list[Op] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_ev = threading.Event()

        def client(i: int) -> None:
            k = 0
            while not stop_ev.is_set():
                name, args = ("get", ()) if k % 4 == 3 else ("add", (1 + (i + k) % 3,))
                k += 1
                t0 = time.monotonic()
                try:
                    ret = getattr(proxies[i], name)(*args)
                    op = Op(i, t0, time.monotonic(), name, args, ret)
                except CohortError as e:
                    op = Op(i, t0, None, name, args, None)
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                with lock:
                    history.append(op)

        def wait_calls(n: int, since: float = 0.0) -> None:
            """Until each client completed `n` calls that began after `since` (deadline 20 s)."""
            deadline = time.monotonic() + 20
            while True:
                with lock:
                    per = [
                        sum(1 for op in history if op.client == i and op.call >= since)
                        for i in range(3)
                    ]
                if min(per) >= n:
                    return
                assert time.monotonic() < deadline, f"clients stalled: {per} calls, {errors[:3]}"
                time.sleep(0.02)  # polled, with a deadline

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
        for t in threads:
            t.start()
        wait_calls(50)  # warm: every proxy knows the view and has pooled connections
        coord = c.coordinator(c.seeds)
        others = [a for a in c.seeds if a != coord]
        clock = ExclusionClock(c.group, others, coord)
        t_stop = time.monotonic()
        c.signal(coord, signal.SIGSTOP)
        stopped = coord
        clock.start(t_stop)
        exclusion = clock.wait(10)
        wait_calls(50, since=t_stop + exclusion + 0.2)  # the clients carry on in the new view
        stop_ev.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)

        done = [op for op in history if op.ret is not None and op.ret >= t_stop]
        stall = max(op.ret - max(op.call, t_stop) for op in done)
        after = [op for op in done if op.call > t_stop + exclusion + 0.2]
        print(
            f"\nexclusion of the paused coordinator: {exclusion:.3f}s after SIGSTOP "
            f"(per replica: {', '.join(f'{clock.seen[a] - t_stop:.3f}s' for a in others)}; "
            f"views {clock.views[others[0]][-2:]})"
            f"\nlongest client stall: {stall:.3f}s (exclusion + {stall - exclusion:.3f}s); "
            f"{len(done)} calls completed after the pause, {len(after)} in the new view; "
            f"abandoned attempts {sum(proxy_info(p).abandoned for p in proxies)}, "
            f"failovers {sum(proxy_info(p).failovers for p in proxies)}, probes {sum(proxy_info(p).probes for p in proxies)}"
        )
        assert errors == []
        assert after, "no call completed in the new view"
        assert stall < 2.0, f"a client stalled {stall:.3f}s (exclusion took {exclusion:.3f}s)"
        assert all(
            proxy_info(p).abandoned >= 1 for p in proxies
        )  # each left its call at the paused one
        result = check(history, CounterModel(), timeout=60)
        assert result.ok is True, f"{result.explanation}\n(replica logs in {c.log_dir})"
        c.wait_converged(others)
    finally:
        for p in proxies:
            close_proxy(p)
        if stopped is not None:
            c.kill(stopped)  # SIGKILL ends a stopped process too
        c.close()


def test_a_slow_method_is_not_resent_and_does_not_fail_over(tmp_path, monkeypatch):
    """A 3 s method (with an attempt timeout above 3 s, as a user of such a method sets it): the
    watcher probes while it waits, sees the same view, and never sends the call elsewhere."""
    from cohort.replication import connect

    sent: list[tuple[str, int, str]] = []
    real_call = Connection.call

    def counting_call(self, method, args, timeout=None):
        if method == INVOKE:
            sent.append((self.addr, args[1], args[2]))
        return real_call(self, method, args, timeout)

    monkeypatch.setattr(Connection, "call", counting_call)
    c = Cluster("tests.integration.slow:Slow", "slow3", 3, str(tmp_path))
    try:
        c.start_all()
        vid = c.status(c.seeds[0])["vid"]
        with connect(c.ref, attempt_timeout=10) as proxy:
            assert proxy.add(1) == 1
            t0 = time.monotonic()
            assert proxy.slow_add(10, 3.0) == 11
            elapsed = time.monotonic() - t0
            assert proxy.get() == 11
            slow = [s for s in sent if s[2] == "slow_add"]
            print(
                f"\nslow_add(10, 3.0) took {elapsed:.3f}s; sent to {[s[0] for s in slow]}; "
                f"probes answered {proxy_info(proxy).probes}, failovers {proxy_info(proxy).failovers}, "
                f"abandoned {proxy_info(proxy).abandoned}"
            )
            assert len(slow) == 1, f"the slow call was re-sent: {slow}"
            assert proxy_info(proxy).failovers == 0 and proxy_info(proxy).abandoned == 0
        sts = c.wait_converged(c.seeds)
        for s in sts.values():
            assert s["applied"] == 2, s
            assert s["stats"]["executed"] == 2 and s["stats"]["duplicates"] == 0, s["stats"]
        # the 3 s method blocks every replica's loop, heartbeats included, so the group may install
        # a new view afterwards; it has the same members and coordinator, so the call stayed put
        assert {s["members"][0] for s in sts.values()} == {vid[1]}
    finally:
        c.close()
