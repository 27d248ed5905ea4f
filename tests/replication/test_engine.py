"""Engine: forming, replies held until Safe, exactly once, errors, queries, quorum, upcalls."""

from __future__ import annotations

import sys

from cohort.orb import errors as st
from cohort.samples.bank import Bank
from cohort.samples.counter import Counter
from cohort.samples.kvstore import KVStore
from cohort.state import codec
from enginekit import (
    CID,
    BadHook,
    Group,
    Rec,
    Strict,
    Tracked,
    submit,
)

# --- forming a group -----------------------------------------------------------------------------


def test_forming_group_creates_fresh_state_everywhere() -> None:
    g = Group().form(Tracked, "abc", 7)
    for m in "abc":
        e = g[m]
        assert e.ready and isinstance(e.obj, Tracked) and e.obj.value == 7
        assert e.views == [g.view.vid]
        assert e.obj.seen == [(g.view.vid, ("a", "b", "c"), "a", True)]
    assert len(g.digests()) == 1
    assert g.casts == [] and g.sent == []


# --- replies held until Safe ---------------------------------------------------------------------


def test_reply_held_until_safe_covers_its_position() -> None:
    g = Group().form(Counter)
    r = submit(g["b"], "add", 5, rid=1)
    assert g.casts == [("b", "INV")]
    g.deliver()
    assert [g[m].obj.value for m in "abc"] == [5, 5, 5]
    assert not r.called  # executed everywhere but not yet uniform
    g.safe("b", count=0)
    assert not r.called
    g.safe("a", "c")  # Safe at other members does not answer b's client
    assert not r.called
    g.safe("b", count=1)
    assert r.value == 5
    assert len(r.calls) == 1


def test_safe_releases_replies_in_order_up_to_the_count() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 1, rid=1)
    r2 = submit(g["a"], "add", 2, rid=2)  # concurrent calls: the watermark stays at 0
    r3 = submit(g["a"], "add", 3, rid=3)
    g.deliver()
    g.safe("a", count=2)
    assert r1.value == 1 and r2.value == 3 and not r3.called
    g.safe("a", count=3)
    assert r3.value == 6


def test_new_primary_view_releases_held_replies() -> None:
    g = Group().form(Counter)
    r = submit(g["a"], "add", 4, rid=1)
    g.deliver()
    assert not r.called
    g.install(("a", "b", "c"))  # the view ended and we moved on with the primary
    assert r.value == 4


def test_new_view_releases_held_replies_at_survivors_after_a_crash() -> None:
    g = Group().form(Counter)
    r = submit(g["b"], "add", 4, rid=1)
    g.deliver()
    g.install(("b", "c"))  # a crashed
    assert r.value == 4
    assert g["b"].obj.value == g["c"].obj.value == 4


def test_non_primary_view_does_not_release_replies() -> None:
    g = Group().form(Counter)
    r = submit(g["a"], "add", 4, rid=1)
    g.deliver()
    g.install(("a",), primary=False)
    assert not r.called  # property 11: no acknowledgement from a non-primary view
    r2 = submit(g["a"], "add", 1, rid=2)
    assert r2.status == st.NO_QUORUM


# --- exactly once --------------------------------------------------------------------------------


def test_retry_racing_its_original_is_executed_once() -> None:
    g = Group().form(Counter)
    original = submit(g["a"], "add", 5, rid=1)
    retry = submit(g["b"], "add", 5, rid=1)  # the client gave up on a and retried at b
    assert g.casts == [("a", "INV"), ("b", "INV")]
    g.settle()
    for m in "abc":
        e = g[m]
        assert e.obj.value == 5
        assert e.stats["executed"] == 1 and e.stats["duplicates"] == 1
    assert original.value == 5 and retry.value == 5
    assert original.calls == retry.calls  # byte-identical replies
    assert len(g.digests()) == 1


def test_second_submission_at_the_same_replica_needs_no_second_cast() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    r2 = submit(g["a"], "add", 5, rid=1)
    assert g.casts == [("a", "INV")]
    g.settle()
    assert r1.value == r2.value == 5
    assert g["a"].stats["executed"] == 1


