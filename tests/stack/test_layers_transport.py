"""Unit tests of the transport-side layers alone (bottom, nak, pt2pt, stable), driven through
RecordingContext: each test feeds events and asserts the exact events, timers and counters emitted.
Members are ranks in VIEW = [a, b, c]; "a" is rank 0 (coordinator and sequencer).
"""

from __future__ import annotations

import pytest
from cohort.stack import wire
from cohort.stack.events import (
    Blocked,
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Fetch,
    FlushDone,
    Oob,
    Recv,
    Send,
    Stable,
)
from cohort.stack.layers import bottom, gms, nak, pt2pt, stable
from cohort.stack.layers.bottom import Bottom
from cohort.stack.layers.nak import Nak
from cohort.stack.layers.pt2pt import Pt2pt
from cohort.stack.layers.stable import StableLayer
from layerkit import VIEW, fire, make

# --- bottom --------------------------------------------------------------------------------------


def test_bottom_cast_becomes_a_broadcast_packet_that_decodes_back():
    b, ctx = make(Bottom, me="b")
    b.down(Cast(b"payload", [(0,), (0, 7)]))
    [pkt] = ctx.downs
    assert pkt.dest is None and type(pkt.data) is bytes
    assert wire.decode(pkt.data) == [wire.CAST, VIEW.tag, 1, [[0], [0, 7]], b"payload"]

    # the packet, decoded at another member, becomes the Deliver with the same headers
    a, actx = make(Bottom, me="a")
    a.up(Recv("b", wire.decode(pkt.data)))
    assert actx.ups == [Deliver(1, b"payload", [[0], [0, 7]])]


def test_bottom_send_and_control_are_addressed_by_member_address():
    b, ctx = make(Bottom, me="a")
    b.down(Send(2, b"s", [(0, 0)]))
    b.down(Control(1, b"", [None]))
    b.down(Control(None, b"", [(5,)]))
    b.down(Oob("z", ["join"]))
    b.down(FlushDone((1, "a")))  # no layer below consumed it: it ends here
    d = ctx.downs
    assert [p.dest for p in d] == ["c", "b", None, "z"]
    assert wire.decode(d[0].data) == [wire.SEND, VIEW.tag, 0, [[0, 0]], b"s"]
    assert wire.decode(d[1].data) == [wire.CONTROL, VIEW.tag, 0, [None], b""]
    assert wire.decode(d[3].data) == [wire.OOB, "a", ["join"]]
    assert ctx.ups == []


def test_bottom_turns_packet_kinds_into_events():
    b, ctx = make(Bottom, me="a")
    b.up(Recv("b", [wire.CAST, VIEW.tag, 1, [[0, 0]], b"x"]))
    b.up(Recv("c", [wire.SEND, VIEW.tag, 2, [[0, 0]], b"y"]))
    b.up(Recv(None, [wire.CONTROL, VIEW.tag, 2, [None], b"z"]))  # unknown source: trusted rank
    b.up(Recv("q", [wire.OOB, "q", ["join"]]))
    assert ctx.ups == [
        Deliver(1, b"x", [[0, 0]]),
        DeliverSend(2, b"y", [[0, 0]]),
        ControlIn(2, b"z", [None]),
        Oob("q", ["join"]),
    ]
    assert not ctx.counters


def test_bottom_drops_forged_sources_and_bad_ranks():
    b, ctx = make(Bottom, me="a")
    b.up(Recv("c", [wire.CAST, VIEW.tag, 1, [], b"claims to be b"]))
    b.up(Recv("q", [wire.OOB, "b", ["join"]]))
    assert ctx.counters["bottom.forged_src"] == 2
    b.up(Recv("a", [wire.CAST, VIEW.tag, 0, [], b"my own rank"]))
    b.up(Recv(None, [wire.CAST, VIEW.tag, 3, [], b"no such rank"]))
    b.up(Recv(None, [wire.CAST, VIEW.tag, -1, [], b"negative"]))
    assert ctx.counters["bottom.bad_rank"] == 3
    assert ctx.ups == [] and ctx.downs == []


# --- nak -----------------------------------------------------------------------------------------


def test_nak_own_cast_is_delivered_locally_at_once_and_sent_with_its_seq():
    n, ctx = make(Nak)
    n.down(Cast(b"m0", [("upper",)]))
    n.down(Cast(b"m1", []))
    assert ctx.ups == [Deliver(0, b"m0", [("upper",)]), Deliver(0, b"m1", [])]
    assert ctx.downs == [
        Cast(b"m0", [("upper",), (nak.DATA, 0)]),
        Cast(b"m1", [(nak.DATA, 1)]),
    ]
    assert ctx.timers == []


