"""Bounded exhaustive exploration of the real layer code.

Why: random simulation finds bugs that need a likely schedule; some need an unlikely one. Here every
choice a network and a failure can make — which in-flight packet arrives next, whether it is lost,
when a member crashes or a joiner starts, when the next timer fires — is branched on, depth-first,
up to a bound, over the same `Endpoint` objects the simulator and the asyncio runtime drive. Worlds
are hashed to prune states already explored (`explore_world`: members are interned snapshots and
local transitions are memoised). Every terminal state's trace goes through `cohort.stack.check`.

A terminal state is one with no packet in flight and nothing left to do within the bound (or a
path that hit the depth bound). Time is global and advances only by firing the earliest timer, and
only once nothing is in flight: packets may be reordered arbitrarily between two timer firings.
A packet that crosses timer firings (a stale INSTALL, a JOIN sent before its sender got in) is a
`hold` move: set aside within the `delays` budget, time moves on, and a `release` move puts it back
in flight at any later point. An exploration is *exhaustive* when its to-do list ran dry with no
path cut by the depth bound: then every schedule within the bounds was covered (`Report.status`).

Bounds (`Bounds`): members, casts per member, crashes, joins, lost packets (`drops`), held
packets (`delays`), pauses, timer firings (`ticks`), path length (`depth`), and `reorders`: how
many deliveries may overtake an older packet *to the same member* (None: any number). Packets to
different members are always delivered in every order. `settle` > 0 lets every terminal world run
on without faults for that many virtual seconds and then also checks liveness (L1, L2; owed
while a majority of the latest primary view's members lives).

Partial-order reduction (`por=False` turns it off)
--------------------------------------------------
*Independence* (`explore_world.independent`): two moves commute when each is a delivery, drop,
hold, release or cast, they concern different packets, different members (a cast its caster, the
others the packet's destination) and not one shared budget, and not one of them installs a view
while the other installs a view or delivers. Either order then gives the same members (an endpoint
is deterministic in its own state, its input and `now`, which only a tick changes), the same
multiset in flight (the state key sorts it) and the same records, interleaved differently.

*Sleep sets* (Godefroid 1996): after move `a` is explored from a world, a later sibling `m`
carries `a` in its sleep set while the moves along its path stay independent of `a`; a move in
the sleep set is not made (a reordering of it was explored). With state hashing, a revisited world
is pruned only if the earlier visit slept on no more moves and was not deeper; otherwise it is
explored again with the intersection (the usual fix for sleep sets with state caching).

*Persistent sets* (`_persistent`, only with `reorders` spent or 0, no pause): in a world where
member d has a packet in flight, let h be the oldest. T = d's moves: deliver h, drop h, hold h,
cast at d, crash d; if none of them installs or delivers, only T is explored. Why that loses no
terminal outcome: a path to a terminal world must consume h, so it contains a move of T; let t be
the first. Every earlier move is a delivery/cast at another member (appends to d's queue behind h,
never touches d), a drop/hold/release of another packet, a crash of another member (packets to it
are filtered either way), or a join; none touches d's state or h, and a tick cannot come while h
is in flight. So t commutes to the front, where it is enabled and in T. Shared budgets do not
spoil the swap: both moves are on the path, so the budget covers both in either order. (One
exception: a drop or release of another packet to d before `t = crash d`; the swapped path skips
it and ends with that budget unspent: the same records, one more unit left.) t neither installs
nor delivers, so its records commute with the others' for the checker (below).
`test_explore` checks on small bounds that the reduced search ends in the same set of outcomes
(`outcome`: each member's view, deliveries and safe count, and what is in flight) as the full one.
State keys cannot be compared: a pickled endpoint is not a canonical form of its state (object
sharing and set order depend on its history), which costs revisits, not coverage.

What the checker sees. `cohort.stack.check` numbers records by global step, so reordering independent
moves renumbers records of different members. Every property but two compares records of one
member (M1-M3, D2, V1, V4, S1, O1), compares sets or per-member sequences (M4, M7, V3, V5, O3/O5),
or compares a send with its delivery (D1), which are causally ordered in every reordering. The two
exceptions compare steps across members: M8's stale-view rule (a delivery in view v after the first
install of a primary successor of v without the deliverer) and M5 (the first install of a view
supplies its acceptor list). That is why a move that installs is dependent on every move that
installs or delivers, and why T above must neither install nor deliver: the relative order of
those records is the same in every schedule of one equivalence class, so each verdict is too.
Times are global `now`, equal in every reordering. As before this change, the state key leaves
the trace out: a world reached by two histories is checked along the first only (the verdict is
taken as a function of the state).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from cohort.stack import check
from cohort.stack.compose import compose
from cohort.stack.trace import INSTALL
from cohort.stack.view import View
from explore_world import (
    DLV,
    INS,
    Bounds,
    Store,
    World,
    apply,
    crash,
    independent,
    moves,
    new_endpoint,
)

__all__ = [
    "EXPLORE_PARAMS",
    "SCENARIOS",
    "Bounds",
    "Report",
    "World",
    "apply",
    "explore",
    "main_bounds",
    "moves",
    "replay",
    "root_world",
]

#: slow timers, so that a bounded exploration covers a few heartbeat rounds, not hundreds
EXPLORE_PARAMS: dict[str, dict[str, Any]] = {
    "suspect": {"interval": 0.5, "timeout": 1.2, "lease": 0.6, "verify": 0.6},
    "gms": {"retry_interval": 0.25, "flush_timeout": 2.0, "join_interval": 0.5, "fresh": 0.6},
    "nak": {"xmit_interval": 0.25},
    "stable": {"gossip_delay": 0.1, "gossip_interval": 0.5},
    "pt2pt": {"retry_interval": 0.5},
}


def new_world(bounds: Bounds, stack: str = "total") -> World:
    names = [f"m{i}" for i in range(bounds.members)]
    spec = compose(stack, {k: v for k, v in EXPLORE_PARAMS.items() if k in compose(stack).names})
    view = View((1, names[0]), tuple(names), True, tuple(names), (1, names[0]))
    world = World(Store(spec))
    for addr in names:
        world.casts_left[addr] = bounds.casts
        world.alive[addr] = True
        world.eps[addr] = b""
    for i, addr in enumerate(names):
        world.put(addr, new_endpoint(world.store, addr, seeds=names, initial_view=view, seed=i))
    world.joins = bounds.joins
    world.crashes = bounds.crashes
    world.drops = bounds.drops
    world.delays = bounds.delays
    world.pauses = bounds.pauses
    world.reorders = bounds.reorders or 0
    return world


def run_until(w: World, b: Bounds, pred, max_steps: int = 10_000) -> World:
    """The deterministic prefix: deliver everything in flight in order, then fire the next
    timer, until `pred(w)` holds. Exploration then branches from that point."""
    for _ in range(max_steps):
        if pred(w):
            return w
        if w.inflight:
            apply(w, ("deliver", w.inflight[0]), b)
        else:
            apply(w, ("tick",), b)
            w.ticks -= 1  # prefix ticks do not count against the bound
    raise RuntimeError("the prefix never reached its starting point")


def layer(w: World, addr: str, name: str) -> Any:
    """A copy of the live layer `name` of `addr`'s current view (read it, do not drive it)."""
    return next(x for x in w.endpoint(addr)._layers if x.name == name)


