"""Unit tests for each stack layer in isolation, driven through RecordingContext.

Every test feeds a layer events and asserts the exact events it emits (up and down), the timers it
sets and the counters it bumps. Members are ranks in VIEW = [a, b, c]; "a" is rank 0 (coordinator
and sequencer).
"""

from __future__ import annotations

import math

import pytest

from stack import wire
from stack.events import (
    Block,
    Blocked,
    BlockOk,
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Fetch,
    FlushCut,
    FlushDone,
    FlushReport,
    FlushStart,
    Granted,
    Lease,
    Oob,
    Recv,
    Safe,
    Send,
    Stable,
    Suspect,
    Timer,
)
from stack.events import View as ViewEv
from stack.layer import RecordingContext
from stack.layers import bottom, gms, nak, pt2pt, sequencer, stable, suspect
from stack.layers.bottom import Bottom
from stack.layers.flush import Flush
from stack.layers.gms import Gms, view_from_wire, view_to_wire
from stack.layers.nak import Nak
from stack.layers.pt2pt import Pt2pt
from stack.layers.sequencer import Sequencer
from stack.layers.stable import StableLayer
from stack.layers.suspect import SuspectLayer
from stack.layers.top import Top
from stack.view import View

VIEW = View((1, "a"), ("a", "b", "c"), True, ("a", "b", "c"), (1, "a"))


def make(cls, me: str = "a", view: View = VIEW, now: float = 0.0, **params):
    """A layer of class `cls` for member `me`, with its RecordingContext."""
    ctx = RecordingContext(me, now=now)
    layer = cls(ctx, view, cls.Params(**params))
    return layer, ctx


def fire(layer, ctx: RecordingContext, token) -> None:
    """Fire the earliest pending timer with `token` at its deadline (and forget it)."""
    when = min(t for t, tok in ctx.timers if tok == token)
    ctx.timers.remove((when, token))
    ctx.now = max(ctx.now, when)
    layer.up(Timer(ctx.now, token))


def at(layer, ctx: RecordingContext, now: float, token) -> None:
    """Deliver a timer firing at virtual time `now`."""
    ctx.now = now
    layer.up(Timer(now, token))


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
    assert ctx.timers == [(pytest.approx(0.01), "xmit")]  # half the xmit interval

    fire(n, ctx, "xmit")
    ups, downs = ctx.take()
    [nak_ctl] = downs
    assert ups == [] and nak_ctl.dest == 1 and nak_ctl.payload == b""
    [(kind, origin, lo, _hi)] = nak_ctl.hdrs
    assert (kind, origin, lo) == (nak.NAK, 1, 1)
    assert ctx.counters["nak.nak_sent"] == 1
    assert [tok for _, tok in ctx.timers] == ["xmit"]  # still missing: asks again later

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
    fire(n, ctx, "xmit")
    assert ctx.downs == [Control(1, b"", [(nak.NAK, 1, 1, 1)])]


def test_nak_asks_the_origin_first_then_everyone():
    n, ctx = make(Nak)
    n.down(Fetch((0, 0, 1)))  # c has cast one message we never saw
    fire(n, ctx, "xmit")
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
    assert ctx.timers == [(0.0, "xmit")]

    n.up(ControlIn(1, b"", [(nak.NAK, 0, 0, 1)]))
    assert ctx.downs == [Control(1, b"a1", [(nak.RETRANS, 0, 1)])]  # a0 is gone
    ctx.take()

    fire(n, ctx, "xmit")
    assert ctx.downs == [Control(1, b"", [(nak.NAK, 1, 0, 2)])]


def test_nak_fetch_raises_the_target_like_stability_gossip():
    n, ctx = make(Nak)
    n.down(Fetch((0, 0, 2)))
    assert ctx.downs == [] and ctx.timers == [(0.0, "xmit")]
    fire(n, ctx, "xmit")
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
    fire(n, ctx, "xmit")
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


