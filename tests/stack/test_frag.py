"""Fragmentation: the frag layer alone (RecordingContext), then large messages in the simulator.

Unit tests feed the layer events and assert what it emits; the simulator tests cast MiB-sized
messages through the whole `total` stack under loss, reordering and view changes, and check the
trace (total order, virtual synchrony, Safe) plus every payload byte for byte.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from cohort.stack import check, wire
from cohort.stack.compose import PRESETS, compose
from cohort.stack.events import Cast, Deliver, DeliverSend, Safe, Send, View
from cohort.stack.layers import frag
from cohort.stack.layers.frag import FRAG, Frag
from cohort.stack.sim import ALL_FAULTS, Net, Sim, run_scenario
from cohort.stack.transport.datagrams import MAX_DATAGRAM
from layerkit import VIEW, make

MiB = 1 << 20


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def split(size: int, frag_size: int = 1000, me: str = "b"):
    """The casts frag emits for one payload of `size` bytes, and the payload."""
    layer, ctx = make(Frag, me=me, frag_size=frag_size)
    payload = blob(size, size)
    layer.down(Cast(payload, []))
    return ctx.downs, payload


def as_delivers(casts, origin: int) -> list[Deliver]:
    """What the layer below would hand up at a receiver for these casts (headers as lists)."""
    return [Deliver(origin, bytes(c.payload), [list(h) if h else h for h in c.hdrs]) for c in casts]


# --- the layer alone ----------------------------------------------------------------------------


def test_small_messages_get_a_none_header_and_pass_both_ways():
    layer, ctx = make(Frag, frag_size=1000)
    layer.down(Cast(b"x" * 1000, ["upper"]))
    layer.down(Send(2, b"y", []))
    assert ctx.downs == [Cast(b"x" * 1000, ["upper", None]), Send(2, b"y", [None])]
    layer.up(Deliver(1, b"x", ["upper", None]))
    layer.up(DeliverSend(2, b"y", [None]))
    layer.up(Safe(1))
    assert ctx.ups == [Deliver(1, b"x", ["upper"]), DeliverSend(2, b"y", []), Safe(1)]
    assert not ctx.counters


def test_a_large_cast_becomes_consecutive_fragments_upper_headers_on_the_last():
    layer, ctx = make(Frag, frag_size=1000)
    payload = blob(1, 3500)
    layer.down(Cast(payload, ["upper"]))
    out = ctx.downs
    assert [c.hdrs for c in out] == [
        [(FRAG, 0, 4)],
        [(FRAG, 1, 4)],
        [(FRAG, 2, 4)],
        ["upper", (FRAG, 3, 4)],
    ]
    assert [len(c.payload) for c in out] == [1000, 1000, 1000, 500]
    assert b"".join(out_.payload for out_ in out) == payload


def test_fragments_reassemble_into_one_delivery_at_the_last_one():
    casts, payload = split(10_001)
    layer, ctx = make(Frag, frag_size=1000)
    for d in as_delivers(casts, origin=1)[:-1]:
        layer.up(d)
        assert ctx.ups == []
    layer.up(as_delivers(casts, origin=1)[-1])
    [d] = ctx.ups
    assert d.origin == 1 and d.payload == payload and d.hdrs == [] and type(d.payload) is bytes


def test_own_fragments_loop_back_as_memoryviews_and_reassemble():
    layer, ctx = make(Frag, frag_size=1000)
    payload = blob(2, 2500)
    layer.down(Cast(payload, []))
    for c in ctx.downs:  # nak's loopback hands the same payload objects back up
        layer.up(Deliver(0, c.payload, list(c.hdrs)))
    assert [d.payload for d in ctx.ups] == [payload]


def test_sixty_four_mib_message_round_trips_through_the_layer():
    payload = bytes(range(256)) * (64 * MiB // 256)
    sender, sctx = make(Frag, me="b")
    sender.down(Cast(payload, []))
    n = len(sctx.downs)
    assert n == -(-64 * MiB // frag.Params().frag_size)
    assert all(len(c.payload) <= frag.Params().frag_size for c in sctx.downs)
    receiver, rctx = make(Frag, me="c")
    for c in sctx.downs:
        receiver.up(Deliver(1, c.payload, list(c.hdrs)))
    [d] = rctx.ups
    assert d.payload == payload
    assert not receiver.casts  # nothing left behind


def test_one_byte_over_max_size_is_refused_by_sender_and_receiver():
    layer, ctx = make(Frag, frag_size=100, max_size=1000)
    layer.down(Cast(b"z" * 1001, []))
    assert ctx.downs == [] and ctx.counters["frag.too_large_sent"] == 1
    layer.down(Cast(b"z" * 1000, []))
    assert len(ctx.downs) == 10
    big, _ = split(1100, frag_size=100)  # a sender with a larger limit than ours
    for d in as_delivers(big, origin=1):
        layer.up(d)
    assert ctx.ups == [] and ctx.counters["frag.too_large"] == 1 and not layer.casts


def test_fragments_of_different_origins_interleave_and_deliver_in_last_fragment_order():
    a, _ = split(2500, me="b")
    b, _ = split(1500, me="c")
    da, db = as_delivers(a, 1), as_delivers(b, 2)
    layer, ctx = make(Frag, frag_size=1000)
    order = [da[0], db[0], da[1], Deliver(0, b"small", [None]), db[1], da[2]]
    for d in order:
        layer.up(d)
    assert [(d.origin, len(d.payload)) for d in ctx.ups] == [(0, 5), (2, 1500), (1, 2500)]


def test_a_bytearray_payload_is_copied_before_it_is_fragmented():
    layer, ctx = make(Frag, frag_size=10)
    payload = bytearray(b"a" * 25)
    layer.down(Cast(payload, []))
    payload[:] = b"b" * 25
    assert b"".join(bytes(c.payload) for c in ctx.downs) == b"a" * 25


def test_large_sends_fragment_and_reassemble_per_sender():
    sender, sctx = make(Frag, me="b", frag_size=1000)
    payload = blob(3, 2222)
    sender.down(Send(2, payload, []))
    assert [s.dest for s in sctx.downs] == [2, 2, 2]
    receiver, rctx = make(Frag, me="c", frag_size=1000)
    receiver.up(DeliverSend(0, b"other", [None]))
    for s in sctx.downs:
        receiver.up(DeliverSend(1, bytes(s.payload), [list(h) for h in s.hdrs]))
    assert [(d.origin, d.payload) for d in rctx.ups] == [(0, b"other"), (1, payload)]


@pytest.mark.parametrize(
    "bad",
    [
        [FRAG],
        [FRAG, 0],
        [FRAG, "0", 2],
        [FRAG, 0, 1],  # a message of one fragment is sent whole
        [FRAG, 2, 2],
        [FRAG, -1, 3],
        [7, 0, 2],
        "junk",
        5,
        {"a": 1},
    ],
)
def test_malformed_fragment_headers_are_counted_and_dropped(bad):
    layer, ctx = make(Frag, frag_size=1000)
    layer.up(Deliver(1, b"x", [bad]))
    layer.up(DeliverSend(1, b"x", [bad]))
    assert ctx.ups == [] and ctx.counters["frag.bad_header"] == 2


def test_out_of_sequence_fragments_drop_the_partial_message_and_the_next_one_still_works():
    casts, payload = split(3000)
    d = as_delivers(casts, 1)
    layer, ctx = make(Frag, frag_size=1000)
    layer.up(d[0])
    layer.up(d[2])  # d[1] skipped: the stream is broken
    assert ctx.counters["frag.bad_sequence"] == 1 and not layer.casts
    layer.up(d[1])  # a middle fragment without its start
    assert ctx.counters["frag.bad_sequence"] == 2
    for x in as_delivers(casts, 1):
        layer.up(x)
    assert [x.payload for x in ctx.ups] == [payload]


def test_a_restart_a_wrong_count_an_uneven_chunk_or_an_empty_one_is_counted():
    layer, ctx = make(Frag, frag_size=1000)
    layer.up(Deliver(1, b"a" * 10, [[FRAG, 0, 3]]))
    layer.up(Deliver(1, b"a" * 10, [[FRAG, 0, 3]]))  # a new message before the old one ended
    assert ctx.counters["frag.bad_sequence"] == 1
    layer.up(Deliver(1, b"a" * 10, [[FRAG, 1, 4]]))  # another count
    assert ctx.counters["frag.bad_sequence"] == 2 and not layer.casts
    layer.up(Deliver(1, b"a" * 10, [[FRAG, 0, 3]]))
    layer.up(Deliver(1, b"a" * 9, [[FRAG, 1, 3]]))  # a middle chunk shorter than the first
    assert ctx.counters["frag.bad_sequence"] == 3
    layer.up(Deliver(1, b"a" * 10, [[FRAG, 0, 2]]))
    layer.up(Deliver(1, b"a" * 11, [[FRAG, 1, 2]]))  # a last chunk longer than the first
    assert ctx.counters["frag.bad_sequence"] == 4
    layer.up(Deliver(1, b"", [[FRAG, 0, 2]]))
    assert ctx.counters["frag.bad_header"] == 1
    layer.up(Deliver(1, b"a" * 10, [[FRAG, 0, 2]]))
    layer.up(Deliver(1, b"whole", [None]))  # a whole message inside the origin's fragments
    assert ctx.counters["frag.bad_sequence"] == 5
    assert [d.payload for d in ctx.ups] == [b"whole"]


def test_safe_counts_become_counts_of_whole_messages():
    casts, payload = split(2500)  # three fragments
    f = as_delivers(casts, 1)
    layer, ctx = make(Frag, frag_size=1000)
    small = [Deliver(2, b"s%d" % i, [None]) for i in range(3)]
    # positions below: 1 s0 | 2 f0 | 3 s1 | 4 f1 | 5 f2 (completes) | 6 s2
    for d in [small[0], f[0], small[1], f[1], f[2], small[2]]:
        layer.up(d)
    assert [d.payload for d in ctx.ups] == [b"s0", b"s1", payload, b"s2"]
    ctx.ups.clear()
    for k in range(1, 7):
        layer.up(Safe(k))
    assert ctx.ups == [Safe(1), Safe(2), Safe(3), Safe(4)]  # after positions 1, 3, 5 and 6


def test_safe_never_counts_a_message_still_being_reassembled():
    casts, _ = split(2500)
    f = as_delivers(casts, 1)
    layer, ctx = make(Frag, frag_size=1000)
    layer.up(Safe(0))
    layer.up(Deliver(2, b"s", [None]))
    layer.up(f[0])
    layer.up(f[1])
    layer.up(Safe(3))
    assert [e for e in ctx.ups if type(e) is Safe] == [Safe(0), Safe(1)]


def test_a_view_change_drops_partial_messages_and_counts_them():
    casts, _ = split(2500)
    layer, ctx = make(Frag, frag_size=1000)
    layer.up(as_delivers(casts, 1)[0])
    layer.up(DeliverSend(2, b"x", [[FRAG, 0, 2]]))
    layer.up(View(VIEW))
    assert ctx.counters["frag.partial_dropped"] == 2 and ctx.ups == [View(VIEW)]


def test_a_full_fragment_fits_a_datagram_even_as_a_retransmission():
    """The largest packet a fragment makes: nak's RETRANS carrying the total stack's headers."""
    payload = b"x" * frag.Params().frag_size
    hdrs = [None, (FRAG, 1000, 1136), [0], None, None, None, [2, 1 << 40, 1 << 40]]
    data = wire.encode(wire.CONTROL, 0xFFFFFFFF, 255, hdrs, payload)
    assert len(data) <= MAX_DATAGRAM


def test_header_format():
    assert frag.fmt_header(None) == "-" and frag.fmt_header((FRAG, 1, 3)) == "FRAG(1, 3)"


def test_every_preset_fragments_and_has_flow_control():
    for name in PRESETS:
        spec = compose(name)
        assert spec.provides("frag") and spec.provides("flow"), name


# --- the simulator: the whole stack ---------------------------------------------------------------


def run_big(sim: Sim, plan: dict[str, list[bytes]], within: float, gap: float = 0.01) -> None:
    """Members cast their planned payloads `gap` apart; run until all live members deliver all."""
    for m, payloads in plan.items():
        for k, p in enumerate(payloads):
            sim.at(0.01 + k * gap, lambda m=m, p=p: sim.cast(m, p))
    want = sum(len(v) for v in plan.values())
    ok = sim.run_until(lambda: all(len(sim.delivered[m]) >= want for m in sim.live()), within)
    assert ok, {m: len(sim.delivered[m]) for m in sim.live()}


def finish(sim: Sim, within: float = 10.0) -> None:
    assert sim.run_until(sim.converged, within=within), f"no convergence: {sim.views()}"
    sim.run(sim.now + 1.0)
    sim.trace.live = tuple(sim.live())
    sim.trace.liveness = True
    check.assert_ok(sim.trace)


def plan_for(sim: Sim, big: int, per_member: int = 4) -> dict[str, list[bytes]]:
    """Per member: small messages and `big`-byte ones alternating, every payload unique."""
    plan = {}
    for i, m in enumerate(sim.seeds):
        plan[m] = [
            blob(100 * i + k, big) if k % 2 else f"{m}:{k}".encode() for k in range(per_member)
        ]
    return plan


@pytest.mark.parametrize("seed", [1, 2])
def test_one_mib_messages_intact_and_in_total_order_under_loss_dup_and_reordering(seed):
    sim = Sim(seed, 3, net=Net(loss=0.05, dup=0.02, reorder=0.2))
    plan = plan_for(sim, MiB)
    run_big(sim, plan, within=20.0)
    orders = {tuple(sim.delivered[m]) for m in sim.seeds}
    assert len(orders) == 1
    (order,) = orders
    assert sorted(order) == sorted(p for v in plan.values() for p in v)  # byte for byte
    for payloads in plan.values():  # FIFO per origin
        assert [p for p in order if p in payloads] == payloads
    finish(sim)
    counters = sum((ep.counters for ep in sim.eps.values()), start=Counter())
    assert counters["nak.retransmitted"] > 0  # the loss really hit fragments


def test_one_mib_sends_arrive_intact_and_in_order_per_sender_under_loss():
    sim = Sim(6, 3, net=Net(loss=0.05, dup=0.02, reorder=0.2))
    sent = {
        m: [blob(50 + i, MiB), f"{m}:small".encode(), blob(60 + i, 300_000)]
        for i, m in enumerate(("m0", "m1"))
    }
    got: list = []
    for m, payloads in sent.items():
        for k, p in enumerate(payloads):
            sim.at(0.01 + 0.001 * k, lambda m=m, p=p: sim.eps[m].send("m2", p))

    real_flush = sim._flush

    def flush(addr: str) -> None:  # the simulator drops sends' events: catch m2's first
        if addr == "m2":
            got.extend(e for e in sim.eps["m2"].take_events() if type(e) is DeliverSend)
        real_flush(addr)

    sim._flush = flush
    assert sim.run_until(lambda: len(got) == 6, 10.0), len(got)
    for m, payloads in sent.items():
        assert [e.payload for e in got if e.origin == m] == payloads


def test_every_delivery_of_a_quiet_group_becomes_safe_with_fragments_too():
    sim = Sim(3, 3)
    plan = plan_for(sim, 200_000, per_member=6)
    run_big(sim, plan, within=10.0)
    sim.run(sim.now + 1.0)
    for m in sim.seeds:
        safes = [r for r in sim.trace.records if r.kind == "safe" and r.member == m]
        assert len(safes) == 18
    finish(sim)


def test_a_sender_crashing_mid_message_leaves_every_survivor_with_the_same_deliveries():
    sim = Sim(4, 5, net=Net(loss=0.02), params={"flow": {"window": 300_000}})
    plan = {m: [blob(i, MiB), f"{m}:after".encode()] for i, m in enumerate(sim.seeds)}
    for m, payloads in plan.items():
        for k, p in enumerate(payloads):
            sim.at(0.01 + k * 0.001, lambda m=m, p=p: sim.cast(m, p))
    sim.at(0.03, lambda: sim.crash("m2"))  # its 1 MiB is still streaming (window 300 kB)
    sim.at(0.05, lambda: sim.crash("m0"))  # and the sequencer with it
    sim.run(0.5)
    finish(sim)
    survivors = ["m1", "m3", "m4"]
    assert len({tuple(sim.delivered[m]) for m in survivors}) == 1
    delivered = set(sim.delivered["m1"])
    for m in survivors:  # every survivor's own messages made it, whole
        assert set(plan[m]) <= delivered


def test_a_joiner_mid_stream_delivers_only_whole_messages_of_its_views():
    sim = Sim(5, 3, net=Net(loss=0.02, reorder=0.1), params={"flow": {"window": 300_000}})
    plan = plan_for(sim, MiB, per_member=6)
    for m, payloads in plan.items():
        for k, p in enumerate(payloads):
            sim.at(0.01 + k * 0.05, lambda m=m, p=p: sim.cast(m, p))
    sim.at(0.08, lambda: sim.join("m3"))
    sim.run(2.0)
    finish(sim)
    every = {p for v in plan.values() for p in v}
    assert 0 < len(sim.delivered["m3"]) < len(every)
    assert set(sim.delivered["m3"]) <= every  # whole messages only, never a fragment


# --- random scenarios with fragmentation and a tiny flow window --------------------------------


@pytest.mark.parametrize(
    "members,count,start", [(3, 100, 700_000), (5, 80, 710_000), (7, 50, 720_000)]
)
@pytest.mark.timeout(300)
def test_random_scenarios_with_fragments_and_flow_control(members, count, start):
    """Every message of 3+ casts fragments (frag_size 16) and flow holds at most ~3 small casts in
    flight (window 300), so view changes regularly catch partial messages and queued casts."""
    params = {"frag": {"frag_size": 16}, "flow": {"window": 300}}
    failures = []
    for seed in range(start, start + count):
        r = run_scenario(seed, members, ALL_FAULTS, params=params, pad=20)
        if not r.ok:
            failures.append(check.report(r.trace, r.violations) + "\n  " + "; ".join(r.notes))
    assert not failures, f"{len(failures)} of {count} scenarios failed:\n" + "\n".join(failures[:3])


@pytest.mark.timeout(60)
def test_a_burst_held_back_by_flow_control_is_waited_for():
    """Regression (seed 8500192, L1): the scenario's end used to be judged while flow control
    still queued part of a burst (a 300-byte window under 20% loss); the run now waits for it."""
    params = {"frag": {"frag_size": 16}, "flow": {"window": 300}}
    r = run_scenario(8500192, 5, ALL_FAULTS, params=params, pad=20)
    assert r.ok, check.report(r.trace, r.violations)
