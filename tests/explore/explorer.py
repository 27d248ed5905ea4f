"""Bounded exhaustive exploration of the real layer code.

Why: random simulation finds bugs that need a likely schedule; some need an unlikely one. Here every
choice a network and a failure can make — which in-flight packet arrives next, whether it is lost,
when a member crashes or a joiner starts, when the next timer fires — is branched on, depth-first,
up to a bound, over the same `Endpoint` objects the simulator and the asyncio runtime drive. Worlds
are copied with pickle (local objects only; nothing from the network is ever unpickled, which is
why this lives with the tests, not in the package) and hashed to prune states already explored. Every terminal state's trace goes through `stack.check`.

A terminal state is one with no packet in flight and nothing left to do within the bound (or a
path that hit the depth bound). Time is global and advances only by firing the earliest timer, and
only once nothing is in flight: packets may be reordered arbitrarily between two timer firings.
A packet that crosses timer firings (a stale INSTALL, a JOIN sent before its sender got in) is a
`hold` move: set aside within the `delays` budget, time moves on, and a `release` move puts it back
in flight at any later point.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

from stack import check
from stack.compose import compose
from stack.record import Recorder
from stack.runtime import Endpoint
from stack.trace import CRASH, Trace
from stack.view import View

#: slow timers, so that a bounded exploration covers a few heartbeat rounds, not hundreds
EXPLORE_PARAMS: dict[str, dict[str, Any]] = {
    "suspect": {"interval": 0.5, "timeout": 1.2, "lease": 0.6, "verify": 0.6},
    "gms": {"retry_interval": 0.25, "flush_timeout": 2.0, "join_interval": 0.5, "fresh": 0.6},
    "nak": {"xmit_interval": 0.25},
    "stable": {"gossip_delay": 0.1, "gossip_interval": 0.5},
    "pt2pt": {"retry_interval": 0.5},
}


@dataclass
class Bounds:
    members: int = 3
    casts: int = 2  # per member
    crashes: int = 1
    joins: int = 1
    drops: int = 1
    #: packets that may be held back while time moves on, and delivered later (stale packets:
    #: an INSTALL or DONE of an older ballot, a JOIN from before the sender joined)
    delays: int = 0
    pauses: int = 0  # a member frozen (SIGSTOP) and later resumed with its queue and timers
    ticks: int = 6  # timer firings along one path
    depth: int = 40  # transitions along one path
    max_states: int = 200_000


@dataclass
class World:
    """Everything a branch owns: endpoints, packets in flight, time, budgets, the trace."""

    eps: dict[str, Endpoint]
    inflight: list[tuple[str, str, bytes]] = field(default_factory=list)
    now: float = 0.0
    casts_left: dict[str, int] = field(default_factory=dict)
    crashes: int = 0
    joins: int = 0
    drops: int = 0
    delays: int = 0
    held: list[tuple[str, str, bytes]] = field(default_factory=list)  # delayed packets
    pauses: int = 0
    paused: dict[str, list] = field(default_factory=dict)  # member -> packets held while frozen
    ticks: int = 0
    trace: Trace = field(default_factory=Trace)

    def record(self, member: str, kind: str, *data: Any) -> None:
        self.trace.add(self.now, member, kind, *data)

    def collect(self, addr: str) -> None:
        ep = self.eps[addr]
        for dest, data in ep.take_packets():
            if dest in self.eps and self.eps[dest].alive:
                self.inflight.append((addr, dest, data))
        ep.take_events()

    def key(self) -> bytes:
        """A digest of the protocol state (not the history): equal states are explored once."""
        trace, self.trace = self.trace, None  # type: ignore[assignment]
        try:
            blob = pickle.dumps(
                (
                    sorted(self.inflight),
                    self.eps,
                    self.now,
                    self.casts_left,
                    self.crashes,
                    self.joins,
                    self.drops,
                    self.delays,
                    sorted(self.held),
                    self.ticks,
                    self.pauses,
                    self.paused,
                )
            )
        finally:
            self.trace = trace
        return hashlib.blake2b(blob, digest_size=16).digest()


def new_world(bounds: Bounds, stack: str = "total") -> World:
    names = [f"m{i}" for i in range(bounds.members)]
    spec = compose(stack, {k: v for k, v in EXPLORE_PARAMS.items() if k in compose(stack).names})
    view = View((1, names[0]), tuple(names), True, tuple(names), (1, names[0]))
    world = World(eps={})
    for i, addr in enumerate(names):
        world.eps[addr] = Endpoint(
            addr,
            spec,
            seeds=names,
            initial_view=view,
            seed=i,
            recorder=Recorder(functools.partial(world.record, addr)),
            strict=True,
        )
        world.casts_left[addr] = bounds.casts
    for addr in names:
        world.collect(addr)
    world.joins = bounds.joins
    world.crashes = bounds.crashes
    world.drops = bounds.drops
    world.delays = bounds.delays
    world.pauses = bounds.pauses
    return world


def run_until(w: World, b: Bounds, pred, max_steps: int = 10_000) -> World:
    """The deterministic prefix: deliver everything in flight in order, then fire the next
    timer, until `pred(w)` holds. Exploration then branches from that point."""
    for _ in range(max_steps):
        if pred(w):
            return w
        if w.inflight:
            apply(w, ("deliver", 0), b)
        else:
            apply(w, ("tick",), b)
            w.ticks -= 1  # prefix ticks do not count against the bound
    raise RuntimeError("the prefix never reached its starting point")


def layer(w: World, addr: str, name: str) -> Any:
    """The live layer `name` of `addr`'s current view."""
    return next(x for x in w.eps[addr]._layers if x.name == name)


