"""Unit tests of the membership-side layers alone (suspect, flush, sequencer, top, gms), driven
through RecordingContext: each test feeds events and asserts the exact events, timers and counters
emitted. Members are ranks in VIEW = [a, b, c]; "a" is rank 0 (coordinator and sequencer).
"""

from __future__ import annotations

import math

import pytest
from cohort.stack.events import (
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
    Safe,
    Stable,
    Suspect,
)
from cohort.stack.events import View as ViewEv
from cohort.stack.layers import gms, sequencer, suspect
from cohort.stack.layers.flush import Flush
from cohort.stack.layers.gms import Gms, view_from_wire, view_to_wire
from cohort.stack.layers.sequencer import Sequencer
from cohort.stack.layers.suspect import SuspectLayer
from cohort.stack.layers.top import Top
from cohort.stack.view import View
from layerkit import VIEW, at, fire, make

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
    assert ctx.ups == [Suspect(frozenset({2}), frozenset({2}))]  # a closed connection: dead


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
    assert ctx.take() == ([], [])
    g.up(ControlIn(0, b"", [(gms.START, 1, "a", [2])]))  # excludes us: not blocked, but we say
    assert ctx.take() == ([], [Control(0, b"", [(gms.NACK, 0, "")])])  # we are here (NACK)


def test_gms_member_delivers_the_cut_then_confirms_and_installs():
    g, ctx = make(Gms, me="b")
    g.up(ControlIn(0, b"", [(gms.START, 1, "a", [2])]))
    g.down(FlushReport(BALLOT, (1, 3, 0)))
    ctx.take()
    proposal = view_to_wire(NEXT)
    g.up(ControlIn(0, b"", [(gms.CUT, 1, "a", [2, 3, 0], proposal, 0.0)]))
    assert ctx.take() == ([FlushCut(BALLOT, (2, 3, 0))], [])
    g.down(FlushDone(BALLOT))
    assert ctx.take() == ([], [Control(0, b"", [(gms.DONE, 1, "a", 0.0)])])
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
        [Control(1, b"", [(gms.CUT, 1, "a", [2, 3, 0], proposal, 0.0)])],
    )
    g.down(FlushDone(BALLOT))
    assert ctx.take() == ([], [])  # waiting for b's DONE
    g.up(ControlIn(1, b"", [(gms.DONE, 1, "a", 0.0)]))
    assert ctx.take() == ([ViewEv(NEXT)], [Oob("b", [gms.OOB_INSTALL, proposal, [], list(BALLOT)])])


def test_gms_coordinator_waits_out_leases_granted_to_an_excluded_member():
    g, ctx = make(Gms, me="a")
    g.up(Suspect(frozenset({2})))
    g.up(Granted((0.0, 0.0, 0.3)))  # we echoed c recently: it may deliver until t=0.3
    g.down(FlushReport(BALLOT, (0, 0, 0)))
    g.up(ControlIn(1, b"", [(gms.REPORT, 1, "a", [0, 0, 0], [0.0, 0.0, 0.0], None, 1)]))
    g.down(FlushDone(BALLOT))
    ctx.now = 0.1
    g.up(ControlIn(1, b"", [(gms.DONE, 1, "a", 0.0)]))
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


def test_gms_coordinator_paused_after_the_last_done_asks_again_instead_of_installing():
    """Regression (cohort sim seed 840594, 4 members): a coordinator paused with every DONE queued
    installed on waking and released flush deliveries into a view the group had left."""
    g, ctx = make(Gms, me="a")
    g.up(Suspect(frozenset({2})))
    g.up(Granted((0.0, 0.0, 0.3)))  # c may still deliver until t=0.3: installation must wait
    g.down(FlushReport(BALLOT, (0, 0, 0)))
    g.up(ControlIn(1, b"", [(gms.REPORT, 1, "a", [0, 0, 0], [0.0, 0.0, 0.0], None, 1)]))
    g.down(FlushDone(BALLOT))
    g.up(ControlIn(1, b"", [(gms.DONE, 1, "a", 0.0)]))  # b confirms our CUT sent at t=0
    ctx.take()
    at(g, ctx, 0.8, "tick")  # stopped from t=0 to t=0.8 (> fresh 0.5): b's DONE is stale
    ups, downs = ctx.take()
    assert ups == []  # no view installed
    assert [d.hdrs[0][0] for d in downs] == [gms.CUT] and downs[0].hdrs[0][-1] == 0.8
    g.up(ControlIn(1, b"", [(gms.DONE, 1, "a", 0.8)]))  # b is still there and confirms again
    ups, _ = ctx.take()
    assert ups == [ViewEv(NEXT)]
