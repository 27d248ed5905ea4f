"""Engine: divergence checks at agreed positions, mismatch reports, resync and stop, query guard.

A nondeterministic method here is `Dice.roll`: it adds `NOISE[id(self)]`, which a test sets for
one replica's object only (as `random.random()` would differ per process). A replica that
installs a fresh state gets a new object, without noise.
"""

from __future__ import annotations

import logging

import pytest
from cohort.orb import errors as st
from cohort.replication.api import ReplicationError, query, replicated
from cohort.replication.divergence import DIG, Policy
from cohort.state.stream import LeafDigests
from enginekit import Group, admit, submit

NOISE: dict[int, int] = {}


@replicated
class Dice:
    def __init__(self) -> None:
        self.total = 0
        self.hist: list[int] = [0]
        self.blob = b""

    def add(self, n: int) -> int:
        self.total += n
        return self.total

    def roll(self) -> int:
        self.total += 1 + NOISE.get(id(self), 0)  # the bug under test: differs per replica
        return self.total

    def big(self, kib: int) -> int:
        self.blob = bytes(range(256)) * (4 * kib)
        return len(self.blob)

    @query
    def get(self) -> int:
        return self.total

    @query
    def poke(self) -> int:
        self.total += 1  # a query that changes the state: rebinds an attribute
        return self.total

    @query(local=True)
    def grow(self) -> int:
        self.hist.append(1)  # in place, but the list's size changes
        return len(self.hist)

    @query
    def deep(self) -> int:
        self.hist[0] += 1  # in place, same size: only the digest guard sees it
        return self.hist[0]


class Deferred:
    """A hasher that hashes when the test says so (the replica's hashing thread, running late)."""

    def __init__(self) -> None:
        self.pending: list = []
        self.memo = LeafDigests()

    def __call__(self, frozen, done) -> None:
        self.pending.append((frozen, done))

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for frozen, done in pending:
            done(self.memo.digest(frozen))


@pytest.fixture(autouse=True)
def _noise():
    NOISE.clear()
    yield
    NOISE.clear()


def calls(g: Group, at: str, plan: list, start: int = 1) -> list:
    return [submit(g[at], m, *a, rid=start + i) for i, (m, *a) in enumerate(plan)]


def digs(g: Group) -> list[tuple[str, int]]:
    import msgpack

    out = []
    for origin, payload in g.order:
        msg = msgpack.unpackb(payload, raw=False)
        if msg[0] == DIG:
            out.append((origin, msg[1]))
    return out


# --- agreed positions ----------------------------------------------------------------------------


def test_checks_happen_every_k_updates_at_the_same_positions_everywhere() -> None:
    g = Group(Policy(every=3, interval=None)).form(Dice)
    rs = calls(g, "a", [("add", 1)] * 4 + [("roll",)] + [("add", 2)] * 2)
    g.settle()
    assert [r.status for r in rs] == [st.OK] * 7
    for m in "abc":
        c = g[m].checks
        assert [p for p, _d in c.mine] == [3, 6]
        assert sorted(c.agreed) == [3, 6] and not c.events
    assert sorted(digs(g)) == sorted((m, p) for m in "abc" for p in (3, 6))
    assert len({d for m in "abc" for p, d in g[m].checks.mine if p == 6}) == 1


def test_duplicates_and_queries_do_not_move_the_positions() -> None:
    g = Group(Policy(every=2, interval=None)).form(Dice)
    calls(g, "a", [("add", 1), ("get",)])
    g.settle()
    submit(g["b"], "add", 1, rid=1)  # a retry of rid 1 elsewhere: answered from the cache
    calls(g, "c", [("add", 5)], start=3)
    g.settle()
    assert all([p for p, _d in g[m].checks.mine] == [2] for m in "abc")
    assert g["a"].applied == 2