def coordinating(addr: str):
    """Predicate: `addr` has started a flush ballot as coordinator."""
    return lambda w: layer(w, addr, "gms").coord.ballot is not None


def _crash(w: World, addr: str) -> None:
    w.eps[addr].crash()
    w.record(addr, CRASH)
    w.inflight = [p for p in w.inflight if p[1] != addr]


def _coordinator_dies_mid_flush(w: World, b: Bounds) -> World:
    """m4 crashes, m0 starts the flush and dies in it; exploration starts at m1's takeover."""
    _crash(w, "m4")
    w = run_until(w, b, coordinating("m0"))
    apply(w, ("deliver", 0), b)  # a little of m0's flush reaches the others
    _crash(w, "m0")
    return run_until(w, b, coordinating("m1"))


def _flush_after_crash(w: World, b: Bounds) -> World:
    """m2 crashes; exploration starts when m0 runs the flush."""
    _crash(w, "m2")
    return run_until(w, b, coordinating("m0"))


def _origin_dies_after_partial_cast(w: World, b: Bounds) -> World:
    """m1 casts; the copy for m2 is lost, m0 (the sequencer) gets and orders it; m1 dies.
    Exploration starts at m0's flush, which must carry the message to m2 or to nobody."""
    apply(w, ("cast", "m1"), b)
    w.inflight = [p for p in w.inflight if not (p[0] == "m1" and p[1] == "m2")]
    w = run_until(w, b, lambda w: not any(p[0] == "m1" for p in w.inflight))
    _crash(w, "m1")
    return run_until(w, b, coordinating("m0"))


def _coordinator_naps_mid_flush(w: World, b: Bounds) -> World:
    """m4 crashes; m0 starts the flush, m1 casts just before it blocks (m0's copy is slow), m0
    proposes the next view and the flush cut, then freezes (SIGSTOP) with the confirmations
    about to arrive. Exploration decides when it wakes (after the others have given up on it
    and moved on, at the latest): it must not install on confirmations that went stale in its
    socket buffer, nor deliver m1's cast in the view the group has left."""
    _crash(w, "m4")
    w = run_until(w, b, coordinating("m0"))
    n = len(w.inflight)
    apply(w, ("cast", "m1"), b)  # cast just before m1 blocks; m0's copy comes late
    late = [p for p in w.inflight[n:] if p[1] == "m0"]
    w.inflight = [p for p in w.inflight if p not in late]
    w = run_until(w, b, lambda w: layer(w, "m0", "gms").coord.cut is not None)
    w.paused["m0"] = [(src, data) for src, _, data in late]  # in its socket buffer on waking
    return w