def coordinating(addr: str):
    """Predicate: `addr` has started a flush ballot as coordinator."""
    return lambda w: layer(w, addr, "gms").coord.ballot is not None


def _coordinator_dies_mid_flush(w: World, b: Bounds) -> World:
    """m4 crashes, m0 starts the flush and dies in it; exploration starts at m1's takeover."""
    crash(w, "m4")
    w = run_until(w, b, coordinating("m0"))
    apply(w, ("deliver", w.inflight[0]), b)  # a little of m0's flush reaches the others
    crash(w, "m0")
    return run_until(w, b, coordinating("m1"))


def _flush_after_crash(w: World, b: Bounds) -> World:
    """m2 crashes; exploration starts when m0 runs the flush."""
    crash(w, "m2")
    return run_until(w, b, coordinating("m0"))


def _origin_dies_after_partial_cast(w: World, b: Bounds) -> World:
    """m1 casts; the copy for m2 is lost, m0 (the sequencer) gets and orders it; m1 dies at once
    and its watchers learn it from the closed connection (`cohort.stack.transport.fdsock`), before any repair.
    Exploration starts at m0's flush, which must carry the message to m2 or to nobody."""
    apply(w, ("cast", "m1"), b)
    to_m0 = [p for p in w.inflight if p[0] == "m1" and p[1] == "m0"]
    w.inflight = [p for p in w.inflight if p[0] != "m1" or p[1] == "m0"]  # m2's copy is lost
    for p in to_m0:
        apply(w, ("deliver", p), b)
    crash(w, "m1")
    for watcher in ("m0", "m2"):
        w.local(watcher, ("suspect", "m1"))
    return run_until(w, b, coordinating("m0"))


