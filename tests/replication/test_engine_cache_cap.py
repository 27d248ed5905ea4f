"""The reply cache's per-client cap inside the Engine: every replica evicts alike, a joiner gets the
same cache, and a retry of an evicted request is STALE (never executed twice)."""

from __future__ import annotations

import pytest
from cohort.orb import errors as st
from cohort.replication.cache import ReplyCache
from cohort.samples.counter import Counter
from enginekit import CID, Group, admit, submit


def test_a_client_that_never_advances_done_stays_capped_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 5)
    g = Group().form(Counter)
    for rid in range(1, 13):
        r = submit(g["a"], "add", 1, rid=rid, done=0)
        g.settle()
        assert r.value == rid
    for m in "abc":
        assert sorted(g[m].cache.entries[CID]) == [8, 9, 10, 11, 12]
        assert g[m].cache.evicted == {CID: 7}
    assert len(g.digests()) == 1

    casts = len(g.casts)
    late = submit(g["b"], "add", 1, rid=3)  # a retry of an evicted request
    assert late.status == st.STALE and "already completed" in late.calls[0][1]
    assert len(g.casts) == casts and g["b"].obj.value == 12
    again = submit(g["c"], "add", 1, rid=11)  # still cached: the original result
    assert again.value == 11 and len(g.casts) == casts

    admit(g, "d", Counter)  # the joiner's cache (and digest) equals its donor's
    g.pump()
    assert g["d"].ready and g["d"].cache.evicted == {CID: 7}
    assert len(g.digests()) == 1
    assert submit(g["d"], "add", 1, rid=2).status == st.STALE


def test_an_evicted_retry_ordered_later_is_stale_at_every_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original completes; the client moves on without advancing `done` until the cap evicts
    it; a retry cast by another replica is then ordered: STALE everywhere, not re-executed."""
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 2)
    g = Group().form(Counter)
    first = submit(g["a"], "add", 5, rid=1)
    g.settle()
    assert first.value == 5
    for rid in (2, 3, 4):
        submit(g["a"], "add", 1, rid=rid)
        g.settle()
    late = submit(g["b"], "add", 5, rid=9, cid=b"other")  # b casts: the retry below is ordered
    retry = submit(g["c"], "add", 5, rid=1)
    assert retry.status == st.STALE  # answered at once from the eviction watermark
    g.settle()
    assert late.value == 13
    assert {g[m].obj.value for m in "abc"} == {13} and len(g.digests()) == 1
    assert all(g[m].stats["executed"] == 5 for m in "abc")


def test_an_original_evicted_before_it_is_safe_still_gets_its_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 2)
    g = Group().form(Counter)
    replies = [submit(g["a"], "add", 1, rid=rid) for rid in range(1, 5)]  # 4 outstanding at once
    g.deliver()  # all four execute; the cap evicts rids 1 and 2 before Safe arrives
    g.safe()
    assert [r.calls[0][0] for r in replies] == [st.OK] * 4