def test_stable_counts_deliveries_and_gossips_them_after_a_short_delay():
    s, ctx = make(StableLayer)
    for origin in (0, 0, 1):
        s.up(Deliver(origin, b"m", []))
    assert ctx.ups == [Deliver(0, b"m", []), Deliver(0, b"m", []), Deliver(1, b"m", [])]
    assert ctx.timers == [(0.002, "gossip")]  # one timer for the batch
    ctx.take()

    fire(s, ctx, "gossip")
    ups, downs = ctx.take()
    assert downs == [
        Stable((0, 0, 0), (2, 1, 0)),  # maxs now include our own counts
        Control(None, b"", [(stable.GOSSIP, [2, 1, 0])]),
    ]
    assert ups == [Stable((0, 0, 0), (2, 1, 0))]
    assert ctx.timers == [(pytest.approx(0.052), "gossip")]  # unstable: gossip again


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


def test_stable_counts_are_frozen_once_blocked():
    s, ctx = make(StableLayer)
    s.up(Deliver(1, b"m", []))
    s.down(Blocked())
    assert ctx.downs == []  # consumed here
    s.up(Deliver(1, b"late", []))
    s.up(Deliver(1, b"later", []))
    assert ctx.ups[-1] == Deliver(1, b"later", [])  # still delivered, not counted as stable
    ctx.take()

    fire(s, ctx, "gossip")
    assert ctx.downs[-1] == Control(None, b"", [(stable.GOSSIP, [0, 1, 0])])
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


# --- suspect -------------------------------------------------------------------------------------


def test_suspect_pings_at_construction_and_every_interval():
    s, ctx = make(SuspectLayer)
    assert ctx.ups == [Lease(-math.inf)]  # no deliveries before a majority echoes
    assert ctx.downs == [Control(None, b"", [(suspect.PING, 0.0)])]
    assert ctx.timers == [(0.1, "beat")]
    ctx.take()
    fire(s, ctx, "beat")
    assert ctx.take() == ([], [Control(None, b"", [(suspect.PING, 0.1)])])
    assert ctx.timers == [(pytest.approx(0.2), "beat")]


def test_suspect_alone_holds_an_infinite_lease_and_never_pings():
    solo = View((1, "a"), ("a",), True, ("a",), (1, "a"))
    s, ctx = make(SuspectLayer, view=solo)
    assert ctx.ups == [Lease(math.inf)] and ctx.downs == []


def test_suspect_reports_members_silent_for_longer_than_the_timeout():
    s, ctx = make(SuspectLayer)
    ctx.take()
    ctx.now = 0.6
    s.up(ControlIn(1, b"", [(suspect.PING, 0.55)]))  # b is alive, c says nothing
    ctx.take()
    at(s, ctx, 1.0, "beat")
    assert ctx.ups == []  # exactly `timeout` of silence is not yet a suspicion
    at(s, ctx, 1.05, "beat")
    assert ctx.ups == [Suspect(frozenset({2}))]
    ctx.take()
    at(s, ctx, 1.5, "beat")
    assert ctx.ups == []  # no news: not reported again
    at(s, ctx, 1.65, "beat")
    assert ctx.ups == [Suspect(frozenset({1, 2}))]


def test_suspect_echoes_from_a_majority_grant_a_lease():
    five = View((1, "a"), ("a", "b", "c", "d", "e"), True, ("a", "b", "c", "d", "e"), (1, "a"))
    s, ctx = make(SuspectLayer, view=five)  # a majority is us and two others
    ctx.take()
    ctx.now = 0.3
    s.up(ControlIn(1, b"", [(suspect.PONG, 0.2)]))
    assert ctx.ups == []
    s.up(ControlIn(2, b"", [(suspect.PONG, 0.1)]))
    assert ctx.take()[0] == [Lease(pytest.approx(0.6))]
    s.up(ControlIn(3, b"", [(suspect.PONG, 0.25)]))
    assert ctx.take()[0] == [Lease(pytest.approx(0.7))]  # second-newest echo + lease
    s.up(ControlIn(4, b"", [(suspect.PONG, 0.05)]))  # older than what we have: no renewal
    s.up(ControlIn(4, b"", [(suspect.PONG, 5.0)]))  # from our future: ignored
    assert ctx.take() == ([], [])


