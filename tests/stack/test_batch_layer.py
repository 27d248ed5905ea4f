"""The batch layer: casts of one tick as one message, unpacked in order, Safe translated, flushes
before a view change; and whole groups in the simulator with bursts and faults, checked."""

from __future__ import annotations

import msgpack
import pytest
from cohort.stack import check
from cohort.stack.events import BlockOk, Cast, Deliver, Safe, Timer
from cohort.stack.layers.batch import BATCH, Batch
from cohort.stack.sim import Net, Sim
from layerkit import fire, make


def test_casts_of_one_tick_leave_as_one_message_and_a_lone_cast_as_itself():
    b, ctx = make(Batch)
    for p in (b"a", b"b", b"c"):
        b.down(Cast(p, []))
    assert ctx.downs == [] and ctx.timers == [(0.0, "batch")]
    fire(b, ctx, "batch")
    assert ctx.downs == [Cast(msgpack.packb([b"a", b"b", b"c"]), [BATCH])]
    ctx.take()
    b.down(Cast(b"solo", []))
    fire(b, ctx, "batch")
    assert ctx.downs == [Cast(b"solo", [None])]


def test_a_full_batch_leaves_at_once():
    b, ctx = make(Batch, max_bytes=10)
    b.down(Cast(b"12345", []))
    b.down(Cast(b"67890", []))
    assert len(ctx.downs) == 1 and ctx.downs[0].hdrs == [BATCH]


def test_deliveries_are_unpacked_in_order_and_safe_counts_casts():
    b, ctx = make(Batch)
    b.up(Deliver(1, msgpack.packb([b"x", b"y"]), [BATCH]))
    b.up(Deliver(2, b"z", [None]))
    assert [(e.origin, e.payload) for e in ctx.ups] == [(1, b"x"), (1, b"y"), (2, b"z")]
    ctx.take()
    b.up(Safe(1))
    b.up(Safe(2))
    assert ctx.ups == [Safe(2), Safe(3)]


def test_a_malformed_batch_is_counted_and_keeps_the_safe_count_aligned():
    b, ctx = make(Batch)
    b.up(Deliver(1, b"\xc1garbage", [BATCH]))
    b.up(Deliver(1, msgpack.packb([1, 2]), [BATCH]))  # not a list of bytes
    b.up(Deliver(2, b"ok", [None]))
    assert ctx.counters["batch.bad_batch"] == 2
    ctx.take()
    b.up(Safe(3))
    assert ctx.ups == [Safe(1)]


def test_block_ok_waits_until_the_last_batch_came_back_up():
    b, ctx = make(Batch)
    b.down(Cast(b"late", []))
    b.down(BlockOk())
    assert ctx.downs == [Cast(b"late", [None])]  # sent, BlockOk held
    b.up(Timer(0.0, "deferred"))
    assert ctx.downs[-1] == BlockOk()
    ctx.take()
    b.down(BlockOk())  # nothing queued: passes at once
    assert ctx.downs == [BlockOk()]


@pytest.mark.parametrize("seed", range(12))
def test_bursts_with_crashes_partitions_and_loss_keep_every_property(seed):
    sim = Sim(seed=7000 + seed, n=5, stack="total-batch", net=Net(loss=0.05, reorder=0.05))
    for k in range(15):
        for m in sim.seeds:  # five casts at the same instant: one batch each
            sim.at(
                0.03 * k, lambda m=m, k=k: [sim.cast(m, f"{m}:{k}:{j}".encode()) for j in range(5)]
            )
    victim = sim.seeds[seed % 5]
    sim.at(0.11 + 0.01 * seed, lambda: sim.crash(victim))
    other = sim.seeds[(seed + 2) % 5]
    rest = [m for m in sim.seeds if m != other]
    sim.at(0.2, lambda: sim.partition([other], rest))
    sim.at(0.6, sim.heal)
    sim.batches_seen = 0

    def count() -> None:
        sim.batches_seen += sum(
            ep.dump()["batch"]["batches"] for ep in sim.eps.values() if ep.alive
        )

    sim.at(0.1, count)
    sim.run(0.8)
    sim.run_until(sim.converged, within=10.0)
    sim.trace.live, sim.trace.liveness = tuple(sim.live()), True
    check.assert_ok(sim.trace)
    # the bursts really travelled as batches (counted per view, so look before the last view)
    assert sim.batches_seen > 0
