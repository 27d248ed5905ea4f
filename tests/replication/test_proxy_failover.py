"""GroupProxy's watcher against scripted fake replicas: leave a replica the group has excluded.

The fakes (tests/replication/test_proxy.py) answer `describe` with whatever view the test sets, so a
test "excludes" the replica a call waits on by changing the other fakes' view mid-call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cohort.orb import errors
from cohort.orb.proxy import GroupProxy, close_proxy, proxy_info
from cohort.orb.refs import DESCRIBE
from test_proxy import GROUP, METHODS, FakeReplica, hang, ok

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def replicas() -> Iterator[Callable[..., FakeReplica]]:
    started: list[FakeReplica] = []

    def start(behave=ok, view=None) -> FakeReplica:
        r = FakeReplica(behave, view)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


@pytest.fixture
def proxies() -> Iterator[Callable[..., GroupProxy]]:
    made: list[GroupProxy] = []

    def make(*addrs: str, **options: Any) -> GroupProxy:
        options.setdefault("timeout", 10.0)
        options.setdefault("attempt_timeout", 5.0)
        p = GroupProxy(f"PYROGROUP:{GROUP}@{','.join(addrs)}", **options)
        made.append(p)
        return p

    yield make
    for p in made:
        close_proxy(p)


def hang_updates(seconds: float):
    """Answer `get` at once, hang every other call for `seconds` (a paused or slow coordinator)."""
    slow = hang(seconds)

    def behave(r: FakeReplica, call):
        return ok(r, call) if call.method == "get" else slow(r, call)

    return behave


def three(replicas, coord_behaviour) -> tuple[FakeReplica, FakeReplica, FakeReplica, list]:
    a, b, c = replicas(coord_behaviour), replicas(), replicas()
    view = [[1, a.addr], [a.addr, b.addr, c.addr]]
    for r in (a, b, c):
        r.view = view
    return a, b, c, view


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as e:  # reported by the test
            out["error"] = e
        out["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_call_leaves_the_coordinator_once_the_group_excludes_it(replicas, proxies) -> None:
    a, b, c, _view = three(replicas, hang_updates(20.0))
    p = proxies(a.addr, b.addr, c.addr)
    assert p.get() == a.addr  # learns the view: a is the coordinator
    t, out = in_thread(lambda: p.add(7))
    time.sleep(0.5)
    assert a.calls[-1].method == "add" and b.calls == [] and c.calls == []
    b.view = c.view = [[2, b.addr], [b.addr, c.addr]]  # the group excluded a
    excluded_at = time.monotonic()
    t.join(5)
    assert out.get("value") == 7, out
    late = out["elapsed"] - 0.5
    print(f"left the excluded coordinator {late:.3f}s after the view changed")
    assert time.monotonic() - excluded_at < 0.5
    assert a.ids()[-1] == b.ids()[-1]  # the same client id and request id at the new coordinator
    assert c.calls == []  # not hedged to every replica
    assert (
        proxy_info(p).abandoned == 1 and proxy_info(p).failovers == 1 and proxy_info(p).probes >= 3
    )
    assert proxy_info(p).members == (b.addr, c.addr)
    assert p.add(8) == 8 and b.calls[-1].rid == a.calls[-1].rid + 1


def test_a_slow_call_is_not_resent_while_the_view_stays(replicas, proxies) -> None:
    a, b, c, _view = three(replicas, hang_updates(1.5))
    p = proxies(a.addr, b.addr, c.addr)
    p.get()
    b_before, c_before = b.describes, c.describes
    assert p.add(3) == 3
    assert [call.method for call in a.calls] == ["get", "add"]
    assert b.calls == [] and c.calls == []
    assert proxy_info(p).failovers == 0 and proxy_info(p).abandoned == 0
    probes = (b.describes - b_before) + (c.describes - c_before)
    assert 8 <= probes <= 16  # one probe per 0.1 s interval, spread over the others
    assert a.describes <= 1  # never probes the replica it waits on


def test_all_calls_waiting_at_the_excluded_replica_move_on_one_probe(replicas, proxies) -> None:
    a, b, c, _view = three(replicas, hang_updates(20.0))
    p = proxies(a.addr, b.addr, c.addr)
    p.get()
    runs = [in_thread(lambda i=i: p.echo(i)) for i in range(5)]
    time.sleep(0.6)
    before = b.describes + c.describes
    b.view = c.view = [[2, c.addr], [c.addr, b.addr]]
    for t, _out in runs:
        t.join(5)
    assert sorted(out.get("value") for _t, out in runs) == [0, 1, 2, 3, 4]
    assert proxy_info(p).abandoned == 5
    assert b.describes + c.describes - before <= 3  # one probe per interval, not one per call
    assert {call.rid for call in c.calls} == {call.rid for call in a.calls if call.method == "echo"}


def test_a_minority_view_does_not_move_the_call(replicas, proxies) -> None:
    a, b, c, view = three(replicas, hang_updates(1.2))
    minority = [[5, b.addr], [b.addr]]  # newer, excludes a, but b is cut off from a majority
    for r in (b, c):
        r.server.objects[f"cohort.{GROUP}"][DESCRIBE] = lambda: {
            "methods": METHODS,
            "view": minority,
            "primary": False,
        }
    p = proxies(a.addr, b.addr, c.addr)
    assert p.get() == a.addr
    assert p.add(1) == 1
    assert (
        proxy_info(p).abandoned == 0
        and proxy_info(p).failovers == 0
        and b.calls == []
        and c.calls == []
    )
    assert proxy_info(p).probes >= 5


def test_an_update_leaves_a_member_that_lost_the_coordinator_role(replicas, proxies) -> None:
    a, b, c, _view = three(replicas, hang_updates(20.0))
    p = proxies(a.addr, b.addr, c.addr)
    p.get()
    t, out = in_thread(lambda: p.add(4))
    time.sleep(0.3)
    # a rejoined as a new incarnation at the end of the view: the call it had is gone with it
    b.view = c.view = [[3, b.addr], [b.addr, c.addr, a.addr]]
    t.join(5)
    assert out.get("value") == 4, out
    assert proxy_info(p).abandoned == 1 and a.ids()[-1] == b.ids()[-1]


def test_probe_interval_zero_waits_out_the_attempt_timeout(replicas, proxies) -> None:
    a, b, c, _view = three(replicas, hang_updates(20.0))
    b.view = c.view = [[2, b.addr], [b.addr, c.addr]]  # already excluded, but nobody asks
    p = proxies(a.addr, b.addr, c.addr, attempt_timeout=0.6, probe_interval=0)
    a.behave = ok
    p.get()
    a.behave = hang(20.0)
    a.view = [[1, a.addr], [a.addr, b.addr, c.addr]]
    t0 = time.monotonic()
    assert p.add(2) == 2
    assert time.monotonic() - t0 >= 0.6
    assert (
        proxy_info(p).probes == 0 and proxy_info(p).abandoned == 0 and proxy_info(p).failovers == 1
    )


def test_the_watcher_thread_ends_when_the_proxy_is_idle(replicas, proxies) -> None:
    a, _b, _c, _view = three(replicas, hang_updates(0.3))
    p = proxies(a.addr)
    p.add(1)
    assert p._watcher is not None
    deadline = time.monotonic() + 3
    while p._watcher is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p._watcher is None
    assert p.add(2) == 2  # a new one starts on demand


def test_stale_reply_is_a_named_error_saying_what_to_do(replicas, proxies) -> None:
    r = replicas(
        lambda r, call: [errors.STALE, "request 1 already completed and was forgotten", None]
    )
    p = proxies(r.addr)
    with pytest.raises(errors.StaleRequest) as ei:
        p.add(1)
    msg = str(ei.value)
    assert ei.value.request_id == 1 and isinstance(ei.value, errors.CohortError)
    assert "no longer in the replicas' reply cache" in msg and "already completed" in msg
    assert "1,000 replies or 1 MiB" in msg and "will not run again" in msg
    assert "check the object's state" in msg
    assert len(r.calls) == 1  # an answer, not a failure: no failover