def test_nak_in_order_deliveries_pass_up_without_its_header():
    n, ctx = make(Nak)
    n.up(Deliver(1, b"x0", [("upper",), (nak.DATA, 0)]))
    n.up(Deliver(1, b"x1", [(nak.DATA, 1)]))
    n.up(Deliver(2, b"y0", [(nak.DATA, 0)]))
    assert ctx.ups == [
        Deliver(1, b"x0", [("upper",)]),
        Deliver(1, b"x1", []),
        Deliver(2, b"y0", []),
    ]
    assert ctx.downs == [] and ctx.timers == []


def test_nak_gap_is_nakked_to_the_origin_and_filled_by_a_retransmission():
    n, ctx = make(Nak)
    n.up(Deliver(1, b"m0", [(nak.DATA, 0)]))
    n.up(Deliver(1, b"m2", [("u2",), (nak.DATA, 2)]))
    ups, downs = ctx.take()
    assert ups == [Deliver(1, b"m0", [])] and downs == []
    assert ctx.timers == [(0.0, "gap")]  # a new hole is asked for once this tick is handled

    fire(n, ctx, "gap")
    ups, downs = ctx.take()
    [nak_ctl] = downs
    assert ups == [] and nak_ctl.dest == 1 and nak_ctl.payload == b""
    [(kind, origin, lo, _hi)] = nak_ctl.hdrs
    assert (kind, origin, lo) == (nak.NAK, 1, 1)
    assert ctx.counters["nak.nak_sent"] == 1
    assert ctx.timers == [(pytest.approx(0.02), "xmit")]  # still missing: asks again later

    n.up(ControlIn(2, b"m1", [("u1",), (nak.RETRANS, 1, 1)]))  # any holder may retransmit
    ups, downs = ctx.take()
    assert ups == [Deliver(1, b"m1", [("u1",)]), Deliver(1, b"m2", [("u2",)])]

    fire(n, ctx, "xmit")  # nothing is missing any more: no NAK, no new timer
    assert ctx.take() == ([], []) and ctx.timers == []


def test_nak_asks_only_for_the_hole_not_for_what_it_already_holds():
    n, ctx = make(Nak)
    n.up(Deliver(1, b"m0", [(nak.DATA, 0)]))
    n.up(Deliver(1, b"m2", [(nak.DATA, 2)]))
    n.up(Deliver(1, b"m3", [(nak.DATA, 3)]))
    fire(n, ctx, "gap")
    assert ctx.downs == [Control(1, b"", [(nak.NAK, 1, 1, 1)])]


def test_nak_asks_the_origin_first_then_everyone():
    """A hole is asked for at once, then every retransmission timeout (xmit_interval until a
    repair time is measured), alternately from everyone and from the origin."""
    n, ctx = make(Nak)
    n.down(Fetch((0, 0, 1)))  # c has cast one message we never saw
    fire(n, ctx, "gap")
    fire(n, ctx, "xmit")
    fire(n, ctx, "xmit")
    assert ctx.downs == [
        Control(2, b"", [(nak.NAK, 2, 0, 0)]),
        Control(None, b"", [(nak.NAK, 2, 0, 0)]),
        Control(2, b"", [(nak.NAK, 2, 0, 0)]),
    ]


def test_nak_duplicates_are_counted_and_dropped():
    n, ctx = make(Nak)
    n.up(Deliver(1, b"m0", [(nak.DATA, 0)]))
    n.up(Deliver(1, b"m0", [(nak.DATA, 0)]))
    n.up(ControlIn(2, b"m0", [(nak.RETRANS, 1, 0)]))
    assert ctx.ups == [Deliver(1, b"m0", [])]
    assert ctx.counters["nak.duplicate"] == 2


def test_nak_answers_a_nak_with_retransmissions_carrying_the_stored_headers():
    n, ctx = make(Nak)
    n.down(Cast(b"a0", [("s", 1)]))
    n.down(Cast(b"a1", []))
    n.up(Deliver(1, b"b0", [("t",), (nak.DATA, 0)]))
    ctx.take()
    n.up(ControlIn(2, b"", [(nak.NAK, 0, 0, 5)]))  # asks for more than we hold
    n.up(ControlIn(2, b"", [(nak.NAK, 1, 0, 0)]))  # not the origin: we hold it, so we answer
    assert ctx.downs == [
        Control(2, b"a0", [("s", 1), (nak.RETRANS, 0, 0)]),
        Control(2, b"a1", [(nak.RETRANS, 0, 1)]),
        Control(2, b"b0", [("t",), (nak.RETRANS, 1, 0)]),
    ]
    assert ctx.counters["nak.retransmitted"] == 3
    assert ctx.ups == []