def test_retry_after_completion_answers_from_the_cache_without_a_cast() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    g.settle()
    assert r1.value == 5
    submit(g["b"], "add", 1, rid=1, cid=b"other")  # another client moves the state on
    g.settle()
    casts = len(g.casts)
    retry = submit(g["c"], "add", 5, rid=1)
    assert retry.value == 5  # the original result, not 11
    assert len(g.casts) == casts
    assert g["c"].stats["executed"] == 2 and g["c"].obj.value == 6


def test_retry_of_executed_but_unsafe_request_waits_without_a_cast() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 5, rid=1)
    g.deliver()
    retry = submit(g["b"], "add", 5, rid=1)
    assert not retry.called and len(g.casts) == 1
    g.safe("b")
    assert retry.value == 5
    assert g["b"].stats["executed"] == 1


def test_done_watermark_prunes_and_later_retry_is_stale() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    g.settle()
    r2 = submit(g["a"], "add", 2, rid=2, done=1)
    g.settle()
    assert r1.value == 5 and r2.value == 7
    for m in "abc":
        assert g[m].cache.get(CID, 1) is None
        assert g[m].cache.get(CID, 2) is not None
        assert g[m].cache.done[CID] == 1
    casts = len(g.casts)
    late = submit(g["b"], "add", 5, rid=1)
    assert late.status == st.STALE
    assert "already completed" in late.calls[0][1]
    assert len(g.casts) == casts
    assert g["b"].obj.value == 7


def test_ordered_retry_behind_the_prune_is_stale_everywhere() -> None:
    """The original was answered at a, the client went on (rid 2 prunes rid 1), and a retry that
    b cast before it delivered anything is ordered after the prune: STALE, never re-executed."""
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    g.deliver("a")
    g.safe("a")
    assert r1.value == 5
    r2 = submit(g["a"], "add", 2, rid=2, done=1)
    late = submit(g["b"], "add", 5, rid=1)  # b has delivered nothing yet: casts
    assert [k for _, k in g.casts] == ["INV", "INV", "INV"]
    g.settle()
    assert late.status == st.STALE
    assert r2.value == 7
    for m in "abc":
        e = g[m]
        assert e.obj.value == 7
        assert e.stats["executed"] == 2 and e.stats["stale"] == 1
    assert len(g.digests()) == 1


def test_waiter_is_answered_even_if_its_entry_was_pruned_before_safe() -> None:
    """Client calls rid 1 at a (slow), retries at b, b answers; the client's rid 2 (done=1) is
    ordered and delivered at a before a hears Safe for rid 1."""
    g = Group().form(Counter)
    at_a = submit(g["a"], "add", 5, rid=1)
    g.deliver("b")
    g.safe("b")
    retry = submit(g["b"], "add", 5, rid=1)
    assert retry.value == 5
    submit(g["b"], "add", 1, rid=2, done=1)
    g.deliver()
    g.safe("a")
    assert at_a.called  # OK with 5 or STALE: anything but silence


# --- errors --------------------------------------------------------------------------------------


def test_builtin_exception_is_reraised_as_itself() -> None:
    g = Group().form(Bank)
    submit(g["a"], "open", "x", 10, rid=1)
    r = submit(g["b"], "withdraw", "x", 50, rid=2, done=1)
    g.settle()
    e = r.error
    assert type(e) is ValueError and "overdraft" in str(e)
    r2 = submit(g["c"], "deposit", "nope", 1, rid=3, done=2)
    g.settle()
    assert type(r2.error) is KeyError
    for m in "abc":
        assert g[m].obj.accounts == {"x": 10}
    # the error is cached like a result: a retry gets the same bytes without re-executing
    again = submit(g["a"], "deposit", "nope", 1, rid=3, done=2)
    assert again.calls == r2.calls
    assert len(g.digests()) == 1


def test_custom_exception_is_its_class_here_and_a_remote_error_where_unknown(monkeypatch) -> None:
    g = Group().form(Strict)
    r = submit(g["a"], "fail", rid=1)
    g.settle()
    e = r.error  # this process has the class (its module is imported): it comes back as itself
    assert type(e).__name__ == "Overdrawn" and str(e) == "not today"
    assert any("raise Overdrawn" in n for n in e.__notes__)
    module = type(e).__module__
    monkeypatch.delitem(sys.modules, module)  # a client that never imported the class
    e = st.decode_exception(r.calls[-1][1])
    assert isinstance(e, st.RemoteError)
    assert e.remote_type.endswith("Overdrawn")
    assert e.remote_message == "not today"
    assert "raise Overdrawn" in e.remote_traceback and "/" not in e.remote_traceback
    # the partial mutation before the raise happened on every replica alike
    assert {g[m].obj.n for m in "abc"} == {100}
    assert len(g.digests()) == 1


