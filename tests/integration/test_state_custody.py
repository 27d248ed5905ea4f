"""Large states and busy replicas in real processes: nobody is excluded for being busy, and the
state is never lost (issue "Never lose the state").

Before the fix, a join with 400 MiB of state got the donor excluded while it built the snapshot
on its event loop, every replica that came back dropped its state, and the group was left with
none. These tests print join time and RSS per size; `COHORT_LARGE=1` adds 1 GiB.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from cluster import Cluster
from cohort.replication import connect

MiB = 1 << 20
pytestmark = pytest.mark.timeout(240)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(c: Cluster, mib: int) -> None:
    with connect(c.ref, timeout=120, attempt_timeout=60) as p:
        for start in range(0, mib, 50):
            p.fill(start, min(50, mib - start))


def members_never_dropped(c: Cluster, addrs: list[str]) -> None:
    """No view installed at `addrs` after they formed leaves one of them out."""
    for a in addrs:
        views = c.status(a)["views"]
        formed = next(i for i, (_vid, m) in enumerate(views) if set(addrs) <= set(m))
        for vid, members in views[formed:]:
            assert set(addrs) <= set(members), f"{a} installed {vid} {members}: someone excluded"


@pytest.fixture
def bulk(tmp_path):
    c = Cluster("tests.integration.bulk:Bulk", "bulk", 3, str(tmp_path), spare=2)
    try:
        c.start_all()
        yield c
    finally:
        c.close()


SIZES = [100, 400] + ([500, 1024] if os.environ.get("COHORT_LARGE") else [])


@pytest.mark.parametrize("mib", SIZES)
def test_a_join_with_a_large_state_excludes_nobody_and_loses_nothing(bulk, mib):
    c = bulk
    fill(c, mib)
    before = {a: rss_mib(c.procs[a].pid) for a in c.seeds}
    joiner = c.addrs[3]
    t0 = time.monotonic()
    c.start(joiner)
    everyone = [*c.seeds, joiner]
    c.wait_converged(everyone, timeout=120)
    took = time.monotonic() - t0
    after = {a: rss_mib(c.procs[a].pid) for a in everyone}
    xfer = c.status(joiner)["transfers"][-1]
    print(
        f"\njoin with {mib} MiB: {took:.1f} s to converge (transfer {xfer['seconds']:.1f} s, "
        f"{xfer['bytes'] / MiB:.0f} MiB from {xfer['donor']}); RSS MiB before "
        f"{[round(before[a]) for a in c.seeds]}, after {[round(after[a]) for a in everyone]}"
    )
    members_never_dropped(c, c.seeds)
    with connect(c.ref, timeout=20) as p:
        assert p.size() == mib
    assert after[joiner] < 2.5 * mib + 150  # the state once, plus decoding slack


def test_a_donor_paused_mid_transfer_keeps_its_state_and_everyone_converges(bulk):
    c = bulk
    fill(c, 200)
    joiner = c.addrs[3]
    c.start(joiner)
    c.wait(lambda s: s[joiner] is not None and len(s[joiner]["members"]) == 4, [joiner], 30)
    donor = c.status(c.seeds[0])["members"][0]  # the oldest member pushes
    c.signal(donor, signal.SIGSTOP)
    rest = [a for a in [*c.seeds, joiner] if a != donor]
    c.wait(lambda s: all(x and donor not in x["members"] for x in s.values()), rest, 30)
    c.signal(donor, signal.SIGCONT)  # excluded meanwhile; another member serves the joiner
    c.wait_converged([*c.seeds, joiner], timeout=90)
    st = c.status(donor)
    assert st["ready"] and st["applied"] == c.status(joiner)["applied"]


def test_a_donor_killed_mid_transfer_and_two_joiners_at_once(bulk):
    c = bulk
    fill(c, 200)
    j1, j2 = c.addrs[3], c.addrs[4]
    c.start(j1)
    c.start(j2)
    c.wait(lambda s: all(x and len(x["members"]) >= 4 for x in s.values()), [j1, j2], 30)
    donor = c.status(c.seeds[0])["members"][0]
    c.kill(donor)
    live = [a for a in [*c.seeds, j1, j2] if a != donor]
    c.wait_converged(live, timeout=90)
    with connect(c.ref, timeout=20) as p:
        assert p.size() == 200


def test_a_slow_method_excludes_nobody(bulk):
    """Every replica runs a 3 s method at once (active replication): all stay members."""
    c = bulk
    views = {a: c.status(a)["views"] for a in c.seeds}
    with connect(c.ref, timeout=60, attempt_timeout=20) as p:
        for _ in range(4):
            p.crunch(3.0)
        assert p.get() == 4
    members_never_dropped(c, c.seeds)
    for a in c.seeds:
        assert c.status(a)["views"] == views[a], f"{a} changed views during the slow calls"


def test_a_method_busy_beyond_the_limit_makes_every_replica_leave_and_the_state_survives(
    tmp_path,
):
    """busy_limit 1 s, a 2.5 s method: every replica (active replication runs it everywhere)
    counts itself hung and leaves; each keeps its state; they re-form, the status round finds
    the latest holder, and the client's retry (same request id) is answered from the cache."""
    c = Cluster(
        "tests.integration.bulk:Bulk", "hung", 3, str(tmp_path), extra=("--busy-limit", "1")
    )
    try:
        c.start_all()
        with connect(c.ref, timeout=60, attempt_timeout=10) as p:
            p.add(5)
            assert p.crunch(2.5) == 6  # n: 5, then crunch adds 1
            c.wait_converged(c.seeds, timeout=40)
            assert p.get() == 6  # exactly once, nothing lost
        hung = [c.status(a)["core_hung"] for a in c.seeds]
        assert all(h >= 1 for h in hung), hung
    finally:
        c.close()


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def test_calls_keep_completing_while_100_mib_transfer_and_their_latency_is_printed(bulk):
    """A client calls throughout a 100 MiB join (`COHORT_P99_MIB` for another size); its
    latencies before the join, from the join to ready, while the state moves and afterwards in
    the 4-member group are printed (figures for the notes, not timed assertions); no call fails."""
    import threading

    c = bulk
    fill(c, int(os.environ.get("COHORT_P99_MIB", "100")))
    samples: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        with connect(c.ref, timeout=30) as p:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    p.add(1)
                except BaseException as e:  # noqa: BLE001 - recorded and asserted below
                    errors.append(e)
                samples.append((t, time.monotonic() - t))

    def wait_samples(n: int, since: float = 0.0) -> None:
        deadline = time.monotonic() + 30
        while sum(1 for t, _ in samples if t >= since) < n:
            assert time.monotonic() < deadline and th.is_alive(), "the client stopped calling"
            time.sleep(0.05)  # polled, with a deadline

    th = threading.Thread(target=client, daemon=True)
    th.start()
    wait_samples(2000)
    joiner = c.addrs[3]
    t_join = time.monotonic()
    c.start(joiner)
    everyone = [*c.seeds, joiner]
    c.wait(
        lambda s: all(x and x["ready"] and len(x["members"]) == 4 for x in s.values()), everyone, 90
    )
    t_done = time.monotonic()
    wait_samples(2000, since=t_done + 0.5)
    stop.set()
    th.join(30)
    c.wait_converged(everyone, timeout=30)
    xfer = c.status(joiner)["transfers"][-1]
    t_xfer = t_done - xfer["seconds"]  # the transfer itself: from its header to the install
    before = [d for t, d in samples if t < t_join]
    during = [d for t, d in samples if t_join <= t < t_done]
    moving = [d for t, d in samples if t_xfer <= t < t_done]
    b99, d99 = _percentile(before, 0.99), _percentile(during, 0.99)
    m99 = _percentile(moving, 0.99)
    after = [d for t, d in samples if t >= t_done + 0.5]
    a99 = _percentile(after, 0.99)
    print(
        f"\ncalls before the join: {len(before)}, p50 {_percentile(before, 0.5) * 1e3:.2f} ms, "
        f"p99 {b99 * 1e3:.2f} ms; from the join to ready (view changes included): "
        f"{len(during)}, p99 {d99 * 1e3:.2f} ms ({d99 / b99:.1f}x); while the "
        f"{xfer['bytes'] / MiB:.0f} MiB state moved ({xfer['seconds']:.2f} s): {len(moving)}, "
        f"p50 {_percentile(moving, 0.5) * 1e3:.2f} ms, p99 {m99 * 1e3:.2f} ms ({m99 / b99:.1f}x); "
        f"after, in the 4-member group: {len(after)}, p50 {_percentile(after, 0.5) * 1e3:.2f} "
        f"ms, p99 {a99 * 1e3:.2f} ms (transfer / after: {m99 / a99:.1f}x)"
    )
    assert not errors, errors[:3]
    assert during, "no call completed during the transfer"
    members_never_dropped(c, c.seeds)
