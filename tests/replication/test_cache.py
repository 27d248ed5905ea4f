"""replication.cache.ReplyCache: exactly-once bookkeeping that must stay identical on every replica."""

from __future__ import annotations

import msgpack
import pytest

from orb.errors import ERROR, OK
from replication.cache import ReplyCache

A, B, C, D = b"client-a", b"client-b", b"client-c", b"client-d"


def wire(data):
    """What a snapshot does to the dump: msgpack there and back."""
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False)


def test_get_and_store() -> None:
    c = ReplyCache()
    assert c.get(A, 1) is None and len(c) == 0
    c.store(A, 1, (OK, b"\x05"))
    c.store(A, 2, (ERROR, b"err"))
    c.store(B, 1, (OK, b"\x01"))
    assert c.get(A, 1) == (OK, b"\x05")
    assert c.get(A, 2) == (ERROR, b"err")
    assert c.get(B, 1) == (OK, b"\x01")
    assert c.get(B, 2) is None and c.get(C, 1) is None
    assert len(c) == 3


def test_is_stale_only_for_completed_and_forgotten() -> None:
    c = ReplyCache()
    assert not c.is_stale(A, 1)  # never seen: a fresh request
    c.store(A, 1, (OK, b"1"))
    c.store(A, 2, (OK, b"2"))
    c.store(A, 3, (OK, b"3"))
    assert not c.is_stale(A, 1)  # cached: answer from the cache, not stale
    c.forget_upto(A, 2)
    assert c.get(A, 1) is None and c.get(A, 2) is None
    assert c.get(A, 3) == (OK, b"3")
    assert c.is_stale(A, 1) and c.is_stale(A, 2)
    assert not c.is_stale(A, 3)  # still cached
    assert not c.is_stale(A, 4)  # not yet run
    assert not c.is_stale(B, 1)  # another client's numbering is separate
    assert c.done == {A: 2}


def test_forget_upto_never_moves_back() -> None:
    c = ReplyCache()
    for rid in range(1, 6):
        c.store(A, rid, (OK, bytes([rid])))
    c.forget_upto(A, 3)
    c.forget_upto(A, 1)  # an older watermark (a delayed retry) changes nothing
    c.forget_upto(A, 3)
    assert c.done[A] == 3
    assert [r for r in range(1, 6) if c.get(A, r)] == [4, 5]
    c.forget_upto(B, 0)  # zero watermark: no entry created
    assert B not in c.done


def test_dump_load_round_trip() -> None:
    c = ReplyCache()
    c.store(A, 1, (OK, b"a1"))
    c.store(A, 2, (OK, b"a2"))
    c.store(B, 7, (ERROR, b"b7"))
    c.store(C, 1, (OK, b""))
    c.forget_upto(A, 1)
    c.forget_upto(D, 4)  # a client known only by its watermark
    dumped = c.dump()
    d = ReplyCache.load(wire(dumped))
    assert d.dump() == dumped
    assert d.get(A, 2) == (OK, b"a2") and d.get(A, 1) is None
    assert d.get(B, 7) == (ERROR, b"b7") and d.get(C, 1) == (OK, b"")
    assert d.is_stale(A, 1) and d.is_stale(D, 3) and not d.is_stale(D, 5)
    assert len(d) == len(c) == 3
    # the order (least recently active first) survives, so eviction stays identical
    assert list(d.entries) == list(c.entries)


def test_empty_cache_round_trip() -> None:
    c = ReplyCache.load(wire(ReplyCache().dump()))
    assert c.dump() == [] and len(c) == 0


def test_lru_evicts_least_recently_active_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_CLIENTS", 3)
    c = ReplyCache()
    c.store(A, 1, (OK, b"a"))
    c.store(B, 1, (OK, b"b"))
    c.store(C, 1, (OK, b"c"))
    c.forget_upto(A, 0)
    c.store(A, 2, (OK, b"a2"))  # A becomes the most recently active
    c.store(D, 1, (OK, b"d"))  # a 4th client: B (oldest) goes
    assert len(c.entries) == 3
    assert c.get(B, 1) is None
    assert c.get(A, 1) == (OK, b"a") and c.get(C, 1) and c.get(D, 1)
    assert list(c.entries) == [C, A, D]


def test_lru_eviction_also_forgets_the_watermark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_CLIENTS", 2)
    c = ReplyCache()
    c.store(A, 1, (OK, b"a1"))
    c.store(A, 2, (OK, b"a2"))
    c.forget_upto(A, 1)
    c.store(B, 1, (OK, b"b"))
    c.store(C, 1, (OK, b"c"))  # evicts A
    assert A not in c.entries and A not in c.done
    assert not c.is_stale(A, 1)
    assert len(c.entries) <= 2


def test_lru_bound_holds_under_many_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_CLIENTS", 5)
    c = ReplyCache()
    for i in range(100):
        c.store(f"c{i}".encode(), 1, (OK, b"x"))
        assert len(c.entries) <= 5
    assert set(c.entries) == {f"c{i}".encode() for i in range(95, 100)}


def test_eviction_is_deterministic_across_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas fed the same ordered invocations end with identical caches (and dumps)."""
    monkeypatch.setattr(ReplyCache, "MAX_CLIENTS", 4)
    ops = [(bytes([i % 7]), i // 7 + 1, i // 7) for i in range(60)]
    r1, r2 = ReplyCache(), ReplyCache()
    for cid, rid, done in ops:
        for r in (r1, r2):
            r.forget_upto(cid, done)
            r.store(cid, rid, (OK, bytes([rid])))
    assert r1.dump() == r2.dump()
    assert len(r1.entries) == 4


def test_loaded_cache_evicts_like_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    """A joiner's cache (loaded from a snapshot) must keep evicting in step with its donor."""
    monkeypatch.setattr(ReplyCache, "MAX_CLIENTS", 3)
    donor = ReplyCache()
    for cid in (A, B, C):
        donor.store(cid, 1, (OK, cid))
    joiner = ReplyCache.load(wire(donor.dump()))
    for cid, rid in ((D, 1), (A, 2), (B, 2)):
        for r in (donor, joiner):
            r.store(cid, rid, (OK, b"."))
    assert joiner.dump() == donor.dump()


def test_round_trip_keeps_a_client_whose_entries_were_all_pruned() -> None:
    c = ReplyCache()
    c.store(A, 1, (OK, b"a1"))
    c.forget_upto(A, 1)  # A's only entry is pruned: entries[A] == {}
    c.store(B, 1, (OK, b"b1"))
    assert c.dump() == [[A, 1, [], True], [B, 0, [[1, OK, b"b1"]], True]]
    d = ReplyCache.load(wire(c.dump()))
    assert d.dump() == c.dump()