def test_time_trigger_is_derived_from_the_agreed_time_of_the_updates() -> None:
    """Every replica checks after the first update whose `now` (chosen by the ordering replica)
    falls in a later interval than the previous update's; a joiner, which does not know the time
    of the update before its snapshot, checks a subset of those positions."""
    g = Group(Policy(every=None, interval=1.0)).form(Dice)
    clock = [0.5]
    for m in "abc":
        g[m]._wallclock = lambda: clock[0]
    rid = 0
    for t in (0.5, 0.7, 1.2, 1.5):  # 1.2 crosses into [1, 2): a check at update 3
        clock[0], rid = t, rid + 1
        submit(g["b"], "add", 1, rid=rid)
        g.settle()
    admit(g, "d", Dice)
    g.pump()
    g.settle()
    g["d"]._wallclock = lambda: clock[0]
    for t in (2.1, 2.2, 3.9):  # 2.1: update 5, 3.9: update 7
        clock[0], rid = t, rid + 1
        submit(g["a"], "add", 1, rid=rid)
        g.settle()
    for m in "abc":
        assert [p for p, _d in g[m].checks.mine] == [3, 5, 7], m
    assert g["d"].ready
    assert [p for p, _d in g["d"].checks.mine] == [7]  # 5: the previous update's time unknown
    assert not any(g[m].checks.events for m in "abcd")


def test_digests_taken_at_the_cut_agree_however_late_they_are_hashed() -> None:
    """The hash runs later (off the core) while updates go on: each replica still hashes exactly
    the state at the position, so reports of one position agree and nothing is flagged."""
    g = Group(Policy(every=2, interval=None))
    late = Deferred()
    g.hashers["c"] = late
    g.form(Dice)
    calls(g, "a", [("add", 1), ("add", 2)])
    g.settle()
    assert len(late.pending) == 1 and len(digs(g)) == 2  # c's cut at 2 is not hashed yet
    calls(g, "a", [("add", 10), ("add", 20), ("add", 30)], start=3)  # c moves on to 5
    g.settle()
    assert g["c"].obj.total == 63
    late.run()  # now c hashes its cuts at 2 and 4: the states there, not the live one
    g.settle()
    for m in "abc":
        assert not g[m].checks.events, m
        assert sorted(g[m].checks.agreed) == [2, 4]
    assert {d for m in "abc" for p, d in g[m].checks.mine if p == 2} == {g["a"].checks.agreed[2]}


def test_reports_of_different_positions_are_never_compared() -> None:
    """b is one position behind when it reports: its digest of 2 is compared with the others'
    digests of 2, not with their (different) digests of 4."""
    g = Group(Policy(every=2, interval=None)).form(Dice)
    calls(g, "a", [("add", 1), ("add", 2), ("add", 3), ("add", 4)])
    g.deliver("a", "c")  # a and c reach 4 and report 2 and 4; b has delivered nothing yet
    g.deliver("b", upto=2)  # b applies two updates and reports its digest of 2
    g.deliver()
    g.safe()
    assert not any(g[m].checks.events for m in "abc")
    assert all(sorted(g[m].checks.agreed) == [2, 4] for m in "abc")


def test_a_hasher_that_falls_behind_makes_positions_go_unchecked_here_not_false_alarms() -> None:
    g = Group(Policy(every=1, interval=None))
    slow = Deferred()
    g.hashers["c"] = slow
    g.form(Dice)
    calls(g, "a", [("add", 1)] * 4)
    g.settle()
    assert len(slow.pending) == 2 and g["c"].checks.skipped == 2  # cuts 3 and 4: not taken
    slow.run()
    g.settle()
    assert [p for p, _d in g["c"].checks.mine] == [1, 2]
    assert not any(g[m].checks.events for m in "abc")
    calls(g, "a", [("add", 1)], start=5)
    g.settle()
    slow.run()
    g.settle()
    assert [p for p, _d in g["c"].checks.mine] == [1, 2, 5] and g["c"].checks.pending == 0


# --- a mismatch ----------------------------------------------------------------------------------