def test_suspect_stops_echoing_once_blocked_and_reports_granted_leases():
    s, ctx = make(SuspectLayer)
    ctx.take()
    ctx.now = 0.2
    s.up(ControlIn(1, b"", [(suspect.PING, 0.15)]))
    assert ctx.take() == ([], [Control(1, b"", [(suspect.PONG, 0.15)])])

    ctx.now = 0.4
    s.down(Blocked())
    ups, downs = ctx.take()
    assert downs == [Blocked()]
    [granted] = ups
    assert type(granted) is Granted
    assert granted.remaining == pytest.approx((0.0, 0.3, 0.0))

    ctx.now = 0.45
    s.up(ControlIn(2, b"", [(suspect.PING, 0.44)]))
    s.down(Blocked())  # reported once only
    assert ctx.take() == ([], [Blocked()])


def test_suspect_external_suspicions_pass_up_without_ourselves():
    s, ctx = make(SuspectLayer)
    ctx.take()
    s.up(Suspect(frozenset({0, 2})))
    s.up(Suspect(frozenset({2})))
    s.up(Suspect(frozenset({0})))
    assert ctx.ups == [Suspect(frozenset({2}))]


def test_suspect_bad_header_is_counted():
    s, ctx = make(SuspectLayer)
    ctx.take()
    s.up(ControlIn(1, b"", [(suspect.PING, "soon")]))
    s.up(ControlIn(1, b"", [(9, 0.0)]))
    assert ctx.counters["suspect.bad_header"] == 2
    assert ctx.take() == ([], [])


@pytest.mark.parametrize(
    "kw",
    [
        {"timeout": 1.0, "lease": 1.0},
        {"timeout": 1.0, "lease": 2.0},
        {"lease": 0.0},
        {"interval": 1.0, "timeout": 1.0, "lease": 0.5},
        {"interval": 0.0},
    ],
)
def test_suspect_params_are_validated(kw):
    with pytest.raises(ValueError):
        SuspectLayer.Params(**kw)


# --- flush ---------------------------------------------------------------------------------------

ATT = (1, "a")


def test_flush_blocks_then_reports_counts_once_the_application_stops():
    f, ctx = make(Flush)
    f.up(Deliver(1, b"b0", []))
    f.up(FlushStart(ATT))
    f.up(Deliver(2, b"c0", []))  # not yet frozen: still delivered
    assert ctx.take() == ([Deliver(1, b"b0", []), Block(), Deliver(2, b"c0", [])], [])
    f.down(BlockOk())
    assert ctx.take() == ([], [FlushReport(ATT, (0, 1, 1))])


def test_flush_holds_after_the_report_and_delivers_exactly_the_cut():
    f, ctx = make(Flush)
    f.up(Deliver(1, b"b0", []))
    f.up(FlushStart(ATT))
    f.down(BlockOk())
    ctx.take()
    for origin, payload in ((1, b"b1"), (1, b"b2"), (2, b"c0")):
        f.up(Deliver(origin, payload, []))
    assert ctx.take() == ([], [])  # frozen: held

    f.up(FlushCut(ATT, (0, 2, 2)))
    assert ctx.take() == (
        [Deliver(1, b"b1", []), Deliver(2, b"c0", [])],
        [Fetch((0, 2, 2))],  # c1 is still missing: nak must get it
    )
    f.up(Deliver(2, b"c1", []))
    assert ctx.take() == ([Deliver(2, b"c1", [])], [FlushDone(ATT)])
    f.up(Deliver(2, b"c2", []))  # beyond the cut
    f.up(Deliver(0, b"a0", []))
    assert ctx.take() == ([], [])  # b2, c2 and a0 are never delivered in this view


