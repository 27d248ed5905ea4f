"""cohort.replication.cache.ReplyCache: exactly-once bookkeeping that must stay identical on every replica."""

from __future__ import annotations

import msgpack
import pytest
from cohort.orb.errors import ERROR, OK
from cohort.replication.cache import ReplyCache

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


# --- the per-client cap (entries and bytes) ---------------------------------------------------------


def test_entry_cap_holds_for_a_client_that_never_advances_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 10)
    c = ReplyCache()
    for rid in range(1, 301):
        c.forget_upto(A, 0)  # the watermark never moves
        c.store(A, rid, (OK, b"x"))
        assert len(c.entries[A]) <= 10
    assert sorted(c.entries[A]) == list(range(291, 301))  # the oldest stored went first
    assert c.evicted == {A: 290}
    c.store(B, 1, (OK, b"b"))  # other clients are capped separately
    assert c.get(B, 1) == (OK, b"b") and len(c.entries[A]) == 10 and B not in c.evicted


def test_default_caps_bound_30000_calls_without_done() -> None:
    c = ReplyCache()
    for rid in range(1, 30_001):
        c.store(A, rid, (OK, b"\x01"))
    assert len(c) == ReplyCache.MAX_ENTRIES == 1_000
    assert c.evicted[A] == 29_000 and c.is_stale(A, 1) and c.get(A, 30_000)


def test_byte_cap_holds_and_keeps_the_newest_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_BYTES", 100)
    c = ReplyCache()
    for rid in range(1, 11):
        c.store(A, rid, (OK, bytes(30)))
        assert c.size(A) <= 100
    assert sorted(c.entries[A]) == [8, 9, 10] and c.size(A) == 90
    c.store(A, 11, (OK, bytes(500)))  # larger than the cap alone: kept, everything older goes
    assert list(c.entries[A]) == [11] and c.size(A) == 500 and c.evicted[A] == 10
    c.store(A, 12, (ERROR, bytes(10)))
    assert list(c.entries[A]) == [12] and c.size(A) == 10
    c.forget_upto(A, 12)
    assert c.size(A) == 0 and len(c) == 0


def test_default_byte_cap_is_one_mib() -> None:
    c = ReplyCache()
    body = bytes(64 * 1024)
    for rid in range(1, 41):
        c.store(A, rid, (OK, body))
        assert c.size(A) <= 1 << 20
    assert len(c.entries[A]) == 16 and c.evicted[A] == 24


def test_a_retry_of_an_evicted_request_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 3)
    c = ReplyCache()
    for rid in (1, 2, 3, 4, 5):
        c.store(A, rid, (OK, bytes([rid])))
    assert c.get(A, 1) is None and c.get(A, 2) is None
    assert c.is_stale(A, 1) and c.is_stale(A, 2)  # forgotten: never executed a second time
    assert not c.is_stale(A, 3) and c.get(A, 3) == (OK, b"\x03")  # still answered from the cache
    assert not c.is_stale(A, 6)  # a new request
    assert not c.is_stale(B, 1)
    # out-of-order arrival (threads of one proxy): the oldest *stored* goes, the watermark is the
    # highest evicted id, so an older id that was never executed is not executed late either
    c.store(A, 9, (OK, b"9"))
    c.store(A, 7, (OK, b"7"))
    assert list(c.entries[A]) == [5, 9, 7] and c.evicted[A] == 4
    c.store(A, 6, (OK, b"6"))
    assert c.evicted[A] == 5 and c.is_stale(A, 5)
    c.store(A, 10, (OK, b"10"))  # evicts 9: watermark 9, so 8 (never seen) is stale
    assert c.evicted[A] == 9 and c.is_stale(A, 8) and not c.is_stale(A, 7)


def test_eviction_by_the_cap_is_identical_on_two_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas fed the same ordered invocations (several clients, watermarks that sometimes
    move, mixed body sizes, ids out of order) evict exactly the same entries."""
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 7)
    monkeypatch.setattr(ReplyCache, "MAX_BYTES", 200)
    ops = []
    for i in range(600):
        cid = bytes([i % 3])
        rid = i // 3 + 1 + (5 if i % 11 == 0 else 0)
        done = i // 3 - 40 if i % 3 == 1 else 0
        ops.append((cid, rid, done, bytes((i * 37) % 90)))
    r1, r2 = ReplyCache(), ReplyCache()
    for cid, rid, done, body in ops:
        for r in (r1, r2):
            r.forget_upto(cid, done)
            if r.get(cid, rid) is None and not r.is_stale(cid, rid):
                r.store(cid, rid, (OK, body))
    assert r1.dump() == r2.dump()
    assert r1.evicted == r2.evicted and set(r1.evicted) == {b"\x00", b"\x01", b"\x02"}
    for cid in r1.entries:
        assert len(r1.entries[cid]) <= 7
        assert r1.size(cid) == sum(len(b) for _s, b in r1.entries[cid].values())
        assert r1.size(cid) <= 200 or len(r1.entries[cid]) == 1


def test_dump_load_round_trip_keeps_the_eviction_watermark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 2)
    donor = ReplyCache()
    for rid in (1, 2, 3, 4):
        donor.store(A, rid, (OK, bytes([rid]) * rid))
    donor.store(B, 1, (OK, b"b"))  # never evicted: dumped in the 4-field row
    dumped = donor.dump()
    assert dumped == [[A, 0, [[3, OK, b"\x03" * 3], [4, OK, b"\x04" * 4]], True, 2],
                      [B, 0, [[1, OK, b"b"]], True]]  # fmt: skip
    joiner = ReplyCache.load(wire(dumped))
    assert joiner.dump() == dumped
    assert joiner.evicted == {A: 2} and joiner.is_stale(A, 1) and joiner.is_stale(A, 2)
    assert joiner.size(A) == donor.size(A) == 7
    for cid, rid in ((A, 5), (B, 2), (B, 3), (A, 6)):  # both keep evicting in step
        for r in (donor, joiner):
            r.store(cid, rid, (OK, b"."))
    assert joiner.dump() == donor.dump() and joiner.evicted == {A: 4, B: 1}


def test_lru_client_eviction_also_forgets_the_eviction_watermark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReplyCache, "MAX_CLIENTS", 2)
    monkeypatch.setattr(ReplyCache, "MAX_ENTRIES", 1)
    c = ReplyCache()
    c.store(A, 1, (OK, b"a1"))
    c.store(A, 2, (OK, b"a2"))
    c.store(B, 1, (OK, b"b"))
    c.store(C, 1, (OK, b"c"))  # evicts client A entirely
    assert A not in c.evicted and c.size(A) == 0 and not c.is_stale(A, 1)