def test_unserializable_result_is_an_error_naming_the_type() -> None:
    g = Group().form(Strict)
    r = submit(g["a"], "opaque", rid=1)
    g.settle()
    e = r.error
    assert isinstance(e, codec.SerializationError)
    assert "'object'" in str(e) and "opaque()" in str(e)


def test_unknown_method_is_an_attribute_error_without_a_cast() -> None:
    g = Group().form(Counter)
    r = submit(g["a"], "sub", 1, rid=1)
    e = r.error
    assert type(e) is AttributeError and "'sub'" in str(e) and "Counter" in str(e)
    for private in ("_check", "__init__", "get_state"):
        assert type(submit(g["a"], private, rid=2).error) is AttributeError
    assert g.casts == []


def test_undecodable_arguments_are_an_error() -> None:
    g = Group().form(Counter)
    r = Rec()
    g["a"].submit(CID, 1, "add", b"\xc1not msgpack", 0, False, r)
    g.settle()
    assert isinstance(r.error, Exception)
    assert {g[m].obj.value for m in "abc"} == {0}


# --- queries -------------------------------------------------------------------------------------


def test_linearizable_query_runs_only_at_its_origin_and_is_not_cached() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 3, rid=1)
    q = submit(g["b"], "get", rid=2, done=1)  # ordered after the update
    assert [k for _, k in g.casts] == ["INV", "QRY"]
    g.deliver()
    assert not q.called  # held until Safe like an update
    g.safe()
    assert q.value == 3
    assert [g[m].stats["queries"] for m in "abc"] == [0, 1, 0]
    for m in "abc":
        assert g[m].cache.get(CID, 2) is None
        assert len(g[m].cache) == 1
    assert len(g.digests()) == 1


def test_query_is_released_by_a_new_primary_view() -> None:
    g = Group().form(Counter)
    q = submit(g["b"], "get", rid=1)
    g.deliver()
    g.install(("a", "b", "c"))
    assert q.value == 0


def test_repeated_query_is_executed_again() -> None:
    g = Group().form(Counter)
    q1 = submit(g["a"], "get", rid=1)
    g.settle()
    submit(g["a"], "add", 2, rid=2, done=1)
    q2 = submit(g["a"], "get", rid=1)  # same ids, but queries are never cached
    g.settle()
    assert q1.value == 0 and q2.value == 2
    assert g["a"].stats["queries"] == 2


def test_local_query_answered_at_once_without_a_cast() -> None:
    g = Group().form(KVStore)
    submit(g["a"], "put", "k", "v", rid=1)
    g.deliver("a")
    r = submit(g["a"], "size", rid=2, local=True)
    assert r.value == 1
    r_b = submit(g["b"], "size", rid=2, local=True)  # b lags: sequentially consistent only
    assert r_b.value == 0
    assert [k for _, k in g.casts] == ["INV"]
    assert g["a"].stats["queries"] == 1


def test_local_flag_for_a_non_local_method_is_rejected() -> None:
    g = Group().form(KVStore)
    r = submit(g["a"], "get", "k", rid=1, local=True)
    assert type(r.error) is AttributeError
    r2 = submit(g["a"], "put", "k", "v", rid=2, local=True)
    assert type(r2.error) is AttributeError
    assert g.casts == []


def test_local_method_called_without_the_flag_is_still_answered_locally() -> None:
    g = Group().form(KVStore)
    r = submit(g["a"], "size", rid=1)
    assert r.value == 0 and g.casts == []


# --- no quorum -----------------------------------------------------------------------------------


def test_submit_before_any_view_or_in_a_non_primary_view_is_no_quorum() -> None:
    g = Group()
    e = g.add("a", Counter)
    r = submit(e, "add", 1, rid=1)
    assert r.status == st.NO_QUORUM and "a is not in a primary view" in r.calls[0][1]
    g.add("b", Counter)
    g.install(("a", "b"), primary=False)
    assert submit(e, "add", 1, rid=2).status == st.NO_QUORUM
    assert submit(e, "get", rid=3).status == st.NO_QUORUM
    assert g.casts == []