def test_a_mismatch_is_logged_with_its_position_and_the_methods_since_the_last_agreeing_check(
    caplog,
) -> None:
    g = Group(Policy(every=3, interval=None)).form(Dice)
    calls(g, "a", [("add", 1), ("add", 1), ("add", 1)])
    g.settle()  # update 3 agrees everywhere
    NOISE[id(g["c"].obj)] = 7
    with caplog.at_level(logging.ERROR, logger="cohort.replica"):
        calls(g, "a", [("roll",), ("add", 2), ("roll",)], start=4)
        g.deliver()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3  # every member logs it (each decides at the same report)
    for line in errors:
        assert "DIVERGENCE at update 6" in line and "c holds state digest" in line
        assert "the majority (a, b)" in line
        assert "since the last agreeing check (update 3): roll x2, add x1" in line
        assert "c takes a fresh state from b" in line
    for m in "abc":
        assert g[m].checks.events == [(6, "c")]
    d = g["c"].checks.diverged
    assert d["position"] == 6 and d["since"] == 3 and d["methods"] == {"roll": 2, "add": 1}
    assert d["majority"] == ["a", "b"] and d["donor"] == "b"


def test_resync_gives_the_diverged_replica_a_fresh_state_through_the_transfer_path() -> None:
    g = Group(Policy(every=2, interval=None)).form(Dice)
    NOISE[id(g["c"].obj)] = 100
    waiting = submit(g["c"], "add", 5, rid=1, cid=b"other")  # c's own client, not yet Safe
    calls(g, "a", [("roll",)])
    g.deliver()
    assert not g["c"].ready  # diverged at 2: serves nothing until the snapshot is in
    assert waiting.status == st.RETRY  # its client retries elsewhere (same ids)
    assert g.sent == [("c", "b", "REQ")]  # it asks the youngest of the majority
    g.pump()
    assert ("b", "c", "HDR") in g.sent  # which donates
    late = calls(g, "a", [("add", 1000)], start=2)  # delivered while c waits: buffered
    g.deliver()
    g.pump()
    g.settle()
    assert g["c"].ready and g["c"].obj.total == g["a"].obj.total == 1006
    assert len(g.digests()) == 1
    assert g["c"].xfer_log[-1]["donor"] == "b"
    assert late[0].value == 1006
    assert g["c"].checks.summary["resyncs"] == 1
    assert submit(g["b"], "add", 5, rid=1, cid=b"other").value == 5  # the retry: from the cache
    calls(g, "a", [("add", 1)] * 2, start=3)  # the next checks agree: c holds no noise now
    g.settle()
    assert g["a"].checks.events == [(2, "c")]
    assert g["c"].checks.mine[-1] == (4, g["a"].checks.agreed[4])


def test_stop_policy_makes_the_diverged_replica_leave_with_a_clear_error() -> None:
    g = Group(Policy(every=2, interval=None, on_divergence="stop")).form(Dice)
    NOISE[id(g["a"].obj)] = 1  # the coordinator itself diverges
    waiting = submit(g["a"], "add", 5, rid=1, cid=b"other")
    calls(g, "b", [("roll",)])
    g.deliver()
    assert [m for m, _why in g.left] == ["a"]
    why = g.left[0][1]
    assert "diverged from the majority at update 2" in why and "left the group" in why
    assert waiting.status == st.NO_QUORUM
    assert not g["a"].ready and g["a"].checks.summary["stopped"] == why
    r = submit(g["a"], "get", rid=9)
    assert r.status == st.NO_QUORUM and "diverged" in r.calls[0][1]
    assert not any(k == "HDR" for _s, _d, k in g.sent)  # nobody sends it a state
    assert g["b"].ready and g["c"].ready and g["b"].checks.events == [(2, "a")]


def test_without_a_majority_the_error_says_so_and_nothing_is_resynced(caplog) -> None:
    g = Group(Policy(every=1, interval=None)).form(Dice)
    for i, m in enumerate("abc"):
        NOISE[id(g[m].obj)] = i
    with caplog.at_level(logging.ERROR, logger="cohort.replica"):
        calls(g, "a", [("roll",)])
        g.settle()
    assert any("no majority agrees" in r.getMessage() for r in caplog.records)
    for m in "abc":
        assert g[m].ready and g[m].checks.events == [(1, None)]
        assert g[m].checks.diverged["position"] == 1
    assert not g.sent


