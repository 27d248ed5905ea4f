"""Flow control: the flow layer alone (RecordingContext), then a slow receiver in the simulator.

The unit tests check the window arithmetic, FIFO queueing, the Backpressure signal, the release
at the view end and the credit probe; the simulator test checks the point of it all: with a member
that cannot keep up, the sender's in-flight bytes and every member's retransmission buffer for it
stay bounded, and everything is still delivered in order afterwards.
"""

from __future__ import annotations

import pytest
from cohort.stack import check
from cohort.stack.events import (
    Backpressure,
    BlockOk,
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Send,
    Stable,
    Timer,
)
from cohort.stack.layers import flow
from cohort.stack.layers.flow import ASK, CREDIT, SEND_ASK, SEND_CREDIT, Flow
from cohort.stack.sim import Net, Sim
from layerkit import fire, make


def cast(n: int, tag: str = "") -> Cast:
    return Cast(tag.encode().ljust(n, b"."), [])


def stable(*mins: int) -> Stable:
    return Stable(tuple(mins), tuple(mins))


def casts(ctx) -> list[bytes]:
    return [bytes(e.payload) for e in ctx.downs if type(e) is Cast]


def test_casts_within_the_window_pass_at_once_and_are_charged_with_overhead():
    layer, ctx = make(Flow, window=1000, overhead=10)
    for i in range(4):
        layer.down(cast(240, str(i)))
    assert len(casts(ctx)) == 4 and layer.inflight == 1000 and ctx.ups == []
    assert ctx.downs[0].hdrs == []  # no header of ours on casts


def test_a_full_window_queues_in_order_and_signals_backpressure_once():
    layer, ctx = make(Flow, window=1000, overhead=0)
    for i in range(5):
        layer.down(cast(300, str(i)))
    assert len(casts(ctx)) == 3 and len(layer.queue) == 2
    assert ctx.ups == [Backpressure(True)]
    assert [t for _, t in ctx.timers] == ["probe"]
    layer.down(cast(1, "small"))  # FIFO: it waits behind the queue although it would fit
    assert len(casts(ctx)) == 3 and len(layer.queue) == 3
    ctx.downs.clear()
    layer.up(stable(1, 0, 0))  # my (rank 0's) first cast is stable: 300 bytes come back
    assert casts(ctx) == [b"3".ljust(300, b".")]
    assert ctx.ups == [Backpressure(True), stable(1, 0, 0)]  # still blocked; Stable goes on up
    layer.up(stable(4, 0, 0))
    assert casts(ctx)[1:] == [b"4".ljust(300, b"."), b"small"]
    assert ctx.ups[2:] == [Backpressure(False), stable(4, 0, 0)] and layer.inflight == 305


def test_a_cast_larger_than_the_window_goes_alone():
    layer, ctx = make(Flow, window=100, overhead=0)
    layer.down(cast(500, "big"))
    assert len(casts(ctx)) == 1 and ctx.ups == []
    layer.down(cast(10, "next"))
    assert len(casts(ctx)) == 1 and ctx.ups == [Backpressure(True)]
    layer.up(stable(1, 0, 0))
    assert len(casts(ctx)) == 2 and ctx.ups[1:] == [Backpressure(False), stable(1, 0, 0)]


def test_stability_stepping_back_returns_nothing_twice():
    layer, ctx = make(Flow, me="b", window=100, overhead=0)
    for i in range(3):
        layer.down(cast(50, str(i)))
    layer.up(stable(0, 1, 0))  # the third cast, queued, goes
    assert layer.inflight == 100 and layer.acked == 1 and not layer.queue
    layer.up(stable(0, 0, 0))  # reordered gossip: stale
    assert layer.inflight == 100 and layer.acked == 1
    layer.up(stable(0, 3, 0))
    assert layer.inflight == 0 and not layer.queue


def test_sends_controls_and_other_events_pass():
    layer, ctx = make(Flow, window=1, overhead=0)
    layer.down(cast(10))
    layer.down(cast(10))  # queued
    layer.down(Send(1, b"s", []))
    layer.down(Control(1, b"c", []))
    assert ctx.downs[1:] == [Send(1, b"s", []), Control(1, b"c", [None])]
    layer.up(ControlIn(1, b"", [None]))
    layer.up(Deliver(1, b"d", []))
    assert ctx.ups[1:] == [ControlIn(1, b"", []), Deliver(1, b"d", [])]


def test_block_ok_sends_the_whole_queue_and_reaches_flush_only_after_a_zero_timer():
    layer, ctx = make(Flow, window=100, overhead=0)
    for i in range(4):
        layer.down(cast(60, str(i)))
    assert len(casts(ctx)) == 1
    layer.down(BlockOk())
    assert len(casts(ctx)) == 4 and BlockOk() not in ctx.downs
    assert ctx.ups[-1] == Backpressure(False) and ctx.counters["flow.released_at_block"] == 3
    assert (0.0, "block_ok") in ctx.timers
    fire(layer, ctx, "block_ok")
    assert ctx.downs[-1] == BlockOk()
    layer.down(cast(500, "order"))  # the view is ending: nothing is held any more
    assert casts(ctx)[-1].startswith(b"order") and not layer.queue


