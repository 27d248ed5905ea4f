"""Engine: state transfer (push at the cut, pull after an interruption, windows, large states)."""

from __future__ import annotations

import msgpack
from cohort.orb import errors as st
from cohort.replication import engine as eng
from cohort.replication.transfer import CHUNK_SIZE, WINDOW
from cohort.samples.counter import Counter
from cohort.stack.view import View
from enginekit import (
    KIND,
    Blob,
    Group,
    Tracked,
    _kind,
    admit,
    submit,
)

# --- state transfer --------------------------------------------------------------------------------


def test_joiner_receives_the_snapshot_and_buffers_deliveries_meanwhile() -> None:
    g = Group().form(Tracked)
    for i in range(1, 6):
        submit(g["a"], "add", i, rid=i, done=i - 1)
    g.settle()
    v2 = admit(g, "d", Tracked)
    d = g["d"]
    assert not d.ready and d.obj is None
    # a pushes the snapshot at once; d also asks the oldest member, which knows it is served
    assert [(s, t, k) for s, t, k in g.sent] == [
        ("c", "d", "HDR"),
        ("c", "d", "CHUNK"),
        ("c", "d", "END"),
    ]
    # updates go on while the snapshot travels; d buffers them
    r = submit(g["b"], "add", 100, rid=6, done=5)
    submit(g["d"], "add", 1000, rid=1, cid=b"joiner-client")  # a client of the joiner
    g.deliver()
    assert not d.ready and len(d.buffer) == 2
    g.pump()
    assert d.ready
    assert ("d", "c", "ACK") in g.sent
    assert d.obj.value == 1115 == g["a"].obj.value
    assert len(g.digests()) == 1
    assert d.views == [v2.vid]
    assert d.xfer_log and d.xfer_log[0]["donor"] == "c"
    # cut once the joiner's STATUS (its class) is delivered: after the 4 statuses of the view
    assert tuple(d.xfer_log[0]["vid"]) == v2.vid and d.xfer_log[0]["pos"] == 4
    assert d.obj.seen and d.obj.seen[-1][0] == v2.vid
    g.safe()
    assert r.value == 1115 - 1000
    # the joiner has the reply cache too: a retry there is answered without a cast
    casts = len(g.casts)
    retry = submit(d, "add", 100, rid=6, done=5)
    assert retry.value == 115 and len(g.casts) == casts
    assert submit(d, "add", 5, rid=5, done=4).status == st.STALE  # pruned by rid 6's watermark
    assert not g["c"].sessions  # the donor forgot the finished transfer
    assert sum(k == "HDR" for _, _, k in g.sent) == 1  # the status round did not start another


def test_joiner_waits_for_the_donor_push_and_only_the_oldest_member_donates() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    senders = {s for s, _, k in g.sent if k in ("HDR", "CHUNK")}
    assert senders == {"c"}
    g.pump()
    assert g["d"].ready and len(g.digests()) == 1
    assert sum(k == "HDR" for _, _, k in g.sent) == 1  # d's request did not start another


def test_two_joiners_at_once_share_one_snapshot() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)  # ~200 kB: several chunks
    g.settle()
    for n in "de":
        g.add(n, Blob)
    g.install(("a", "b", "c", "d", "e"))
    a = g["c"]  # the youngest member of the previous view donates
    assert len(a.sessions) == 1
    (session,) = a.sessions.values()
    assert set(session.recipients) == {"d", "e"}
    while g.pump():
        pass
    assert g["d"].ready and g["e"].ready and len(g.digests()) == 1
    assert not a.sessions
    assert {x["donor"] for n in "de" for x in g[n].xfer_log} == {"c"}


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


def test_a_transfer_interrupted_by_a_view_change_resumes_where_it_was() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)  # ~200 kB: several chunks
    g.settle()
    v2 = admit(g, "d", Blob)
    assert sum(k == "CHUNK" for _, _, k in g.sent) > 2
    g.pump(limit=3)  # HDR and two chunks arrive, then the view changes (same members)
    d = g["d"]
    assert d.incoming is not None and not d.ready
    received = d.incoming.reader.received
    g.install(g.members())  # what was in flight is gone; the session resumes from the acks
    assert d.incoming is not None and d.incoming.reader.received == received
    g.pump()
    assert d.ready
    assert len(g.digests()) == 1
    assert len(d.xfer_log) == 1 and tuple(d.xfer_log[0]["vid"]) == v2.vid  # the first cut
    assert sum(k == "HDR" for s, _, k in g.sent if s == "c") == 2  # resent, not rebuilt


def test_transfer_restarts_from_another_member_when_the_donor_crashes() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 2, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.install(("a", "b", "d"))  # donor c crashed before any chunk arrived
    assert ("b", "d", "HDR") in g.sent  # b: the youngest ready member of the status round
    g.pump()
    d = g["d"]
    assert d.ready and d.xfer_log[0]["donor"] == "b"
    assert d.obj.value == 2 and len(g.digests()) == 1