def test_a_report_made_before_a_resync_is_not_acted_on_again() -> None:
    """c reports 2 and 4 (both diverged) before the verdict on 2 reaches it: it resyncs once."""
    g = Group(Policy(every=2, interval=None))
    slow = {m: Deferred() for m in "ab"}
    g.hashers.update(slow)
    g.form(Dice)
    NOISE[id(g["c"].obj)] = 1
    calls(g, "a", [("roll",), ("add", 1), ("add", 1), ("add", 1)])
    g.deliver()  # c reported 2 and 4 at once; a and b have not hashed yet
    for d in slow.values():
        d.run()
    g.deliver()
    for m in "abc":
        assert g[m].checks.events == [(2, "c")], m
    g.pump()
    g.settle()
    assert [k for s, d, k in g.sent if k in ("REQ", "HDR")] == ["REQ", "HDR"]
    assert g["c"].ready and len(g.digests()) == 1


@pytest.mark.parametrize("first", ["donor", "diverged"])
def test_the_snapshot_leaves_once_both_sides_have_decided(first: str) -> None:
    """The donor sends only once it has the diverged replica's REQ and its own verdict, in either
    order: a snapshot arriving while the replica still serves would be ignored, and one cut
    before the donor's verdict could miss updates the replica applied before its own."""
    g = Group(Policy(every=2, interval=None)).form(Dice)
    NOISE[id(g["c"].obj)] = 1
    calls(g, "a", [("add", 1), ("roll",)])
    g.deliver("a")  # a reports
    g.deliver("c", upto=2)  # c applies both and reports (diverged)
    if first == "donor":
        g.deliver("b")  # b reports, and decides: it owes c a state, but c has not asked
        assert g["b"].checks.events == [(2, "c")] and not g.sends
        g.deliver("c")  # c decides and asks
        assert [k for _s, _d, k in g.sent] == ["REQ"]
    else:
        g.deliver("b", upto=2)  # b reports, but has not delivered the reports yet
        g.deliver("c")  # c decides and asks first
        g.pump("b")
        assert not g.sends and not g["b"].checks.events  # b keeps the request until its verdict
        g.deliver("b")
    g.pump()
    later = calls(g, "a", [("add", 100)], start=3)
    g.settle()
    g.pump()
    g.settle()
    assert g["c"].ready and g["c"].obj.total == g["a"].obj.total == 102
    assert [k for _s, _d, k in g.sent if k == "HDR"] == ["HDR"] and later[0].value == 102


def test_a_restarted_replica_that_diverges_again_is_found_again() -> None:
    """Its resync count starts again from 0 in a new process: reports name the incarnation (its
    first view), so they are not taken for reports from before its earlier resync."""
    g = Group(Policy(every=2, interval=None)).form(Dice)
    NOISE[id(g["c"].obj)] = 1
    calls(g, "a", [("roll",), ("add", 1)])
    g.settle()
    g.pump()
    g.settle()
    assert g["c"].ready and g["a"].checks.events == [(2, "c")]
    g.install(("a", "b"))  # c stops; a new process at the same address joins
    admit(g, "c", Dice)
    g.pump()
    g.settle()
    assert g["c"].ready and g["c"].checks.epoch == 0
    NOISE[id(g["c"].obj)] = 1
    calls(g, "a", [("roll",), ("add", 1)], start=3)
    g.settle()
    assert g["a"].checks.events == [(2, "c"), (4, "c")]
    g.pump()
    g.settle()
    assert g["c"].ready and len(g.digests()) == 1


def test_a_late_report_that_disagrees_is_flagged_when_it_arrives() -> None:
    g = Group(Policy(every=2, interval=None))
    slow = Deferred()
    g.hashers["c"] = slow
    g.form(Dice)
    NOISE[id(g["c"].obj)] = 3
    calls(g, "a", [("add", 1), ("roll",)])
    g.deliver()
    assert all(g[m].checks.agreed.get(2) for m in "abc") and not g["a"].checks.events
    slow.run()
    g.deliver()
    assert all(g[m].checks.events == [(2, "c")] for m in "abc")