def test_block_ok_with_nothing_queued_goes_straight_on():
    layer, ctx = make(Flow)
    layer.down(BlockOk())
    assert ctx.downs == [BlockOk()] and ctx.timers == []


def test_a_blocked_member_probes_and_any_members_stability_view_is_a_credit():
    a, actx = make(Flow, me="a", window=130, overhead=0)
    for i in range(3):
        a.down(cast(60, str(i)))
    actx.downs.clear()
    fire(a, actx, "probe")
    assert actx.downs == [Control(None, b"", [(ASK,)])] and actx.counters["flow.probe"] == 1
    assert [t for _, t in actx.timers] == ["probe"]  # asks again while still blocked
    b, bctx = make(Flow, me="b")
    b.up(stable(2, 0, 0))  # b knows that everybody has a's first two casts
    b.up(ControlIn(0, b"", [[ASK]]))
    assert bctx.downs == [Control(0, b"", [(CREDIT, 2)])]
    a.up(ControlIn(1, b"", [[CREDIT, 2]]))
    assert len(casts(actx)) == 1 and actx.ups[-1] == Backpressure(False)
    fire(a, actx, "probe")  # nothing queued: the probe stops
    assert actx.timers == [] and actx.counters["flow.probe"] == 1


def test_a_credit_beyond_what_was_sent_returns_only_what_was_sent():
    layer, ctx = make(Flow, window=100, overhead=0)
    layer.down(cast(60))
    layer.down(cast(60))  # queued
    layer.up(ControlIn(1, b"", [[CREDIT, 5]]))  # no honest member can know of 5 casts of ours
    assert layer.acked == 1 and layer.inflight == 60 and not layer.queue
    layer.up(stable(2, 0, 0))
    assert layer.acked == 2 and layer.inflight == 0


@pytest.mark.parametrize(
    "bad", [[7], [CREDIT], [CREDIT, "x"], [CREDIT, 1, 2], [ASK, 1], [SEND_CREDIT], [], 5, "x"]
)
def test_malformed_flow_controls_are_counted(bad):
    layer, ctx = make(Flow)
    layer.up(ControlIn(1, b"", [bad]))
    assert ctx.downs == [] and ctx.counters["flow.bad_header"] == 1


def test_params_are_validated_and_headers_formatted():
    with pytest.raises(ValueError):
        flow.Params(window=0)
    with pytest.raises(ValueError):
        flow.Params(send_window=0)
    assert flow.fmt_header((ASK,)) == "ASK" and flow.fmt_header((CREDIT, 3)) == "CREDIT(3)"
    assert flow.fmt_header((SEND_CREDIT, 9)) == "SEND_CREDIT(9)" and flow.fmt_header(None) == "-"


# --- sends: explicit credit per destination -------------------------------------------------------


def sends(ctx) -> list[Send]:
    return [e for e in ctx.downs if type(e) is Send]


def test_sends_queue_per_destination_beyond_the_send_window_without_backpressure():
    layer, ctx = make(Flow, send_window=1000, overhead=0)
    for i in range(4):
        layer.down(Send(1, b"%d" % i * 400, []))
    layer.down(Send(2, b"other" * 100, []))  # another destination has its own window
    layer.down(Send(0, b"self" * 1000, []))  # to ourselves: nothing is buffered below
    assert [len(s.payload) for s in sends(ctx)] == [400, 400, 500, 4000]
    assert len(layer.send_queues[1]) == 2 and ctx.ups == []  # casts are not held up by sends
    assert [t for _, t in ctx.timers] == ["probe"]
    ctx.downs.clear()
    layer.up(ControlIn(1, b"", [[SEND_CREDIT, 400]]))
    assert [s.payload for s in sends(ctx)] == [b"2" * 400]
    layer.up(ControlIn(1, b"", [[SEND_CREDIT, 10_000]]))  # clamped to what was sent
    assert layer.credited[1] == 1200 and [s.payload for s in sends(ctx)][1:] == [b"3" * 400]


def test_a_receiver_credits_every_quarter_window_and_answers_a_probe():
    layer, ctx = make(Flow, me="b", send_window=1000, overhead=0)
    for _ in range(2):
        layer.up(DeliverSend(0, b"x" * 100, []))
    assert ctx.downs == []  # 200 bytes: less than a quarter of the window
    layer.up(DeliverSend(0, b"x" * 100, []))
    assert ctx.downs == [Control(0, b"", [(SEND_CREDIT, 300)])]
    layer.up(DeliverSend(0, b"x" * 10, []))
    layer.up(DeliverSend(1, b"me", []))  # own sends to ourselves are not counted
    layer.up(ControlIn(0, b"", [[SEND_ASK]]))
    assert ctx.downs[-1] == Control(0, b"", [(SEND_CREDIT, 310)]) and len(ctx.downs) == 2
    assert [type(e) for e in ctx.ups] == [DeliverSend] * 5