def _coordinator_naps_mid_flush(w: World, b: Bounds) -> World:
    """m4 crashes; m0 starts the flush, m1 casts just before it blocks (m0's copy is slow), m0
    proposes the next view and the flush cut, then freezes (SIGSTOP) with the confirmations
    about to arrive. Exploration decides when it wakes (after the others have given up on it
    and moved on, at the latest): it must not install on confirmations that went stale in its
    socket buffer, nor deliver m1's cast in the view the group has left."""
    crash(w, "m4")
    w = run_until(w, b, coordinating("m0"))
    n = len(w.inflight)
    apply(w, ("cast", "m1"), b)  # cast just before m1 blocks; m0's copy comes late
    late = [p for p in w.inflight[n:] if p[1] == "m0"]
    w.inflight = [p for p in w.inflight if p not in late]
    w = run_until(w, b, lambda w: layer(w, "m0", "gms").coord.cut is not None)
    w.paused["m0"] = [(src, data) for src, _, data in late]  # in its socket buffer on waking
    return w


def _one_way_cut(w: World, b: Bounds) -> World:
    """m0 stops hearing m2 (a one-way link failure) while m1 still does; exploration starts when
    m0 runs the flush that excludes m2, and the link stays cut."""
    w.cut = frozenset({("m2", "m0")})
    return run_until(w, b, coordinating("m0"))


def _order_seen_by_two(w: World, b: Bounds) -> World:
    """Only the sequencer m0 and m1 hear m0 (links to m2-m4 cut); m3, m2 and m4 cast, m0 orders,
    m1 delivers in that order; then m0 and m1 crash and the links heal. Exploration starts with
    the survivors taking over: whatever m1 marked Safe, they must deliver in m1's order."""
    w.cut = frozenset((a, c) for a in ("m0", "m1") for c in ("m2", "m3", "m4"))
    for addr in ("m3", "m2", "m4"):
        apply(w, ("cast", addr), b)
    w = run_until(w, b, lambda w: w.now >= 0.6)
    crash(w, "m0")
    crash(w, "m1")
    w.cut = frozenset()
    return w


#: name -> (members, prefix, bounds): deterministic runs to the point where exploration starts,
#: and what the exploration may do from there (main_bounds; a nap needs many timer firings)
SCENARIOS: dict[str, tuple[int, Any, dict[str, int]]] = {
    "flush-after-crash": (3, _flush_after_crash, {}),
    "origin-dies-after-partial-cast": (3, _origin_dies_after_partial_cast, {}),
    "coordinator-dies-mid-flush": (5, _coordinator_dies_mid_flush, {}),
    "join": (3, lambda w, b: w, {"joins": 1}),
    "order-seen-by-two": (
        5,
        _order_seen_by_two,
        {
            "casts": 0,
            "crashes": 0,
            "drops": 0,
            "delays": 0,
            "reorders": 0,
            "ticks": 2,
            "settle": 8.0,
        },
    ),
    "one-way-cut": (3, _one_way_cut, {"crashes": 0, "reorders": 0, "ticks": 24, "depth": 400}),
    "coordinator-naps-mid-flush": (
        5,
        _coordinator_naps_mid_flush,
        {"crashes": 0, "drops": 0, "delays": 0, "ticks": 80, "depth": 400},
    ),
}