# --- exit and failing waiters ----------------------------------------------------------------------


def test_on_exit_fails_every_waiter_with_no_quorum() -> None:
    g = Group().form(Counter)
    held = submit(g["a"], "add", 2, rid=1, cid=b"c2")  # delivered, not Safe
    q = submit(g["a"], "get", rid=1, cid=b"c3")  # query run, reply held until Safe
    pending = submit(g["a"], "add", 1, rid=1)  # cast, not delivered
    g.deliver("a", upto=2)
    assert not held.called and not q.called and not pending.called
    e = g["a"]
    e.on_exit("excluded")
    for r in (pending, held, q):
        assert r.status == st.NO_QUORUM
        assert "left the group (excluded)" in r.calls[0][1]
    assert e.excluded and not e.ready and not e.unsafe and not e.unsafe_keys and not e.waiters
    assert submit(e, "add", 1, rid=4).status == st.NO_QUORUM
    g.deliver("a")
    g.safe("a")  # late deliveries and Safe: nobody is answered twice
    assert all(len(r.calls) == 1 for r in (pending, held, q))


def test_fail_waiters_answers_waiters_and_held_queries_once() -> None:
    g = Group().form(Counter)
    first = submit(g["a"], "add", 1, rid=1)
    g.settle()
    assert first.value == 1
    w2 = submit(g["a"], "add", 1, rid=2, done=1)
    q = submit(g["a"], "get", rid=3, done=1)
    w4 = submit(g["a"], "add", 1, rid=4, done=1)
    g.deliver("a", upto=3)  # rid 2 executed (held), the query ran (held), rid 4 not delivered
    g["a"].fail_waiters(st.RETRY, "try elsewhere")
    for r in (w2, q, w4):
        assert r.calls == [(st.RETRY, "try elsewhere")]
    # the client retries here: rid 2 waits for its held result without a second cast...
    casts = len(g.casts)
    retry2 = submit(g["a"], "add", 1, rid=2, done=1)
    assert len(g.casts) == casts and not retry2.called
    # ...and rid 4, whose waiter was failed, is cast again and still executed once
    retry4 = submit(g["a"], "add", 1, rid=4, done=1)
    assert len(g.casts) == casts + 1
    g.settle()
    assert retry2.value == 2 and retry4.value == 3
    for m in "abc":
        assert g[m].obj.value == 3 and g[m].stats["executed"] == 3
        assert g[m].stats["duplicates"] == 1
    assert all(len(r.calls) == 1 for r in (w2, q, w4))
    assert len(g.digests()) == 1


# --- deterministic now() / random() ---------------------------------------------------------------


def test_now_and_random_are_the_same_on_every_replica() -> None:
    g = Group().form(Strict)
    r1 = submit(g["b"], "stamp", rid=1)
    r2 = submit(g["b"], "stamp", rid=2, done=0)
    g.settle()
    v1, v2 = r1.value, r2.value
    assert v1 != v2  # a fresh seed per invocation
    assert isinstance(v1[0], float) and all(0 <= x < 1 for x in v1[1:])
    entries = {g[m].cache.get(CID, 1) for m in "abc"}
    assert len(entries) == 1
    assert len(g.digests()) == 1


# --- view upcalls ----------------------------------------------------------------------------------


def test_on_view_change_upcall_and_a_failing_hook() -> None:
    g = Group().form(Tracked)
    v2 = g.install(("b", "c"))
    assert g["b"].obj.seen[-1] == (v2.vid, ("b", "c"), "b", True)
    assert len(g["b"].obj.seen) == 2
    h = Group().form(BadHook)
    h.install(("a", "b"))  # the hook raises: logged, the replica carries on
    r = submit(h["a"], "op", rid=1)
    h.settle()
    assert r.value == 1


def test_undecodable_messages_are_dropped() -> None:
    g = Group().form(Counter)
    e = g["a"]
    e.on_deliver("b", b"\xc1garbage")
    e.on_send("b", b"\xc1garbage")
    e.on_send("b", b"")
    assert e.pos == g.base + 1  # the slot is consumed: positions stay aligned with the others
    r = submit(e, "add", 1, rid=1)
    g.deliver("a")
    e.on_safe(g.base + 2)
    assert r.value == 1