def test_flush_ignores_stale_or_premature_cuts_and_refuses_cuts_below_delivered():
    f, ctx = make(Flush)
    f.up(FlushStart(ATT))
    f.up(FlushCut(ATT, (0, 0, 0)))  # not reported yet
    f.up(Deliver(1, b"b0", []))
    f.up(Deliver(1, b"b1", []))
    f.down(BlockOk())
    ctx.take()
    f.up(FlushCut((0, "z"), (0, 5, 0)))  # another attempt
    f.up(FlushCut(ATT, (0, 1, 0)))  # below what we delivered
    assert ctx.take() == ([], [])
    assert ctx.counters["flush.cut_below_delivered"] == 1
    f.up(FlushCut(ATT, (0, 2, 0)))
    assert ctx.take() == ([], [Fetch((0, 2, 0)), FlushDone(ATT)])


def test_flush_new_coordinator_gets_a_fresh_report_without_a_second_block():
    f, ctx = make(Flush)
    f.up(FlushStart(ATT))
    f.down(BlockOk())
    f.up(Deliver(1, b"held", []))
    ctx.take()
    f.up(FlushStart((2, "b")))
    assert ctx.take() == ([], [FlushReport((2, "b"), (0, 0, 0))])
    f.up(FlushCut(ATT, (0, 1, 0)))  # the old coordinator's cut no longer counts
    assert ctx.take() == ([], [])
    f.up(FlushCut((2, "b"), (0, 1, 0)))
    assert ctx.take() == ([Deliver(1, b"held", [])], [Fetch((0, 1, 0)), FlushDone((2, "b"))])


# --- sequencer -----------------------------------------------------------------------------------


def data(origin: int, payload: bytes) -> Deliver:
    return Deliver(origin, payload, [(sequencer.DATA,)])


def order(runs: list[int]) -> Deliver:
    return Deliver(0, b"", [(sequencer.ORDER, runs)])


def test_sequencer_tags_casts_and_delivers_its_own_data_in_its_own_slot():
    s, ctx = make(Sequencer)
    s.down(Cast(b"m", [("app",)]))
    assert ctx.downs == [Cast(b"m", [("app",), (sequencer.DATA,)])]
    s.up(Deliver(0, b"m", [("app",), (sequencer.DATA,)]))  # nak's loopback
    assert ctx.ups == [Deliver(0, b"m", [("app",)])]
    assert ctx.timers == []


def test_sequencer_at_rank_0_orders_others_data_in_one_batched_cast():
    s, ctx = make(Sequencer)
    s.up(data(1, b"b0"))
    s.up(data(1, b"b1"))
    s.up(data(2, b"c0"))
    assert ctx.take() == ([], [])
    assert ctx.timers == [(0.0, "order")]

    fire(s, ctx, "order")
    assert ctx.take() == ([], [Cast(b"", [(sequencer.ORDER, [1, 2, 2, 1])])])

    s.up(order([1, 2, 2, 1]))  # our own ORDER comes back through nak's loopback
    assert ctx.ups == [Deliver(1, b"b0", []), Deliver(1, b"b1", []), Deliver(2, b"c0", [])]


def test_sequencer_member_delivers_only_in_the_order_the_sequencer_gives():
    s, ctx = make(Sequencer, me="b")
    s.up(data(1, b"b0"))  # our own cast
    s.up(data(2, b"c0"))
    s.up(data(2, b"c1"))
    assert ctx.take() == ([], []) and ctx.timers == []  # not the sequencer: no ORDER
    s.up(order([2, 1, 1, 1]))
    assert ctx.take()[0] == [Deliver(2, b"c0", []), Deliver(1, b"b0", [])]
    s.up(order([2, 1]))
    assert ctx.take()[0] == [Deliver(2, b"c1", [])]


def test_sequencer_reports_safe_once_data_and_order_are_stable():
    s, ctx = make(Sequencer, me="b")
    s.up(data(2, b"c0"))
    s.up(data(1, b"b0"))
    s.up(order([2, 1, 1, 1]))
    ctx.take()
    s.up(Stable((1, 0, 1), (1, 1, 1)))  # c0 and its ORDER are everywhere; b0 is not
    assert ctx.take() == ([Safe(1)], [])
    s.up(Stable((0, 1, 1), (1, 1, 1)))  # (mins from reordered gossip): no progress
    assert ctx.take() == ([], [])
    s.up(Stable((1, 1, 1), (1, 1, 1)))
    assert ctx.take() == ([Safe(2)], [])


