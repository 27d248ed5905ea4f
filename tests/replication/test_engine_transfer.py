"""Engine: state transfer (push at the cut, pull after an interruption, windows, large states)."""

from __future__ import annotations

import msgpack
from enginekit import (
    KIND,
    Blob,
    Group,
    Tracked,
    _kind,
    admit,
    submit,
)

from orb import errors as st
from replication import engine as eng
from samples.counter import Counter
from stack.view import View

# --- state transfer --------------------------------------------------------------------------------


def test_joiner_receives_the_snapshot_and_buffers_deliveries_meanwhile() -> None:
    g = Group().form(Tracked)
    for i in range(1, 6):
        submit(g["a"], "add", i, rid=i, done=i - 1)
    g.settle()
    v2 = admit(g, "d", Tracked)
    d = g["d"]
    assert not d.ready and d.obj is None
    assert [(s, t, k) for s, t, k in g.sent] == [("a", "d", "HDR"), ("a", "d", "CHUNK")]
    # updates go on while the snapshot travels; d buffers them
    r = submit(g["b"], "add", 100, rid=6, done=5)
    submit(g["d"], "add", 1000, rid=1, cid=b"joiner-client")  # a client of the joiner
    g.deliver()
    assert not d.ready and len(d.buffer) == 2
    g.pump()
    assert d.ready
    assert ("d", "a", "ACK") in g.sent
    assert d.obj.value == 1115 == g["a"].obj.value
    assert len(g.digests()) == 1
    assert d.views == [v2.vid]
    assert d.xfer_log and d.xfer_log[0]["donor"] == "a"
    assert tuple(d.xfer_log[0]["vid"]) == v2.vid and d.xfer_log[0]["pos"] == 0
    assert d.obj.seen and d.obj.seen[-1][0] == v2.vid
    g.safe()
    assert r.value == 1115 - 1000
    # the joiner has the reply cache too: a retry there is answered without a cast
    casts = len(g.casts)
    retry = submit(d, "add", 100, rid=6, done=5)
    assert retry.value == 115 and len(g.casts) == casts
    assert submit(d, "add", 5, rid=5, done=4).status == st.STALE  # pruned by rid 6's watermark
    assert not g["a"].outgoing  # the donor forgot the finished transfer


def test_joiner_waits_for_the_donor_push_and_only_the_oldest_member_donates() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    senders = {s for s, _, k in g.sent if k in ("HDR", "CHUNK")}
    assert senders == {"a"}
    assert not any(k == "REQ" for _, _, k in g.sent)  # first view of a joiner: no request
    g.pump()
    assert g["d"].ready and len(g.digests()) == 1


def test_joiner_client_waiter_before_the_cut_is_answered_after_install() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    r = submit(g["d"], "add", 9, rid=1)  # cast by a replica that is not ready yet
    g.deliver()
    g.pump()
    assert g["d"].ready
    assert not r.called
    g.safe("d")
    assert r.value == 9
    assert {g[m].obj.value for m in "abcd"} == {9}


def test_state_with_get_state_set_state_transfers() -> None:
    g = Group().form(Tracked, "abc", 3)
    submit(g["c"], "add", 4, rid=1)
    g.settle()
    admit(g, "d", Tracked, 3)
    g.pump()
    d = g["d"]
    assert d.ready and d.obj.value == 7
    assert d.obj.calls == 0  # set_state only: the joiner did not re-run the update
    assert len(g.digests()) == 1


def test_interrupted_transfer_is_requested_again_and_completes() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)  # ~200 kB: several chunks
    g.settle()
    admit(g, "d", Blob)
    assert sum(k == "CHUNK" for _, _, k in g.sent) > 2
    g.pump(limit=3)  # HDR and two chunks arrive, then the view changes
    d = g["d"]
    assert d.incoming is not None and not d.ready
    v3 = g.install(g.members())  # drops the rest of the transfer
    assert ("d", "a", "REQ") in g.sent  # asks the oldest member of the new view
    assert d.incoming is None
    g.pump()
    assert d.ready
    assert len(g.digests()) == 1
    assert len(d.xfer_log) == 1 and tuple(d.xfer_log[0]["vid"]) == v3.vid


def test_transfer_restarts_from_another_member_when_the_donor_crashes() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 2, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.install(("b", "c", "d"))  # donor a crashed before any chunk arrived
    assert ("d", "b", "REQ") in g.sent
    g.pump()
    d = g["d"]
    assert d.ready and d.xfer_log[0]["donor"] == "b"
    assert d.obj.value == 2 and len(g.digests()) == 1