def test_large_values_are_hashed_once_while_they_do_not_change() -> None:
    g = Group(Policy(every=1, interval=None))
    g.form(Dice, "a")
    r = submit(g["a"], "big", 256, rid=1)
    g.settle()
    assert r.value == 256 * 1024
    calls(g, "a", [("add", 1)], start=2)
    g.settle()
    assert [p for p, _d in g["a"].checks.mine] == [1, 2]
    leaves = LeafDigests()
    state = [g["a"].obj.__dict__, g["a"].cache.dump(), g["a"].applied]
    first = leaves.digest(state)
    assert leaves.hashed > 256 * 1024
    assert leaves.digest(state) == first and leaves.hashed < 4096  # the 256 KiB leaf: remembered
    assert first == g["a"].checks.mine[-1][1]


def test_passive_style_and_no_policy_do_not_check() -> None:
    from enginekit import PassiveCounter

    g = Group(Policy(every=1, interval=None)).form(PassiveCounter)
    calls(g, "a", [("add", 1)])
    g.settle()
    assert not digs(g) and not g["a"].checks.mine
    g = Group().form(Dice)
    calls(g, "a", [("add", 1)])
    g.settle()
    assert not digs(g)


def test_policy_values_are_checked() -> None:
    for bad in (
        dict(on_divergence="ignore"),
        dict(query_guard="strict"),
        dict(every=0),
        dict(interval=-1.0),
    ):
        with pytest.raises(ValueError):
            Policy(**bad)


# --- the query guard -----------------------------------------------------------------------------


def test_a_query_that_rebinds_an_attribute_raises_replication_error_naming_it() -> None:
    g = Group().form(Dice)
    r = submit(g["a"], "poke", rid=1)
    g.settle()
    e = r.error
    assert isinstance(e, ReplicationError)  # this client has the class: it comes back as itself
    assert "@query Dice.poke changed the replicated state" in str(e) and "'total'" in str(e)


def test_a_local_query_that_grows_a_container_raises() -> None:
    g = Group().form(Dice)
    r = submit(g["b"], "grow", rid=1, local=True)
    assert "Dice.grow" in str(r.error) and "'hist'" in str(r.error)


def test_the_shallow_guard_misses_deep_changes_and_the_digest_guard_catches_them() -> None:
    g = Group().form(Dice)
    r = submit(g["a"], "deep", rid=1, local=False)
    g.settle()
    assert r.value == 1  # shallow: same binding, same size
    g = Group(Policy(every=None, interval=None, query_guard="digest")).form(Dice)
    r = submit(g["a"], "deep", rid=1)
    g.settle()
    assert "Dice.deep" in str(r.error) and "digest" in str(r.error)


def test_queries_that_only_read_pass_and_the_guard_can_be_off() -> None:
    g = Group(Policy(every=None, interval=None, query_guard="digest")).form(Dice)
    r = submit(g["a"], "get", rid=1)
    g.settle()
    assert r.value == 0
    g = Group(Policy(every=None, interval=None, query_guard="off")).form(Dice)
    r = submit(g["a"], "poke", rid=1)
    g.settle()
    assert r.value == 1


def test_the_guard_raises_replication_error_in_process() -> None:
    """What the replica raises (the client sees it as RemoteError naming the type)."""
    g = Group().form(Dice)
    fn = g["a"].checks.guard("poke", g["a"].obj.poke)
    with pytest.raises(ReplicationError, match="Dice.poke"):
        fn()
    assert g["a"].checks.guard("add", g["a"].obj.add) == g["a"].obj.add  # updates: untouched


def test_replica_options_are_checked_when_it_is_made() -> None:
    from cohort.replication.replica import Replica

    for bad in (
        dict(on_divergence="ignore"),
        dict(query_guard="strict"),
        dict(check_every=0),
        dict(check_interval=0.0),
    ):
        with pytest.raises(ValueError):
            Replica(Dice, "g", "127.0.0.1:1", [], **bad)
    r = Replica(Dice, "g", "127.0.0.1:1", [], on_divergence="stop", check_every=None)
    assert r.checks == Policy(every=None, interval=10.0, on_divergence="stop")
