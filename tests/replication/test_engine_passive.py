"""Engine: the passive replication style."""

from __future__ import annotations

from enginekit import (
    Group,
    Journal,
    PassiveCounter,
    admit,
    submit,
)

# --- passive style ---------------------------------------------------------------------------------


def test_passive_only_the_coordinator_executes_and_backups_apply_updates() -> None:
    g = Group().form(PassiveCounter)
    r = submit(g["b"], "add", 5, rid=1)
    g.deliver(upto=1)  # the INV only
    assert g.casts == [("b", "INV"), ("a", "PUPD")]
    assert [g[m].obj.calls for m in "abc"] == [1, 0, 0]
    assert [g[m].obj.value for m in "abc"] == [5, 0, 0]
    g.deliver()  # the PUPD
    assert [g[m].obj.value for m in "abc"] == [5, 5, 5]
    assert [g[m].obj.calls for m in "abc"] == [1, 0, 0]
    assert [g[m].applied for m in "abc"] == [1, 1, 1]
    assert not any(g[m].passive_pending for m in "abc")
    g.safe("b", count=1)
    assert not r.called  # the INV alone being Safe is not enough: the update must be
    g.safe("b", count=2)
    assert r.value == 5
    assert len(g.digests()) == 1


def test_passive_delta_updates_use_set_update() -> None:
    g = Group().form(Journal)
    r1 = submit(g["c"], "append", "x", rid=1)
    r2 = submit(g["c"], "append", "y", rid=2, done=0)
    g.settle()
    assert r1.value == 1 and r2.value == 2
    assert [g[m].obj.items for m in "abc"] == [["x", "y"]] * 3
    assert [g[m].obj.applied_deltas for m in "abc"] == [0, 2, 2]
    assert len(g.digests()) == 1


def test_passive_new_coordinator_executes_the_pending_invocation_once() -> None:
    g = Group().form(PassiveCounter)
    r = submit(g["b"], "add", 5, rid=1)
    g.deliver(upto=1)  # everyone delivers the INV; a executes and casts a PUPD...
    assert g["a"].obj.calls == 1
    assert all(g[m].passive_pending for m in "bc")
    g.install(("b", "c"))  # ...and crashes before anyone delivers the PUPD
    assert g["b"].obj.calls == 1 and g["c"].obj.calls == 0
    assert g.casts[-1] == ("b", "PUPD")
    g.deliver()
    assert not r.called
    g.safe()
    assert r.value == 5
    assert g["b"].obj.value == g["c"].obj.value == 5  # once, not twice
    assert g["b"].applied == g["c"].applied == 1
    assert len(g.digests()) == 1
    # a retry at c is answered from the cache, no new execution
    retry = submit(g["c"], "add", 5, rid=1)
    assert retry.value == 5 and g["b"].obj.calls == 1


def test_passive_pending_invocation_travels_with_the_snapshot() -> None:
    g = Group().form(PassiveCounter)
    admit(g, "d", PassiveCounter)
    g.pump()
    r = submit(g["d"], "add", 3, rid=1)
    g.deliver(upto=1)
    g.install(("b", "c", "d"))  # a (the coordinator) dies before its PUPD is delivered
    g.settle()
    assert r.value == 3
    assert {g[m].obj.value for m in "bcd"} == {3}
    assert len(g.digests()) == 1


def test_passive_racing_retry_executes_once() -> None:
    g = Group().form(PassiveCounter)
    r1 = submit(g["b"], "add", 5, rid=1)
    r2 = submit(g["c"], "add", 5, rid=1)
    g.settle()
    assert r1.value == r2.value == 5
    assert g["a"].obj.calls == 1
    assert {g[m].obj.value for m in "abc"} == {5}
    assert len(g.digests()) == 1


def test_passive_retry_at_the_coordinator_waits_for_the_update_to_be_safe() -> None:
    g = Group().form(PassiveCounter)
    submit(g["a"], "add", 5, rid=1)
    g.deliver("a", upto=1)  # only the coordinator delivered the INV; its PUPD is not delivered
    assert g["a"].obj.calls == 1
    retry = submit(g["a"], "add", 5, rid=1)
    assert not retry.called


def test_passive_duplicate_inv_does_not_release_before_the_update_is_safe() -> None:
    g = Group().form(PassiveCounter)
    at_a = submit(g["a"], "add", 5, rid=1)
    submit(g["b"], "add", 5, rid=1)  # racing retry: the order is INV, INV, PUPD
    g.deliver("a", upto=2)
    assert [k for _, k in g.casts] == ["INV", "INV", "PUPD"]
    g.safe("a", count=2)  # both INVs are Safe; the PUPD (pos 2) is not even delivered
    assert not at_a.called
