"""Fast crash detection: the ring of TCP watchers, certain suspicions, and no lease wait for the dead."""

from __future__ import annotations

import pytest
from cohort.stack import check
from cohort.stack.events import Blocked, Granted, Suspect, Verify
from cohort.stack.layers.suspect import SuspectLayer
from cohort.stack.sim import Sim
from cohort.stack.view import View, watched
from layerkit import make


def test_each_member_watches_the_one_ranked_just_above_it():
    v = View((1, "a"), ("a", "b", "c", "d"), True, ("a", "b", "c", "d"), (1, "a"))
    assert [watched(v, m) for m in v.members] == ["d", "a", "b", "c"]
    assert watched(v, "x") is None
    assert watched(View((1, "a"), ("a",), True, ("a",), (1, "a")), "a") is None
    assert watched(None, "a") is None


def test_a_transport_suspicion_is_reported_dead_and_granted_no_lease():
    s, ctx = make(SuspectLayer)
    s.up(Suspect(frozenset([2])))  # the transport saw c's connection close
    assert Suspect(frozenset([2]), frozenset([2])) in ctx.ups
    s.down(Blocked())
    granted = next(e for e in ctx.ups if type(e) is Granted)
    assert granted.remaining[2] == 0.0


def test_a_peer_reporting_a_death_is_believed_at_once():
    s, ctx = make(SuspectLayer)
    s.down(Verify(frozenset([1]), force=True, dead=True))
    reported = [e for e in ctx.ups if type(e) is Suspect][-1]
    assert reported.ranks == frozenset([1]) and reported.dead == frozenset([1])


@pytest.mark.parametrize("victim", ["m0", "m1", "m4"])
def test_a_crash_seen_by_its_watcher_is_out_of_the_view_in_milliseconds(victim):
    """With the real runtime's timing (1 s heartbeat timeout, 0.5 s lease), not the fast profile."""
    real = {
        "suspect": {"interval": 0.1, "timeout": 1.0, "lease": 0.5, "verify": 0.5},
        "gms": {"retry_interval": 0.05, "flush_timeout": 1.0, "join_interval": 0.2},
    }
    sim = Sim(seed=11, n=5, params=real)
    sim.fd_notify = True
    for k in range(40):
        for m in sim.seeds:
            sim.at(0.02 * k, lambda m=m, k=k: sim.cast(m, f"{m}:{k}".encode()))
    sim.run(0.4)
    t0 = sim.now
    sim.crash(victim)
    survivors = [m for m in sim.seeds if m != victim]
    sim.run_until(lambda: all(victim not in sim.eps[m].view.members for m in survivors), 5.0)
    assert sim.now - t0 < 0.05, f"took {sim.now - t0:.3f}s"
    sim.run(sim.now + 1.0)
    sim.run_until(sim.converged, within=10.0)
    sim.trace.live, sim.trace.liveness = tuple(sim.live()), True
    check.assert_ok(sim.trace)


def test_without_the_watcher_the_heartbeat_timeout_and_lease_decide():
    real = {
        "suspect": {"interval": 0.1, "timeout": 1.0, "lease": 0.5, "verify": 0.5},
        "gms": {"retry_interval": 0.05, "flush_timeout": 1.0, "join_interval": 0.2},
    }
    sim = Sim(seed=11, n=3, params=real)
    sim.run(0.4)
    t0 = sim.now
    sim.crash("m0")
    sim.run_until(lambda: all("m0" not in sim.eps[m].view.members for m in ("m1", "m2")), 5.0)
    assert sim.now - t0 > 0.9  # the control: what the watcher saves