def _leftovers_setup():
    s, ctx = make(Sequencer, me="c")
    s.up(order([1, 1]))  # slot for b's first cast
    s.up(data(0, b"a0"))  # the sequencer's own data: its own slot, after b0's
    s.up(data(1, b"b0"))  # fills the first slot, then a0 follows
    s.up(data(2, b"c0"))  # our own cast
    s.up(data(1, b"b1"))  # never ordered
    s.up(order([2, 1, 2, 1]))  # orders c0, then c1, which we do not hold
    s.up(data(0, b"a1"))  # stuck behind the slot for c1
    assert ctx.take() == ([Deliver(1, b"b0", []), Deliver(0, b"a0", []), Deliver(2, b"c0", [])], [])
    return s, ctx


NEXT_AC = View((2, "a"), ("a", "c"), True, ("a", "c"), (2, "a"), (1, "a"))


def test_sequencer_view_end_finishes_the_script_with_what_it_holds_then_the_rest():
    s, ctx = _leftovers_setup()
    s.up(ViewEv(NEXT_AC))
    # c1's slot is skipped (nobody has c1: it is beyond the cut), a1 keeps its place
    assert ctx.take() == (
        [Deliver(0, b"a1", []), Deliver(1, b"b1", []), Safe(5), ViewEv(NEXT_AC)],
        [],
    )


def test_sequencer_view_end_delivers_unordered_casts_by_origin_rank_not_arrival():
    s, ctx = make(Sequencer, me="c")
    s.up(data(2, b"c0"))
    s.up(data(1, b"b0"))
    s.up(data(2, b"c1"))
    s.up(data(1, b"b1"))
    assert ctx.take() == ([], [])
    s.up(ViewEv(NEXT_AC))
    assert ctx.take()[0] == [
        Deliver(1, b"b0", []),
        Deliver(1, b"b1", []),
        Deliver(2, b"c0", []),
        Deliver(2, b"c1", []),
        Safe(4),
        ViewEv(NEXT_AC),
    ]


@pytest.mark.parametrize(
    "nv",
    [
        View((2, "a"), ("c",), False, ("a", "b", "c"), (1, "a"), (1, "a")),  # non-primary
        View((2, "a"), ("a", "b"), True, ("a", "b"), (2, "a"), (1, "a")),  # without us
    ],
)
def test_sequencer_delivers_nothing_more_unless_moving_on_with_the_primary(nv):
    s, ctx = _leftovers_setup()
    s.up(ViewEv(nv))
    assert ctx.take() == ([ViewEv(nv)], [])


def test_sequencer_bad_header_is_counted():
    s, ctx = make(Sequencer, me="b")
    s.up(Deliver(1, b"x", [(7,)]))
    s.up(Deliver(2, b"", [(sequencer.ORDER, [2, 1])]))  # only rank 0 orders
    assert ctx.counters["sequencer.bad_header"] == 2
    assert ctx.take() == ([], [])


# --- top -----------------------------------------------------------------------------------------


def test_top_translates_ranks_to_addresses():
    t, ctx = make(Top)
    t.up(Deliver(1, b"x", []))
    t.up(DeliverSend(2, b"y", []))
    t.up(Safe(1))
    assert ctx.ups == [Deliver("b", b"x", []), DeliverSend("c", b"y", []), Safe(1)]


def test_top_holds_deliveries_while_the_lease_has_expired():
    t, ctx = make(Top, now=1.0)
    t.up(Lease(0.5))
    t.up(Deliver(1, b"x", []))
    t.up(Safe(1))  # Safe stays behind the deliveries it covers
    t.up(Lease(0.9))  # a renewal that is already over releases nothing
    assert ctx.ups == []
    t.up(Lease(1.5))
    assert ctx.take()[0] == [Deliver("b", b"x", []), Safe(1)]
    t.up(Deliver(2, b"z", []))
    assert ctx.take()[0] == [Deliver("c", b"z", [])]
    ctx.now = 1.5
    t.up(Deliver(2, b"late", []))
    assert ctx.take()[0] == []