def test_nak_stable_garbage_collects_and_higher_maxs_trigger_naks_for_the_tail():
    n, ctx = make(Nak)
    n.down(Cast(b"a0", []))
    n.down(Cast(b"a1", []))
    ctx.take()
    n.down(Stable((1, 0, 0), (2, 3, 0)))  # a0 is everywhere; b has cast 3 we never saw
    assert ctx.take() == ([], [])  # consumed
    assert ctx.timers == [(0.0, "gap")]

    n.up(ControlIn(1, b"", [(nak.NAK, 0, 0, 1)]))
    assert ctx.downs == [Control(1, b"a1", [(nak.RETRANS, 0, 1)])]  # a0 is gone
    ctx.take()

    fire(n, ctx, "gap")
    assert ctx.downs == [Control(1, b"", [(nak.NAK, 1, 0, 2)])]


def test_nak_fetch_raises_the_target_like_stability_gossip():
    n, ctx = make(Nak)
    n.down(Fetch((0, 0, 2)))
    assert ctx.downs == [] and ctx.timers == [(0.0, "gap")]
    fire(n, ctx, "gap")
    assert ctx.downs == [Control(2, b"", [(nak.NAK, 2, 0, 1)])]


def test_nak_controls_of_upper_layers_get_a_none_header_both_ways():
    n, ctx = make(Nak)
    n.down(Control(1, b"c", [("gossip",)]))
    n.up(ControlIn(1, b"c", [("gossip",), None]))
    assert ctx.downs == [Control(1, b"c", [("gossip",), None])]
    assert ctx.ups == [ControlIn(1, b"c", [("gossip",)])]


@pytest.mark.parametrize(
    "ev",
    [
        Deliver(1, b"x", [("junk",)]),
        Deliver(1, b"x", [(nak.DATA, "zero")]),
        Deliver(1, b"x", [None]),
        ControlIn(1, b"", [(9, 0)]),
        ControlIn(1, b"", [(nak.RETRANS, 7, 0)]),  # origin out of range
        ControlIn(1, b"", [(nak.RETRANS, 0, 0)]),  # "retransmits" our own cast to us
        ControlIn(1, b"", [(nak.NAK, 9, 0, 0)]),
        ControlIn(1, b"", [(nak.NAK, 0, 0, 10_000)]),  # beyond max_nak_span
    ],
)
def test_nak_malformed_header_is_counted_not_raised(ev):
    n, ctx = make(Nak)
    n.down(Cast(b"a0", []))
    ctx.take()
    n.up(ev)
    assert ctx.counters["nak.bad_header"] == 1
    assert ctx.take() == ([], [])


def test_nak_never_asks_for_more_than_max_nak_span_messages():
    n, ctx = make(Nak, max_nak_span=2)
    n.up(Deliver(1, b"m9", [(nak.DATA, 9)]))
    fire(n, ctx, "gap")
    [(kind, origin, lo, hi)] = ctx.downs[0].hdrs
    assert (kind, origin, lo) == (nak.NAK, 1, 0)
    assert hi - lo + 1 <= 2


# --- pt2pt ---------------------------------------------------------------------------------------


def test_pt2pt_send_gets_a_per_destination_seq_and_arms_the_retry_timer():
    p, ctx = make(Pt2pt)
    p.down(Send(1, b"x", [("u",)]))
    p.down(Send(1, b"y", []))
    p.down(Send(2, b"z", []))
    assert ctx.downs == [
        Send(1, b"x", [("u",), (pt2pt.DATA, 0)]),
        Send(1, b"y", [(pt2pt.DATA, 1)]),
        Send(2, b"z", [(pt2pt.DATA, 0)]),
    ]
    assert ctx.timers == [(0.05, "retry")]