def test_a_lost_push_resumes_in_the_next_view_and_a_non_ready_first_rank_serves_nothing():
    g = Group().form(Counter)
    submit(g["a"], "add", 2, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.sends.clear()  # d's push is lost
    g.install(("d", "b", "a", "c"))  # d happens to rank first
    assert not any(s == "d" for s, _, k in g.sent if k == "HDR")
    assert sum(k == "HDR" for s, _, k in g.sent if s == "c") == 2  # a resumed its session
    g.pump()
    assert g["d"].ready and g["d"].xfer_log[0]["donor"] == "c" and len(g.digests()) == 1


def test_a_bad_snapshot_is_asked_for_again_and_the_custodial_state_is_untouched() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 3, rid=1)
    g.settle()
    admit(g, "d", Counter)
    d = g["d"]
    src, dst, payload = g.sends[-1]  # the END: corrupt its digest
    end = msgpack.unpackb(payload)
    end[4] = b"\0" * 16
    g.sends[-1] = (src, dst, msgpack.packb(end))
    g.pump()
    assert ("d", "c", "REQ") in g.sent  # asked again, to the same donor
    assert d.ready and d.obj.value == 3 and len(g.digests()) == 1


def test_a_resumed_session_and_a_new_one_both_complete() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 2, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.sends.clear()  # d's push is lost: d is not ready in the next view either
    admit(g, "e", Counter)
    assert ("c", "d", "HDR") in g.sent and ("c", "e", "HDR") in g.sent
    assert len(g["c"].sessions) == 2  # d's, resumed, and e's
    while g.pump():
        pass
    assert g["d"].ready and g["e"].ready and len(g.digests()) == 1


def test_snapshot_cut_ahead_of_the_joiner_waits_for_its_deliveries() -> None:
    """The donor cuts when it resolves the status round (after the 3 statuses); the joiner
    installs the snapshot only once it delivered up to the cut, then applies just what
    follows."""
    g = Group().form(Counter)
    submit(g["b"], "add", 1, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.sends.clear()  # the push is lost, and its donor c crashes
    g.install(("a", "b", "d"), statuses=False)
    d = g["d"]
    submit(g["b"], "add", 10, rid=2, done=1)  # position 3, after the statuses
    g.deliver("a", "b")  # b resolves the round at position 3 and cuts there
    g.pump("d")  # HDR, chunks, END: complete, but d delivered nothing yet
    assert not d.ready and d.complete is not None and d.complete[2] == 3
    g.deliver("d", upto=2)
    assert not d.ready
    g.deliver("d", upto=3)  # reaches the cut: install
    assert d.ready and d.obj.value == 1
    g.deliver()
    g.safe()
    assert d.obj.value == 11
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


def test_member_that_missed_views_keeps_its_state_until_it_gets_a_fresh_one() -> None:
    g = Group().form(Counter)
    q = submit(g["c"], "get", rid=1, cid=b"cq")
    g.deliver()  # c ran its query; the reply waits for Safe
    assert not q.called
    g.install(("a", "b"))  # c is cut off and does not see this view
    submit(g["a"], "add", 7, rid=1)
    g.settle()
    g.install(("a", "b", "c"))  # c comes back: the view's prev is not c's last view
    c = g["c"]
    assert not c.ready and c.obj is not None and c.obj.value == 0  # custody: kept, not served
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
    donor_chunks = lambda: sum(1 for s, t, k in g.sent if (s, t, k) == ("c", "d", "CHUNK"))  # noqa: E731
    assert donor_chunks() == WINDOW  # the initial burst is exactly one window
    acks_to_donor = 0
    most_in_flight = 0
    while g.sends:
        src, dst, payload = g.sends[0]
        if _kind(payload) == "ACK" and dst == "c":
            acks_to_donor += 1
        g.pump(limit=1)
        in_flight = donor_chunks() - acks_to_donor
        assert in_flight <= WINDOW
        most_in_flight = max(most_in_flight, in_flight)
    d = g["d"]
    assert d.ready
    total = donor_chunks()
    assert total >= 2_000_000 // CHUNK_SIZE > 4 * WINDOW
    assert acks_to_donor == total + 1  # every chunk, and the END
    assert most_in_flight == WINDOW
    assert d.xfer_log[0]["bytes"] > 2_000_000
    assert len(g.digests()) == 1
    assert not g["c"].sessions


def test_donor_ignores_acks_of_another_transfer() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)
    g.settle()
    admit(g, "d", Blob)
    a = g["c"]  # the donor
    ((xid, session),) = a.sessions.items()
    a.on_send("d", msgpack.packb([eng.ACK, xid + 1, 5]))
    assert session.recipients["d"].acked == 0  # unchanged
    a.on_send("x", msgpack.packb([eng.ACK, xid, 0]))  # from a non-joiner
    assert session.recipients["d"].acked == 0
    g.pump()
    assert g["d"].ready and len(g.digests()) == 1


def test_a_chunk_of_another_transfer_is_ignored() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)
    g.settle()
    admit(g, "d", Blob)
    g.pump("d", limit=1)  # the HDR
    d = g["d"]
    xid = d.incoming.xid
    d.on_send("a", msgpack.packb([eng.CHUNK, xid + 1, 0, b"junk"]))
    assert not d.ready and d.incoming is not None and d.incoming.reader.received == 0
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
    while ticks:
        ticks.pop(0)()  # the end of a's tick: the snapshot is cut, then the batch is cast
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
    assert any("sending state to ['d']" in m for m in lines)
    steps = [m for m in lines if "state transfer from c:" in m]
    assert steps and "bytes so far" in steps[0]
    assert any("state received from c" in m for m in lines)