def test_top_view_end_releases_held_deliveries_only_when_moving_on_with_the_primary():
    nxt = View((2, "a"), ("a", "b"), True, ("a", "b"), (2, "a"), (1, "a"))
    lost = View((2, "b"), ("b", "c"), True, ("b", "c"), (2, "b"), (1, "a"))  # without us
    for nv, expect in ((nxt, [Deliver("b", b"x", [])]), (lost, [])):
        t, ctx = make(Top, now=1.0)
        t.up(Lease(0.5))
        t.up(Deliver(1, b"x", []))
        t.up(ViewEv(nv))
        assert ctx.ups == [*expect, ViewEv(nv)]


def test_top_delivers_nothing_in_a_non_primary_view():
    np_view = View((2, "a"), ("a",), False, ("a", "b", "c"), (1, "a"))
    t, ctx = make(Top, view=np_view)
    t.up(Deliver(0, b"x", []))
    assert ctx.ups == []
    assert ctx.counters["top.nonprimary_drop"] == 1


# --- gms -----------------------------------------------------------------------------------------

BALLOT = (1, "a")
NEXT = View((2, "a"), ("a", "b"), True, ("a", "b"), (2, "a"), (1, "a"))


def test_gms_member_blocks_on_a_start_from_the_coordinator_and_reports_to_it():
    g, ctx = make(Gms, me="b")
    assert ctx.timers == [(0.05, "tick")]
    g.up(Granted((0.25, 0.0, 0.4)))
    g.up(ControlIn(0, b"", [(gms.START, 1, "a", [2])]))
    assert ctx.take() == ([FlushStart(BALLOT)], [Blocked()])

    g.down(FlushReport((0, "z"), (9, 9, 9)))  # not the accepted attempt
    assert ctx.take() == ([], [])
    g.down(FlushReport(BALLOT, (1, 3, 0)))
    assert ctx.take() == (
        [],
        [Control(0, b"", [(gms.REPORT, 1, "a", [1, 3, 0], [0.25, 0.0, 0.4], None, 1)])],
    )


def test_gms_member_ignores_a_start_from_a_non_coordinator():
    g, ctx = make(Gms, me="c")
    g.up(ControlIn(1, b"", [(gms.START, 1, "b", [])]))  # b is not the coordinator
    g.up(ControlIn(0, b"", [(gms.START, 1, "b", [])]))  # ballot not named after its sender
    g.up(ControlIn(0, b"", [(gms.START, 1, "a", [2])]))  # excludes us
    assert ctx.take() == ([], [])


def test_gms_member_delivers_the_cut_then_confirms_and_installs():
    g, ctx = make(Gms, me="b")
    g.up(ControlIn(0, b"", [(gms.START, 1, "a", [2])]))
    g.down(FlushReport(BALLOT, (1, 3, 0)))
    ctx.take()
    proposal = view_to_wire(NEXT)
    g.up(ControlIn(0, b"", [(gms.CUT, 1, "a", [2, 3, 0], proposal)]))
    assert ctx.take() == ([FlushCut(BALLOT, (2, 3, 0))], [])
    g.down(FlushDone(BALLOT))
    assert ctx.take() == ([], [Control(0, b"", [(gms.DONE, 1, "a")])])
    g.up(Oob("a", [gms.OOB_INSTALL, proposal, [], list(BALLOT)]))
    assert ctx.take() == ([ViewEv(NEXT)], [])