#: name -> (members, prefix, bounds): deterministic runs to the point where exploration starts,
#: and what the exploration may do from there (main_bounds; a nap needs many timer firings)
SCENARIOS: dict[str, tuple[int, Any, dict[str, int]]] = {
    "flush-after-crash": (3, _flush_after_crash, {}),
    "origin-dies-after-partial-cast": (3, _origin_dies_after_partial_cast, {}),
    "coordinator-dies-mid-flush": (5, _coordinator_dies_mid_flush, {}),
    "join": (3, lambda w, b: w, {"joins": 1}),
    "coordinator-naps-mid-flush": (
        5,
        _coordinator_naps_mid_flush,
        {"crashes": 0, "drops": 0, "delays": 0, "ticks": 80, "depth": 400},
    ),
}


def moves(w: World, b: Bounds) -> list[tuple]:
    out: list[tuple] = [("deliver", i) for i in range(len(w.inflight))]
    if w.drops:
        out += [("drop", i) for i in range(len(w.inflight))]
    if w.delays:
        out += [("hold", i) for i in range(len(w.inflight))]
    out += [("release", i) for i in range(len(w.held))]
    for addr, left in w.casts_left.items():
        if left and w.eps[addr].alive and addr not in w.paused:
            out.append(("cast", addr))
    if w.crashes:
        out += [("crash", a) for a, ep in w.eps.items() if ep.alive]
    if w.joins:
        out.append(("join",))
    if w.pauses:
        out += [("pause", a) for a, ep in w.eps.items() if ep.alive and a not in w.paused]
    if w.ticks < b.ticks and not w.inflight:  # time moves on once the network is quiet
        out.append(("tick",))
    # (after tick: depth-first, a frozen member first sleeps as long as the bound allows)
    out += [("resume", a) for a in w.paused]
    return out


def apply(w: World, move: tuple, b: Bounds) -> None:
    kind = move[0]
    if kind == "hold":
        w.delays -= 1
        w.held.append(w.inflight.pop(move[1]))
    elif kind == "release":
        w.inflight.append(w.held.pop(move[1]))
    elif kind in ("deliver", "drop"):
        src, dst, data = w.inflight.pop(move[1])
        if kind == "drop":
            w.drops -= 1
        elif dst in w.paused:
            w.paused[dst].append((src, data))  # waits in its socket buffer
        elif w.eps[dst].alive:
            w.eps[dst].receive(src, data, w.now)
            w.collect(dst)
    elif kind == "pause":
        w.pauses -= 1
        w.paused[move[1]] = []
    elif kind == "resume":
        held = w.paused.pop(move[1])
        ep = w.eps[move[1]]
        for src, data in held:  # a stopped process wakes to its socket buffer, then its timers
            ep.receive(src, data, w.now)
        ep.fire_timers(w.now)
        w.collect(move[1])
    elif kind == "cast":
        addr = move[1]
        n = b.casts - w.casts_left[addr]
        w.casts_left[addr] -= 1
        w.eps[addr].cast(f"{addr}:{n}".encode())
        w.collect(addr)
    elif kind == "crash":
        w.crashes -= 1
        w.eps[move[1]].crash()
        w.record(move[1], CRASH)
        w.inflight = [p for p in w.inflight if p[1] != move[1]]
        w.held = [p for p in w.held if p[1] != move[1]]
    elif kind == "join":
        w.joins -= 1
        any_ep = next(iter(w.eps.values()))
        addr = f"m{len(w.eps)}"
        seeds = [a for a in w.eps if a != addr]
        w.eps[addr] = Endpoint(
            addr,
            any_ep.spec,
            seeds=seeds,
            seed=len(w.eps),
            now=w.now,
            recorder=Recorder(functools.partial(w.record, addr)),
            strict=True,
        )
        w.casts_left[addr] = 0
        w.collect(addr)
    elif kind == "tick":
        w.ticks += 1
        due = [
            (d, a)
            for a, ep in w.eps.items()
            if ep.alive and a not in w.paused and (d := ep.next_deadline())
        ]
        if due:
            when, addr = min(due)
            w.now = max(w.now, when)
            w.eps[addr].fire_timers(w.now)
            w.collect(addr)


@dataclass
class Report:
    states: int = 0
    terminals: int = 0
    pruned: int = 0
    seconds: float = 0.0
    violation: str | None = None
    path: list[tuple] = field(default_factory=list)
    #: the time budget ran out before the state bound was reached
    timed_out: bool = False

    def __str__(self) -> str:
        verdict = "no violation" if self.violation is None else "VIOLATION"
        cut = " (time budget ran out)" if self.timed_out else ""
        return (
            f"{self.states} states, {self.terminals} terminal paths checked, {self.pruned} "
            f"revisits pruned, {self.seconds:.1f}s{cut}: {verdict}"
        )