def test_pt2pt_retransmits_on_timer_until_acked():
    p, ctx = make(Pt2pt)
    p.down(Send(1, b"x", [("u",)]))
    p.down(Send(1, b"y", []))
    ctx.take()

    fire(p, ctx, "retry")
    assert ctx.take()[1] == [
        Send(1, b"x", [("u",), (pt2pt.DATA, 0)]),
        Send(1, b"y", [(pt2pt.DATA, 1)]),
    ]
    assert ctx.counters["pt2pt.retransmitted"] == 2

    p.up(ControlIn(1, b"", [(pt2pt.ACK, 1)]))  # cumulative: has seq 0
    fire(p, ctx, "retry")
    assert ctx.take() == ([], [Send(1, b"y", [(pt2pt.DATA, 1)])])

    p.up(ControlIn(1, b"", [(pt2pt.ACK, 2)]))
    fire(p, ctx, "retry")
    assert ctx.take() == ([], []) and ctx.timers == []  # nothing pending: timer not re-armed


def test_pt2pt_receiver_delivers_in_order_buffers_gaps_and_acks_cumulatively():
    p, ctx = make(Pt2pt)
    p.up(DeliverSend(1, b"m0", [("h",), (pt2pt.DATA, 0)]))
    assert ctx.take() == (
        [DeliverSend(1, b"m0", [("h",)])],
        [Control(1, b"", [(pt2pt.ACK, 1)])],
    )
    p.up(DeliverSend(1, b"m2", [("h2",), (pt2pt.DATA, 2)]))
    assert ctx.take() == ([], [Control(1, b"", [(pt2pt.ACK, 1)])])
    p.up(DeliverSend(1, b"m1", [(pt2pt.DATA, 1)]))
    assert ctx.take() == (
        [DeliverSend(1, b"m1", []), DeliverSend(1, b"m2", [("h2",)])],
        [Control(1, b"", [(pt2pt.ACK, 3)])],
    )
    p.up(DeliverSend(1, b"m0", [(pt2pt.DATA, 0)]))  # duplicate: re-acked, not delivered
    assert ctx.take() == ([], [Control(1, b"", [(pt2pt.ACK, 3)])])
    assert ctx.counters["pt2pt.duplicate"] == 1


def test_pt2pt_send_to_self_is_delivered_at_once_and_never_retransmitted():
    p, ctx = make(Pt2pt)
    p.down(Send(0, b"me", [("h",)]))
    assert ctx.take() == ([DeliverSend(0, b"me", [("h",)])], [])
    assert ctx.timers == []


def test_pt2pt_passes_foreign_controls_and_counts_bad_headers():
    p, ctx = make(Pt2pt)
    p.down(Control(None, b"c", [("up",)]))
    p.up(ControlIn(2, b"c", [("up",), None]))
    p.up(DeliverSend(2, b"bad", [("junk", 0)]))
    p.up(ControlIn(2, b"", [(pt2pt.ACK, "x")]))
    assert ctx.downs == [Control(None, b"c", [("up",), None])]
    assert ctx.ups == [ControlIn(2, b"c", [("up",)])]
    assert ctx.counters["pt2pt.bad_header"] == 2


# --- stable --------------------------------------------------------------------------------------


def test_stable_counts_deliveries_and_gossips_them_at_the_end_of_the_tick():
    s, ctx = make(StableLayer)
    for origin in (0, 0, 1):
        s.up(Deliver(origin, b"m", []))
    assert ctx.ups == [Deliver(0, b"m", []), Deliver(0, b"m", []), Deliver(1, b"m", [])]
    assert ctx.timers == [(0.0, "prompt")]  # one timer for the batch (fires after the tick)
    ctx.take()

    fire(s, ctx, "prompt")
    ups, downs = ctx.take()
    assert downs == [
        Stable((0, 0, 0), (2, 1, 0)),  # maxs now include our own counts
        Control(None, b"", [(stable.GOSSIP, [2, 1, 0], False)]),  # a prompt gossip does not ask
    ]
    assert ups == [Stable((0, 0, 0), (2, 1, 0))]
    assert ctx.timers == [(pytest.approx(0.05), "gossip")]  # unstable: gossip again


def test_stable_gossip_from_the_others_yields_mins_and_maxs_up_and_down():
    s, ctx = make(StableLayer)
    for origin in (0, 0, 1):
        s.up(Deliver(origin, b"m", []))
    s.up(ControlIn(1, b"", [(stable.GOSSIP, [2, 1, 0])]))
    ctx.take()
    s.up(ControlIn(2, b"", [(stable.GOSSIP, [1, 1, 3])]))
    assert ctx.take() == ([Stable((1, 1, 0), (2, 1, 3))], [Stable((1, 1, 0), (2, 1, 3))])
    s.up(ControlIn(2, b"", [(stable.GOSSIP, [1, 1, 3])]))  # no change: nothing emitted
    assert ctx.take() == ([], [])