def test_request_in_a_view_not_reached_yet_gets_notready_and_the_joiner_asks_the_next() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    g.install(g.members())
    g.sends.clear()  # forget d's REQ to a; replay one with a wrong view id
    a, d = g["a"], g["d"]
    a.on_send("d", msgpack.packb([eng.REQ, [99, "zz"]]))
    assert g.sent[-1] == ("a", "d", "NOTREADY")
    g.pump()  # NOTREADY reaches d, which asks b
    assert ("d", "b", "REQ") in g.sent
    g.pump()
    assert d.ready and len(g.digests()) == 1
    assert d.xfer_log[0]["donor"] == "b"


def test_snapshot_cut_ahead_of_the_joiner_waits_for_its_deliveries() -> None:
    """Re-requested transfer: the donor already delivered two casts of the new view when the
    request reaches it, so the cut is at pos 2. The joiner installs the snapshot only once it
    delivered up to the cut, then applies just what follows; its own query before the cut gets
    RETRY (nobody answers it)."""
    g = Group().form(Counter)
    submit(g["b"], "add", 1, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.install(g.members())  # interrupted before anything arrived: d asks a
    d = g["d"]
    submit(g["b"], "add", 10, rid=2, done=1)
    q = submit(d, "get", rid=1, cid=b"dq")
    g.deliver("a", "b", "c")  # a is at pos 2 when the request arrives
    g.pump("a")  # the REQ: cut at pos 2
    g.pump("d")  # HDR and chunks: complete, but d delivered nothing yet
    assert not d.ready and d.complete is not None
    submit(g["c"], "add", 100, rid=3, done=2)
    g.deliver("d", upto=1)
    assert not d.ready
    g.deliver("d", upto=2)  # reaches the cut: install
    assert d.ready and d.obj.value == 11
    assert q.calls == [(st.RETRY, "d was receiving its state")]
    g.deliver()
    g.safe()
    assert d.obj.value == 111
    assert len(g.digests()) == 1
    assert d.stats["executed"] == 1  # only the update after the cut ran here


def test_joiner_does_not_answer_from_an_unsafe_snapshot_entry() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    g.install(g.members())  # interrupted: d asks a
    at_a = submit(g["a"], "add", 5, rid=1)
    g.deliver()  # a (and d, buffered) deliver the update; nobody heard Safe
    g.pump()  # the cut is at pos 1 and includes the update
    d = g["d"]
    assert d.ready and d.obj.value == 5
    assert not at_a.called  # a holds its reply: the update is not uniform yet
    retry = submit(d, "add", 5, rid=1)
    assert not retry.called  # ... and so must d


def test_member_that_missed_views_drops_its_state_and_gets_a_fresh_one() -> None:
    g = Group().form(Counter)
    q = submit(g["c"], "get", rid=1, cid=b"cq")
    g.deliver()  # c ran its query; the reply waits for Safe
    assert not q.called
    g.install(("a", "b"))  # c is cut off and does not see this view
    submit(g["a"], "add", 7, rid=1)
    g.settle()
    g.install(("a", "b", "c"))  # c comes back: the view's prev is not c's last view
    c = g["c"]
    assert not c.ready and c.obj is None
    assert q.calls == [(st.RETRY, "c is receiving a fresh state")]
    g.pump()
    assert c.ready and c.obj.value == 7
    assert len(g.digests()) == 1
    r = submit(c, "add", 1, rid=2, done=1)
    g.settle()
    assert r.value == 8


def test_large_state_uses_many_chunks_and_the_window_bounds_chunks_in_flight() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "big", 2000, 1024, rid=1)  # 2000 strings of 1 KiB: ~2 MB
    g.settle()
    admit(g, "d", Blob)
    donor_chunks = lambda: sum(1 for s, t, k in g.sent if (s, t, k) == ("a", "d", "CHUNK"))  # noqa: E731
    assert donor_chunks() == eng.WINDOW  # the initial burst is exactly one window
    acks_to_donor = 0
    most_in_flight = 0
    while g.sends:
        src, dst, payload = g.sends[0]
        if _kind(payload) == "ACK" and dst == "a":
            acks_to_donor += 1
        g.pump(limit=1)
        in_flight = donor_chunks() - acks_to_donor
        assert in_flight <= eng.WINDOW
        most_in_flight = max(most_in_flight, in_flight)
    d = g["d"]
    assert d.ready
    total = donor_chunks()
    assert total >= 2_000_000 // eng.CHUNK_SIZE > 4 * eng.WINDOW
    assert acks_to_donor == total
    assert most_in_flight == eng.WINDOW
    assert d.xfer_log[0]["bytes"] > 2_000_000
    assert len(g.digests()) == 1
    assert not g["a"].outgoing