def test_a_blocked_sender_probes_its_destination_and_block_ok_releases_sends():
    layer, ctx = make(Flow, send_window=100, overhead=0)
    layer.down(Send(2, b"a" * 80, []))
    layer.down(Send(2, b"b" * 80, []))
    fire(layer, ctx, "probe")
    assert Control(2, b"", [(SEND_ASK,)]) in ctx.downs and ctx.counters["flow.probe"] == 1
    layer.down(BlockOk())
    assert [s.payload[:1] for s in sends(ctx)] == [b"a", b"b"]
    assert ctx.downs[-1] == BlockOk()  # no cast was queued: straight on


# --- the simulator ------------------------------------------------------------------------------


def flow_of(sim: Sim, m: str) -> Flow:
    return next(x for x in sim.eps[m]._layers if x.name == "flow")


def nak_of(sim: Sim, m: str):
    return next(x for x in sim.eps[m]._layers if x.name == "nak")


def test_a_slow_receiver_bounds_the_senders_in_flight_data_and_every_retransmission_buffer():
    """m1 bursts 400 casts of 8 kB while m2 is stopped for 0.3 s (shorter than the suspicion
    timeout; its packets wait in its "socket") and the network loses 2 %: the sender's window
    (64 kB here) bounds what is unstable, hence what any member's nak holds for m1; the rest
    waits in m1's flow queue, and all of it is delivered in order once m2 catches up."""
    window, size = 64_000, 8_000
    sim = Sim(21, 3, net=Net(loss=0.02), params={"flow": {"window": window}})
    payloads = [b"m1:%03d:" % k + b"x" * size for k in range(400)]
    sim.at(0.01, lambda: sim.pause("m2"))
    sim.at(0.02, lambda: [sim.cast("m1", p) for p in payloads])
    sim.at(0.31, lambda: sim.resume("m2"))
    worst = {"inflight": 0, "held": 0, "held_at_sender": 0, "queued": 0, "blocked": False}

    def sample() -> None:
        f = flow_of(sim, "m1")
        worst["inflight"] = max(worst["inflight"], f.inflight)
        worst["queued"] = max(worst["queued"], len(f.queue))
        worst["blocked"] |= f.blocked
        held = max(len(nak_of(sim, m).held[1]) for m in sim.live())
        worst["held"] = max(worst["held"], held)
        worst["held_at_sender"] = max(worst["held_at_sender"], len(nak_of(sim, "m1").held[1]))

    for k in range(300):
        sim.at(0.02 + k * 0.01, sample)
    ok = sim.run_until(lambda: all(len(sim.delivered[m]) == 400 for m in sim.seeds), 30.0)
    assert ok, {m: len(sim.delivered[m]) for m in sim.seeds}
    assert worst["blocked"] and worst["queued"] > 300  # the burst really was held back
    assert worst["inflight"] <= window
    # nak's buffer for m1: at m1 the window bounds it; another member frees on its own copy of
    # the gossip, which may be a lost gossip (a round) behind m1's, so it may hold twice that
    assert worst["held_at_sender"] <= window // size + 1
    assert worst["held"] <= 2 * (window // size + 1)
    assert all(sim.delivered[m] == payloads for m in sim.seeds)
    assert sim.converged()  # nobody was excluded on the way
    sim.trace.live, sim.trace.liveness = tuple(sim.live()), True
    check.assert_ok(sim.trace)


def test_casts_queued_when_a_member_crashes_are_delivered_in_the_next_flush():
    sim = Sim(22, 3, params={"flow": {"window": 2_000}})
    payloads = [b"m1:%03d:" % k + b"y" * 500 for k in range(40)]
    sim.at(0.01, lambda: sim.crash("m2"))  # no more credit: m1 stalls until the view changes
    sim.at(0.02, lambda: [sim.cast("m1", p) for p in payloads])
    sim.run(0.2)
    assert flow_of(sim, "m1").queue  # stalled
    ok = sim.run_until(lambda: all(len(sim.delivered[m]) == 40 for m in ("m0", "m1")), 5.0)
    assert ok and sim.delivered["m0"] == payloads == sim.delivered["m1"]
    assert sim.eps["m1"].counters["flow.released_at_block"] > 0
    assert sim.run_until(sim.converged, 5.0)
    sim.run(sim.now + 0.5)
    sim.trace.live, sim.trace.liveness = tuple(sim.live()), True
    check.assert_ok(sim.trace)


def test_timer_tokens_are_distinct():
    layer, ctx = make(Flow, window=1, overhead=0)
    layer.down(cast(5))
    layer.down(cast(5))
    layer.down(BlockOk())
    layer.up(Timer(0.0, "probe"))  # a stale probe after the release asks nothing
    assert not any(type(e) is Control for e in ctx.downs)