def test_gms_coordinator_runs_the_flush_after_a_suspicion():
    g, ctx = make(Gms, me="a")
    ctx.take()
    g.up(Suspect(frozenset({2})))
    # the coordinator is a participant too: it blocks itself directly
    assert ctx.take() == (
        [FlushStart(BALLOT)],
        [Blocked(), Control(1, b"", [(gms.START, 1, "a", [2])])],
    )
    g.down(FlushReport(BALLOT, (2, 1, 0)))
    assert ctx.take() == ([], [])  # its own report: still waiting for b's
    g.up(ControlIn(1, b"", [(gms.REPORT, 1, "a", [1, 3, 0], [0.0, 0.0, 0.0], None, 1)]))
    proposal = view_to_wire(NEXT)
    assert ctx.take() == (
        [FlushCut(BALLOT, (2, 3, 0))],
        [Control(1, b"", [(gms.CUT, 1, "a", [2, 3, 0], proposal)])],
    )
    g.down(FlushDone(BALLOT))
    assert ctx.take() == ([], [])  # waiting for b's DONE
    g.up(ControlIn(1, b"", [(gms.DONE, 1, "a")]))
    assert ctx.take() == ([ViewEv(NEXT)], [Oob("b", [gms.OOB_INSTALL, proposal, [], list(BALLOT)])])


def test_gms_coordinator_waits_out_leases_granted_to_an_excluded_member():
    g, ctx = make(Gms, me="a")
    g.up(Suspect(frozenset({2})))
    g.up(Granted((0.0, 0.0, 0.3)))  # we echoed c recently: it may deliver until t=0.3
    g.down(FlushReport(BALLOT, (0, 0, 0)))
    g.up(ControlIn(1, b"", [(gms.REPORT, 1, "a", [0, 0, 0], [0.0, 0.0, 0.0], None, 1)]))
    g.down(FlushDone(BALLOT))
    ctx.now = 0.1
    g.up(ControlIn(1, b"", [(gms.DONE, 1, "a")]))
    ctx.take()
    at(g, ctx, 0.2, "tick")
    assert ctx.take() == ([], [])
    at(g, ctx, 0.35, "tick")
    ups, downs = ctx.take()
    assert ups == [ViewEv(NEXT)] and downs[0] == Oob(
        "b", [gms.OOB_INSTALL, view_to_wire(NEXT), [], list(BALLOT)]
    )


def test_gms_bad_control_is_counted_not_raised():
    g, ctx = make(Gms, me="b")
    g.up(ControlIn(0, b"", [(gms.START, 1)]))
    g.up(ControlIn(0, b"", [(42,)]))
    assert ctx.counters["gms.bad_header"] == 2
    assert ctx.take() == ([], [])


def test_gms_view_wire_round_trip():
    for v in (VIEW, NEXT, View((0, "x"), ("x",), False, ("x", "y", "z"), (0, ""))):
        assert view_from_wire(view_to_wire(v)) == v


@pytest.mark.parametrize(
    "w",
    [
        None,
        5,
        b"\x00" * 7,
        [],
        [1, "a"],
        [1, "a", ["a", "a"], True, ["a"], [1, "a"], None],  # duplicate member
        [1, "a", [], True, [], [1, "a"], None],  # no members
        ["1", "a", ["a"], True, ["a"], [1, "a"], None],
        [1, "a", ["a"], 1, ["a"], [1, "a"], None],
        [1, "a", ["a"], True, ["a"], ["x", "a"], None],
        [1, "a", ["a"], True, 7, [1, "a"], None],
        pytest.param(
            [1, "a", ["a"], True, ["a"], [1], None],
            id="lpv-too-short",
        ),
        pytest.param(
            [1, "a", ["a"], True, ["a"], [1, "a"], [2]],
            id="prev-too-short",
        ),
        pytest.param(
            [1, "a", ["a"], True, ["a"], {"x": 1}, None],
            id="lpv-is-a-map",
        ),
    ],
)
def test_gms_view_from_wire_returns_none_on_garbage(w):
    assert view_from_wire(w) is None


# --- module-level helpers ------------------------------------------------------------------------


def test_header_formatters_name_each_kind():
    assert nak.fmt_header((nak.NAK, 1, 2, 3)) == "NAK(1, 2, 3)"
    assert nak.fmt_header(None) == "-"
    assert pt2pt.fmt_header((pt2pt.ACK, 4)) == "ACK(4,)"
    assert gms.fmt_header((gms.DONE, 1, "a")) == "DONE(1, 'a')"
    assert bottom.Bottom.provides == frozenset({"net"})