def test_stable_answers_a_member_that_asks_and_answers_never_ask():
    """A settled member stops gossiping; if its last gossip was lost, the unsettled member's
    periodic gossip asks, and the answer (which never asks back) brings it up to date."""
    s, ctx = make(StableLayer)
    s.up(Deliver(1, b"m", []))
    fire(s, ctx, "prompt")
    s.up(ControlIn(1, b"", [(stable.GOSSIP, [0, 1, 0])]))  # an old peer: no ask field
    s.up(ControlIn(2, b"", [(stable.GOSSIP, [0, 1, 0], False)]))
    assert s.mins == (0, 1, 0) and ctx.timers[-1] == (pytest.approx(0.05), "gossip")
    ctx.take()
    fire(s, ctx, "gossip")  # settled: the periodic gossip goes out once more, without asking
    assert ctx.downs[-1] == Control(None, b"", [(stable.GOSSIP, [0, 1, 0], False)])
    ctx.take()
    s.up(ControlIn(2, b"", [(stable.GOSSIP, [0, 1, 0], True)]))  # m2 missed it: it asks
    assert ctx.timers == [(pytest.approx(0.05), "prompt")]  # answered after this loop tick
    fire(s, ctx, "prompt")
    assert ctx.downs[-1] == Control(None, b"", [(stable.GOSSIP, [0, 1, 0], False)])
    ctx.take()
    s.up(ControlIn(2, b"", [(stable.GOSSIP, [0, 1, 0], False)]))  # an answer is not answered
    assert ctx.timers == [] and ctx.take() == ([], [])


def test_stable_counts_are_frozen_once_blocked():
    s, ctx = make(StableLayer)
    s.up(Deliver(1, b"m", []))
    s.down(Blocked())
    assert ctx.downs == []  # consumed here
    s.up(Deliver(1, b"late", []))
    s.up(Deliver(1, b"later", []))
    assert ctx.ups[-1] == Deliver(1, b"later", [])  # still delivered, not counted as stable
    ctx.take()

    fire(s, ctx, "prompt")
    assert ctx.downs[-1] == Control(None, b"", [(stable.GOSSIP, [0, 1, 0], False)])
    ctx.take()
    s.up(ControlIn(1, b"", [(stable.GOSSIP, [0, 3, 0])]))
    s.up(ControlIn(2, b"", [(stable.GOSSIP, [0, 3, 0])]))
    assert ctx.ups[-1] == Stable((0, 1, 0), (0, 3, 0))


def test_stable_controls_and_bad_gossip():
    s, ctx = make(StableLayer)
    s.down(Control(1, b"c", [("up",)]))
    s.up(ControlIn(1, b"c", [("up",), None]))
    assert ctx.take() == ([ControlIn(1, b"c", [("up",)])], [Control(1, b"c", [("up",), None])])
    s.up(ControlIn(1, b"", [(stable.GOSSIP, [1, 2])]))  # wrong length
    s.up(ControlIn(1, b"", [(stable.GOSSIP, [1, "2", 3])]))  # not ints
    s.up(ControlIn(1, b"", [(7, [1, 2, 3])]))  # unknown kind
    assert ctx.counters["stable.bad_header"] == 3
    assert ctx.take() == ([], [])


# --- module-level helpers ------------------------------------------------------------------------


def test_header_formatters_name_each_kind():
    assert nak.fmt_header((nak.NAK, 1, 2, 3)) == "NAK(1, 2, 3)"
    assert nak.fmt_header(None) == "-"
    assert pt2pt.fmt_header((pt2pt.ACK, 4)) == "ACK(4,)"
    assert gms.fmt_header((gms.DONE, 1, "a")) == "DONE(1, 'a')"
    assert bottom.Bottom.provides == frozenset({"net"})


def test_stable_freezes_once_even_when_a_second_ballot_blocks_again():
    """Regression (cohort sim, 5 members, seed 951099, V5): a second coordinator's START made
    stable re-freeze with counts beyond the first flush report, and the deposed coordinator
    reported Safe a message the survivors' cut did not hold."""
    s, ctx = make(StableLayer, me="b")
    s.up(Deliver(0, b"m", []))
    s.down(Blocked())
    s.up(Deliver(0, b"late", []))  # held by flush beyond the reported count
    s.down(Blocked())  # a second ballot
    fire(s, ctx, "prompt")
    gossip = [d for d in ctx.downs if isinstance(d, Control)][-1]
    assert gossip.hdrs == [(stable.GOSSIP, [1, 0, 0], False)]