def test_donor_ignores_acks_of_another_transfer() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)
    g.settle()
    admit(g, "d", Blob)
    a = g["a"]
    xid, chunks, nxt, acked = a.outgoing["d"]
    a.on_send("d", msgpack.packb([eng.ACK, xid + 1, 5]))
    assert a.outgoing["d"][3] == 0  # unchanged
    a.on_send("x", msgpack.packb([eng.ACK, xid, 0]))  # from a non-joiner
    assert a.outgoing["d"][3] == 0
    g.pump()
    assert g["d"].ready and len(g.digests()) == 1


def test_stale_chunk_of_an_old_transfer_is_ignored() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)
    g.settle()
    admit(g, "d", Blob)
    old = [p for s, t, p in g.sends if _kind(p) == "CHUNK"]
    g.install(g.members())
    g.pump("a")  # REQ: a new transfer with a new xid
    g.pump("d", limit=1)  # its HDR
    d = g["d"]
    for p in old:  # delayed chunks of the first transfer
        d.on_send("a", p)
    assert not d.ready and d.incoming is not None and d.incoming[5].received == 0
    g.pump()
    assert d.ready and len(g.digests()) == 1


# --- misc ----------------------------------------------------------------------------------------


def test_snapshot_and_digest_do_not_depend_on_local_bookkeeping() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 1, rid=1)
    submit(g["a"], "get", rid=2)
    g.settle()
    before = g["a"].state_digest()
    submit(g["a"], "get", rid=3)  # queries change stats only
    g.settle()
    assert g["a"].state_digest() == before
    assert g["a"].stats["queries"] == 2 and g["b"].stats["queries"] == 0
    assert len(g.digests()) == 1


def test_view_info_repr_and_fields() -> None:
    view = View((4, "b"), ("b", "c"), True)
    info = eng.ViewInfo(view)
    assert info.vid == (4, "b") and info.members == ("b", "c") and info.coordinator == "b"
    assert "primary=True" in repr(info)


# --- batching: the calls of one loop tick leave as one cast --------------------------------------


def test_calls_of_one_tick_leave_as_one_batch_cast_and_share_its_position():
    g = Group()
    ticks: list = []
    for n in "abc":
        g.add(n, Counter)
        g[n]._schedule = ticks.append  # the driver's call_soon
    g.install(("a", "b", "c"))
    KIND[eng.BATCH] = "BATCH"
    rs = [submit(g["b"], "add", 1, rid=i, cid=b"c%d" % i) for i in range(1, 4)]
    q = submit(g["b"], "get", rid=9, cid=b"q")
    assert g.casts == [] and len(ticks) == 1  # nothing cast until the end of the tick
    ticks.pop()()
    assert g.casts == [("b", "BATCH")]
    g.deliver()
    assert all(e.stats["executed"] == 3 for e in g.engines.values())
    assert not any(r.called for r in rs) and not q.called  # held until Safe covers the batch
    g.safe()
    assert sorted(r.value for r in rs) == [1, 2, 3] and q.value == 3
    assert len(g.digests()) == 1


def test_a_batch_buffered_by_a_joiner_is_applied_after_the_cut():
    g = Group()
    ticks: list = []
    for n in "abc":
        g.add(n, Counter)
    g.install(("a", "b", "c"))
    g.add("d", Counter)
    g["a"]._schedule = ticks.append
    g.install(("a", "b", "c", "d"))  # d's first view: a pushes the snapshot (queued)
    KIND[eng.BATCH] = "BATCH"
    rs = [submit(g["a"], "add", 2, rid=i, cid=b"x%d" % i) for i in (1, 2)]
    ticks.pop()()
    g.deliver()  # d buffers the batch: its snapshot has not arrived yet
    assert g["d"].ready is False
    while g.pump():
        pass
    assert g["d"].ready and g["d"].obj.value == 4
    g.safe()
    assert sorted(r.value for r in rs) == [2, 4]
    assert len(g.digests()) == 1


def test_a_large_transfer_logs_its_progress(caplog) -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "big", 3000, 1024, rid=1)  # ~3 MB: more than one progress step
    g.settle()
    with caplog.at_level("INFO", logger="cohort.replica"):
        admit(g, "d", Blob)
        while g.sends:
            g.pump()
    lines = [r.getMessage() for r in caplog.records]
    assert any("sending state to d" in m for m in lines)
    steps = [m for m in lines if "state transfer from a:" in m]
    assert steps and "%)" in steps[0]
    assert any("state received from a" in m for m in lines)
