"""Throughput under packet loss, on virtual time: where a lossy network makes the group wait.

Why: on real processes 10% inbound loss at each of 3 members cut replicated writes by 97% with no
view change, so the time went into waiting (repair timers, stability, credits), not into work. The
simulator reproduces the waiting exactly and without CPU noise: every member runs the same
`Endpoint`, packets are lost with `Net(loss=...)`, and nothing costs virtual time but the network
delay and the timers, so the messages delivered per virtual second measure the protocol alone.

The load is a closed loop, as in `cohort bench stack` and as clients of replicated objects make:
each sender keeps `window` of its own casts outstanding, and a cast stops being outstanding when the
sender delivers it (`ack="deliver"`) or when it is reported `Safe` (`ack="safe"`, what a reply to a
client waits for). Flow control's backpressure is respected: a blocked sender casts nothing.

Reported per run: casts delivered at every member per virtual second, the p50/p99 of the time
from cast to delivery at all members and from cast to Safe at the origin, and a profile (timers
fired per layer and token, how long each gap in a FIFO stream stayed open before its repair, how long
flow control held the senders blocked, the layers' counters).

    python -m cohort.replication.cli.bench_loss [--stack total,total-batch] [--loss 0,0.01,0.05,0.1] [--ack deliver]
        [--senders all|one] [--window 500] [--seconds 2] [--timing real|sim] [--profile]
    python -m cohort.replication.cli.bench_loss real [--loss 0,0.1] ...   (real processes: see cohort.replication.cli.bench_stack)
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cohort.stack.events import Backpressure, Deliver, Safe
from cohort.stack.sim import SIM_PARAMS, Net, Sim


def real_timing() -> dict[str, dict[str, Any]]:
    """The timings the real runtime uses (the layers' defaults and `cohort.stack.transport.group.REAL_PARAMS`) in
    place of the simulator's faster ones, so that virtual numbers speak about the deployment."""
    import dataclasses

    from cohort.stack.layers import REGISTRY
    from cohort.stack.transport.group import REAL_PARAMS

    out: dict[str, dict[str, Any]] = {}
    for layer, sim_params in SIM_PARAMS.items():
        defaults = {f.name: f.default for f in dataclasses.fields(REGISTRY[layer].Params)}
        out[layer] = {k: defaults[k] for k in sim_params}
    for layer, real in REAL_PARAMS.items():
        out.setdefault(layer, {}).update(real)
    return out


class CpuSim(Sim):
    """The simulator with a cost per received packet: each member is one server that handles its
    packets in arrival order, `cpu` virtual seconds each, so a lossless run is bounded by work, as
    on real processes, and retransmissions cost what they cost there."""

    cpu: float = 20e-6

    def __init__(self, *args: Any, cpu: float = 20e-6, **kw: Any) -> None:
        self.cpu = cpu
        self.busy: dict[str, float] = {}
        super().__init__(*args, **kw)

    def _push(self, t: float, item: tuple) -> None:
        if item[0] == "pkt" and self.cpu:
            dst = item[2]
            t = max(t, self.busy.get(dst, 0.0)) + self.cpu
            self.busy[dst] = t
        super()._push(t, item)


@dataclass
class Result:
    stack: str
    loss: float
    ack: str
    rate: float  # casts delivered at every member per virtual second
    p50_all_ms: float
    p99_all_ms: float
    p50_safe_ms: float
    p99_safe_ms: float
    views: int
    profile: dict = field(default_factory=dict)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def run(
    stack: str = "total",
    loss: float = 0.0,
    *,
    members: int = 3,
    senders: str = "all",
    window: int = 500,
    size: int = 64,
    seconds: float = 2.0,
    warmup: float = 0.2,
    ack: str = "deliver",
    timing: str = "real",
    params: dict | None = None,
    seed: int = 1,
    profile: bool = False,
    cpu: float = 20e-6,
) -> Result:
    """One closed-loop run; see the module docstring."""
    base = real_timing() if timing == "real" else {}
    merged = {k: dict(v) for k, v in base.items()}
    for k, v in (params or {}).items():
        merged.setdefault(k, {}).update(v)
    net = Net(loss=loss, delay=(0.0001, 0.0005))
    sim = CpuSim(seed, members, stack=stack, params=merged, net=net, record=False, cpu=cpu)
    names = list(sim.seeds)
    sending = names if senders == "all" else names[:1]
    pad = b"x" * max(0, size - 12)
    start, end = warmup, warmup + seconds
    cast_at: dict[bytes, float] = {}
    got: dict[bytes, int] = {}  # deliveries so far, per message
    all_lat: list[float] = []
    safe_lat: list[float] = []
    delivered = {m: 0 for m in names}  # in the measuring window
    outstanding = {m: 0 for m in names}
    seq = {m: 0 for m in names}
    blocked_since: dict[str, float | None] = {m: None for m in names}
    blocked_time = {m: 0.0 for m in names}
    order: dict[str, list[bytes]] = {m: [] for m in names}  # delivered in this view, for Safe
    safe_done = {m: 0 for m in names}
    views = Counter()
    refill_due: set[str] = set()

    def refill(m: str) -> None:
        """Cast one message if the window and flow control allow; casting costs `cpu` too."""
        refill_due.discard(m)
        if sim.now >= end or blocked_since[m] is not None or outstanding[m] >= window:
            return
        if sim.cpu and sim.busy.get(m, 0.0) > sim.now:
            schedule(m, sim.busy[m])
            return
        seq[m] += 1
        mid = b"%s:%d:" % (m.encode(), seq[m])
        cast_at[mid] = sim.now
        outstanding[m] += 1
        if sim.cpu:
            sim.busy[m] = max(sim.now, sim.busy.get(m, 0.0)) + sim.cpu
        sim.cast(m, mid + pad)
        schedule(m)

    def schedule(m: str, t: float | None = None) -> None:
        if m in sending and m not in refill_due:
            refill_due.add(m)
            sim.at(sim.now if t is None else t, lambda: refill(m))

    def on_events(m: str, events: list) -> None:
        now = sim.now
        for ev in events:
            cls = type(ev)
            if cls is Deliver:
                mid = ev.payload[: ev.payload.index(b":", 1 + ev.payload.index(b":")) + 1]
                order[m].append(mid)
                if start <= now < end:
                    delivered[m] += 1
                k = got.get(mid, 0) + 1
                got[mid] = k
                if k == members and start <= cast_at.get(mid, -1) < end:
                    all_lat.append(now - cast_at[mid])
                if ack == "deliver" and ev.origin == m and mid in cast_at:
                    outstanding[m] -= 1
                    schedule(m)
            elif cls is Safe:
                for mid in order[m][safe_done[m] : ev.count]:
                    if mid.startswith(m.encode() + b":") and mid in cast_at:
                        if start <= cast_at[mid] < end:
                            safe_lat.append(now - cast_at[mid])
                        if ack == "safe":
                            outstanding[m] -= 1
                            schedule(m)
                safe_done[m] = max(safe_done[m], ev.count)
            elif cls is Backpressure:
                if ev.blocked and blocked_since[m] is None:
                    blocked_since[m] = now
                elif not ev.blocked and blocked_since[m] is not None:
                    if now > start:
                        blocked_time[m] += min(now, end) - max(blocked_since[m], start)
                    blocked_since[m] = None
                    schedule(m)
            elif type(ev).__name__ == "View":
                views[m] += 1
                order[m], safe_done[m] = [], 0

    timers: Counter = Counter()
    gaps: list[float] = []
    for m in names:
        ep = sim.eps[m]
        take = ep.take_events

        def take_events(m=m, take=take) -> list:
            events = take()
            on_events(m, events)
            return events

        ep.take_events = take_events  # type: ignore[method-assign]
        if profile:
            _instrument(ep, timers, gaps)
    for m in sending:
        sim.at(0.05, lambda m=m: refill(m))
    sim.run(end)
    worst = min(delivered.values())
    prof: dict = {}
    if profile:
        counters: Counter = Counter()
        for ep in sim.eps.values():
            counters.update(ep.counters)
        prof = {
            "timers_per_s": {k: round(v / (end + 0.0), 1) for k, v in timers.most_common()},
            "gaps": len(gaps),
            "gap_p50_ms": round(_pct(gaps, 0.5), 2),
            "gap_p99_ms": round(_pct(gaps, 0.99), 2),
            "gap_max_ms": round(max(gaps) * 1e3, 2) if gaps else 0.0,
            "flow_blocked_frac": {m: round(blocked_time[m] / seconds, 3) for m in sending},
            "counters_per_s": {k: round(v / end, 1) for k, v in sorted(counters.items())},
        }
    return Result(
        stack,
        loss,
        ack,
        worst / seconds,
        _pct(all_lat, 0.5),
        _pct(all_lat, 0.99),
        _pct(safe_lat, 0.5),
        _pct(safe_lat, 0.99),
        sum(views.values()),
        prof,
    )


def _instrument(ep: Any, timers: Counter, gaps: list[float]) -> None:
    """Count the timers that fire, by layer and token, and time each gap of nak's streams."""
    fire = ep.fire_timers

    def fire_timers(now: float) -> None:
        for t, _, gen, i, token in ep._timers:
            if t <= now and gen == ep._gen:
                timers[f"{ep._layers[i].name}.{token}"] += 1
        fire(now)

    ep.fire_timers = fire_timers  # type: ignore[method-assign]
    opened: dict[int, float] = {}
    run = ep._run

    def run_and_watch() -> None:
        run()
        nak = next((la for la in ep._layers if la.name == "nak"), None)
        if nak is None:
            return
        for o, (nxt, tgt) in enumerate(zip(nak.next, nak.target)):
            if tgt > nxt and o not in opened:
                opened[o] = ep.now
            elif tgt <= nxt and o in opened:
                gaps.append(ep.now - opened.pop(o))

    ep._run = run_and_watch  # type: ignore[method-assign]


def _fmt(r: Result) -> str:
    return (
        f"{r.stack:<12} loss {r.loss:4.2f}  {r.rate:11,.0f} msgs/s   all: p50 {r.p50_all_ms:7.2f}"
        f" p99 {r.p99_all_ms:7.2f} ms   safe: p50 {r.p50_safe_ms:7.2f} p99 {r.p99_safe_ms:7.2f} ms"
        f"   views+{r.views}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cohort.replication.cli.bench_loss", description=__doc__
    )
    ap.add_argument("mode", nargs="?", choices=["sim", "real"], default="sim")
    ap.add_argument("--stack", default="total,total-batch")
    ap.add_argument("--loss", default="0,0.01,0.05,0.1")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--senders", choices=["all", "one"], default="all")
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--ack", choices=["deliver", "safe"], default="deliver")
    ap.add_argument("--timing", choices=["real", "sim"], default="real")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--cpu", type=float, default=20e-6, help="virtual seconds per packet received")
    args = ap.parse_args(argv)
    losses = [float(x) for x in args.loss.split(",")]
    stacks = args.stack.split(",")
    if args.mode == "real":
        from cohort.replication.cli.bench_stack import bench_loss

        return bench_loss(args.members, args.size, args.seconds, args.window, stacks, losses)
    print(
        f"{args.members} members, {args.senders} sending {args.size} B casts, window "
        f"{args.window} until {args.ack}, {args.seconds} virtual s, {args.timing} timings"
    )
    for stack in stacks:
        base = None
        for loss in losses:
            r = run(
                stack,
                loss,
                members=args.members,
                senders=args.senders,
                window=args.window,
                size=args.size,
                seconds=args.seconds,
                ack=args.ack,
                timing=args.timing,
                seed=args.seed,
                profile=args.profile,
                cpu=args.cpu,
            )
            base = base or r.rate
            print(_fmt(r) + f"   ({r.rate / base:.0%} of lossless)")
            if args.profile:
                print("  " + json.dumps(r.profile, indent=None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