@dataclass
class Report:
    states: int = 0
    terminals: int = 0
    pruned: int = 0
    seconds: float = 0.0
    violation: str | None = None
    path: list[tuple] = dataclasses.field(default_factory=list)
    #: the time budget ran out before the to-do list did
    timed_out: bool = False
    #: the state budget ran out before the to-do list did
    out_of_states: bool = False
    transitions: int = 0  # moves made (children built)
    slept: int = 0  # moves not made because a reordering of them was explored (sleep sets)
    depth_cut: int = 0  # paths cut by the depth bound
    memo_hits: int = 0  # local transitions answered from the memo
    persistent: int = 0  # worlds where the moves of one member sufficed
    por: bool = True

    @property
    def exhaustive(self) -> bool:
        """Every schedule within the bounds was covered (and none failed)."""
        done = not (self.timed_out or self.out_of_states or self.violation)
        return done and self.depth_cut == 0

    def status(self) -> str:
        if self.violation is not None:
            return "stopped at a violation"
        if self.timed_out:
            return "time budget ran out"
        if self.out_of_states:
            return "state budget ran out"
        if self.depth_cut:
            return f"not exhaustive: {self.depth_cut} paths cut at the depth bound"
        return "exhaustive: yes"

    def __str__(self) -> str:
        verdict = "no violation" if self.violation is None else "VIOLATION"
        return (
            f"{self.states} states, {self.terminals} terminals checked, {self.pruned} revisits "
            f"pruned, {self.slept} moves slept, {self.seconds:.1f}s ({self.status()}): {verdict}"
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
    return "" if _ok(w, rep, path, b) else rep.violation


def explore(
    bounds: Bounds | None = None,
    stack: str = "total",
    scenario: str | None = None,
    seconds: float | None = None,
    por: bool = True,
    outcomes: set[tuple] | None = None,
) -> Report:
    """Depth-first over every schedule within `bounds` (from a scenario's deterministic prefix,
    if one is named), with sleep and persistent sets unless `por` is False; stop at the first
    violation, at `bounds.max_states`, or when `seconds` have passed. `outcomes`, if given,
    collects `outcome(w)` of every terminal world."""
    rep = Report(por=por)
    t0 = time.perf_counter()
    deadline = None if seconds is None else t0 + seconds
    root, b = root_world(bounds or Bounds(), stack, scenario)
    #: state key -> (moves slept on when it was explored, depth it was explored at)
    seen: dict[bytes, tuple[frozenset, int]] = {root.key(): (frozenset(), 0)}
    todo: list[tuple[World, list[tuple], dict]] = [(root, [], {})]
    while todo:
        if rep.states >= b.max_states:
            rep.out_of_states = True
            break
        if deadline is not None and (rep.states & 63) == 0 and time.perf_counter() > deadline:
            rep.timed_out = True
            break
        w, path, sleep = todo.pop()
        rep.states += 1
        options = moves(w, b)
        if len(path) >= b.depth and options:
            rep.depth_cut += 1
            options = []
        if not options:
            rep.terminals += 1
            if outcomes is not None:
                outcomes.add(outcome(w))
            if not _ok(w, rep, path, b):
                break
            continue
        made: dict[tuple, tuple[World, int]] = {}
        try:
            if por:
                options = _persistent(w, b, options, sleep, made, rep)
            for move in options:
                if move not in sleep and move not in made:
                    made[move] = _child(w, move, b, rep)
        except _Crashed as e:  # the stack raised: that is a finding too
            rep.violation, rep.path = e.args[0], [*path, e.args[1]]
            return _done(rep, root, t0)
        done: dict[tuple, int] = dict(sleep)  # moves covered from here: slept or made
        pushes = []
        for move in options:
            if move in sleep:
                rep.slept += 1
                continue
            child, sig = made[move]
            if por:
                csleep = {t: s for t, s in done.items() if independent(t, s, move, sig)}
                done[move] = sig
            else:
                csleep = {}
            d = len(path) + 1
            k = child.key()
            old = seen.get(k)
            if old is not None:
                old_sleep, old_d = old
                if old_d <= d and old_sleep <= csleep.keys():
                    rep.pruned += 1
                    continue
                if old_d <= d:  # explore again what the earlier visit slept on, and no more
                    csleep = {t: s for t, s in csleep.items() if t in old_sleep}
                d = min(d, old_d)
            seen[k] = (frozenset(csleep), d)
            pushes.append((child, [*path, move], csleep))
        todo.extend(reversed(pushes))
    return _done(rep, root, t0)


def outcome(w: World) -> tuple:
    """What each member ended with: alive, view, what it delivered in it and what is safe."""
    out = []
    for addr in sorted(w.eps):
        ep = w.endpoint(addr)
        rec = ep.recorder
        out.append((addr, ep.alive, ep.view.vid, tuple(rec.delivered), rec.safe, rec.sent))  # type: ignore[union-attr]
    return (tuple(out), tuple(sorted(w.inflight)), w.now)


class _Crashed(Exception):
    """The real code raised on a move: (description, move)."""


def _child(w: World, move: tuple, b: Bounds, rep: Report) -> tuple[World, int]:
    child = w.copy()
    rep.transitions += 1
    try:
        return child, apply(child, move, b)
    except Exception as e:
        raise _Crashed(f"CRASH {type(e).__name__}: {e}", move) from e


def _persistent(
    w: World, b: Bounds, options: list[tuple], sleep: dict, made: dict, rep: Report
) -> list[tuple]:
    """A persistent subset of `options` (see the module docstring): for the first member d with
    a packet in flight whose moves neither install nor deliver, d's moves (deliver, drop or hold
    its oldest packet, cast, crash); else all of `options`."""
    if b.reorders is None or w.reorders > 0 or w.paused or w.pauses:
        return options
    heads = {m[1][1]: m[1] for m in options if m[0] == "deliver"}  # (only heads: no reorders)
    for d, h in heads.items():
        mine = [m for m in options if len(m) > 1 and (m[1] == h or m[1] == d)]
        for m in mine:
            if m not in sleep and m not in made:
                made[m] = _child(w, m, b, rep)
        if not any((sleep[m] if m in sleep else made[m][1]) & (INS | DLV) for m in mine):
            rep.persistent += 1
            return mine
    return options


def _done(rep: Report, root: World, t0: float) -> Report:
    rep.memo_hits = root.store.hits
    rep.seconds = time.perf_counter() - t0
    return rep


def settle(w: World, within: float) -> tuple[World, float]:
    """`w` run on without faults for `within` virtual seconds: held packets go back in flight,
    frozen members wake, everything in flight is delivered in order and timers fire. Returns
    the world and the time faults stopped (for the liveness checks)."""
    w = w.copy()
    w.inflight += w.held
    w.held = []
    for a, buf in sorted(w.paused.items()):
        w.local(a, ("resume", tuple(buf), w.now))
    w.paused = {}
    quiet, end = w.now, w.now + within
    for _ in range(100_000):
        if w.inflight:
            src, dst, data = w.inflight.pop(0)
            if w.alive.get(dst):
                w.local(dst, ("recv", src, data, w.now))
            continue
        due = [(d, a) for a, d in w.deadline.items() if d is not None and w.alive[a]]
        if not due or min(due)[0] > end:
            break
        w.now, addr = max(w.now, min(due)[0]), min(due)[1]
        w.local(addr, ("tick", w.now))
    return w, quiet


def _ok(w: World, rep: Report, path: list[tuple], b: Bounds | None = None) -> bool:
    if b is not None and b.settle > 0:
        w, quiet = settle(w, b.settle)
        trace = w.full_trace()
        trace.live = tuple(a for a in sorted(w.eps) if w.alive[a])
        # liveness is owed while a majority of the latest primary view's members lives
        views = [r.data for r in trace.records if r.kind == INSTALL and r.data[2]]
        last = max(views, key=lambda d: tuple(d[0]))[1] if views else ()
        owed = 2 * sum(bool(w.alive.get(a)) for a in last) > len(last)
        trace.liveness, trace.quiet_since, trace.end_time = owed, quiet, w.now
    else:
        trace = w.full_trace()
    violations = [v.describe() for v in check.check(trace)]
    for addr, digest in w.eps.items():
        broken = w.store.broken[digest]
        if broken:
            violations.append(f"[INTERNAL] {addr} counted {broken}")
    if violations:
        rep.violation = "; ".join(violations[:3])
        rep.path = path
        return False
    return True


def main_bounds(scenario: str) -> Bounds:
    """The bounds of `make explore`'s scenario runs and of the mutant hunts' explorer column: one
    cast per member, one crash, one lost and one delayed packet, 12 timer firings; what the
    scenario says otherwise (a join in the join scenario)."""
    b = Bounds(casts=1, crashes=1, joins=0, drops=1, delays=1, ticks=12, depth=80)
    return dataclasses.replace(b, **SCENARIOS[scenario][2])


def _fresh(**kw: int) -> Bounds:
    """A fresh 3-member group, packets to one member in send order (reorders=0)."""
    b = Bounds(casts=0, crashes=0, joins=0, drops=0, ticks=0, reorders=0, depth=400)
    return dataclasses.replace(b, **{"max_states": 10**8, **kw})


#: `make test`: explored to the end in a few seconds (a crash and a loss anywhere)
TEST_BOUND = _fresh(casts=1, crashes=1, drops=1, max_states=500_000)
#: small enough for the unreduced search too (test_explore compares the two)
REDUCTION_BOUNDS = (_fresh(casts=1, ticks=2), _fresh(casts=1, crashes=1))
#: `make explore`: the issue's minimum (3 members, 2 casts each, a crash, a join, a loss) split
#: into bounds that are explored to the end, then the whole minimum with a time budget
EXHAUSTIVE: dict[str, Bounds] = {
    "casts-crash-loss": _fresh(casts=1, crashes=1, drops=1),
    "2casts-crash": _fresh(casts=2, crashes=1),
    "crash-join-2ticks": _fresh(crashes=1, joins=1, ticks=2),
    "casts-crash-4ticks": _fresh(casts=1, crashes=1, ticks=4),
    "casts-delay-tick": _fresh(casts=1, delays=1, ticks=1),
    "2casts-loss": _fresh(casts=2, drops=1),
}
MINIMUM = _fresh(casts=2, crashes=1, joins=1, drops=1)


def _line(name: str, r: Report) -> str:
    rate = r.states / r.seconds if r.seconds else 0.0
    return (
        f"{name:32s} {r.states:>9} states {r.terminals:>7} terminals {r.pruned:>9} pruned "
        f"{r.seconds:7.1f}s {rate:7.0f}/s  {r.status()}"
        + ("" if r.violation is None else f"\n  VIOLATION {r.violation}\n  path: {r.path}")
    )


def main(argv: list[str] | None = None) -> int:
    """`python tests/explore/explorer.py [MAX_STATES] [--minimum-seconds S] [--no-por]`: every
    scenario with MAX_STATES states, the EXHAUSTIVE bounds to the end, and MINIMUM for S s."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("states", nargs="?", type=int, default=20_000)
    ap.add_argument("--minimum-seconds", type=float, default=240.0)
    ap.add_argument("--no-por", action="store_true", help="no partial-order reduction")
    args = ap.parse_args(argv)
    por = not args.no_por
    bad = 0
    print(f"partial-order reduction: {'on' if por else 'off'}", flush=True)
    for name in SCENARIOS:
        b = dataclasses.replace(main_bounds(name), max_states=args.states)
        r = explore(b, scenario=name, por=por)
        print(_line(name, r), flush=True)
        bad += r.violation is not None
    for name, b in EXHAUSTIVE.items():
        r = explore(b, por=por)
        print(_line(name, r), flush=True)
        bad += r.violation is not None or not r.exhaustive
    if args.minimum_seconds > 0:
        r = explore(MINIMUM, por=por, seconds=args.minimum_seconds)
        print(_line("minimum (2 casts, crash, join, loss)", r), flush=True)
        bad += r.violation is not None
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