def root_world(
    b: Bounds, stack: str = "total", scenario: str | None = None
) -> tuple[World, Bounds]:
    """Where exploration starts: a fresh group, or the end of a scenario's deterministic prefix."""
    if scenario is None:
        return new_world(b, stack), b
    members, prefix, _ = SCENARIOS[scenario]
    b = dataclasses.replace(b, members=members)
    return prefix(new_world(b, stack), b), b


def replay(
    path: list[tuple], bounds: Bounds, stack: str = "total", scenario: str | None = None
) -> str | None:
    """Follow `path` (from a Report) on whatever code is loaded now; the checker's verdict on the
    trace it leads to ("" if clean), or None if the path does not apply (the run diverged)."""
    w, b = root_world(bounds, stack, scenario)
    for move in path:
        if move not in moves(w, b):
            return None
        try:
            apply(w, move, b)
        except Exception as e:  # the real code raises on this path: a finding of its own
            return f"CRASH {type(e).__name__}: {e}"
    rep = Report()
    return "" if _ok(w, rep, path) else rep.violation


def explore(
    bounds: Bounds | None = None,
    stack: str = "total",
    scenario: str | None = None,
    seconds: float | None = None,
) -> Report:
    """Depth-first over every schedule within `bounds` (from a scenario's deterministic prefix,
    if one is named); stop at the first violation, or when `seconds` have passed."""
    rep = Report()
    t0 = time.perf_counter()
    deadline = None if seconds is None else t0 + seconds
    root, b = root_world(bounds or Bounds(), stack, scenario)
    seen: set[bytes] = {root.key()}
    todo: list[tuple[World, list[tuple]]] = [(root, [])]
    while todo and rep.states < b.max_states:
        if deadline is not None and time.perf_counter() > deadline:
            rep.timed_out = True
            break
        w, path = todo.pop()
        rep.states += 1
        options = moves(w, b) if len(path) < b.depth else []
        if not options:
            rep.terminals += 1
            if not _ok(w, rep, path):
                break
            continue
        blob = pickle.dumps(w)
        for move in reversed(options):
            child: World = pickle.loads(blob)  # noqa: S301 - our own objects, copied in memory
            try:
                apply(child, move, b)
            except Exception as e:  # the stack raised: that is a finding too
                rep.violation = f"CRASH {type(e).__name__}: {e}"
                rep.path = [*path, move]
                rep.seconds = time.perf_counter() - t0
                return rep
            k = child.key()
            if k in seen:
                rep.pruned += 1
                continue
            seen.add(k)
            todo.append((child, [*path, move]))
    rep.seconds = time.perf_counter() - t0
    return rep


#: counters that only a broken protocol invariant can raise (no garbage is injected here)
INVARIANT_COUNTERS = (".bad_", "cut_below_delivered")


def _ok(w: World, rep: Report, path: list[tuple]) -> bool:
    violations = [v.describe() for v in check.check(w.trace)]
    for addr, ep in w.eps.items():
        broken = {k: n for k, n in ep.counters.items() if any(c in k for c in INVARIANT_COUNTERS)}
        if broken:
            violations.append(f"[INTERNAL] {addr} counted {broken}")
    if violations:
        rep.violation = "; ".join(violations[:3])
        rep.path = path
        return False
    return True


def main_bounds(scenario: str) -> Bounds:
    """The bounds of `make explore` and of the mutant hunts' explorer column: one cast per
    member, one crash, one lost and one delayed packet, 12 timer firings; what the scenario
    says otherwise (a join in the join scenario)."""
    b = Bounds(casts=1, crashes=1, joins=0, drops=1, delays=1, ticks=12, depth=80)
    return dataclasses.replace(b, **SCENARIOS[scenario][2])


def main(argv: list[str] | None = None) -> int:
    """`python tests/explore/explorer.py [MAX_STATES]`: every scenario at a larger bound."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    budget = int(args[0]) if args else 20_000
    bad = 0
    for name in SCENARIOS:
        r = explore(dataclasses.replace(main_bounds(name), max_states=budget), scenario=name)
        print(f"{name:32s} {r}")
        if r.violation:
            bad += 1
            print(f"  {r.violation}\n  path: {r.path}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
