"""The explorer's world: endpoints as interned snapshots, moves, and how a move changes a world.

Why a module of its own: exploration copies a world once per branch, and copying the live
`Endpoint` objects (pickle round trips of every member) was nearly all of its time. Here a world
holds each member as the digest of its pickled state; the state itself sits once in a `Store`.
A move touches at most one member, so a child world is a few small containers plus, for that
member, one *local transition* `(state digest, input) -> (new digest, packets, records)`. The real
code is deterministic given its state and input (its only randomness, `ctx.rng`, is part of the
state), so transitions are memoised: the same member state receiving the same packet at the same
time in many global states is computed once. The trace is a persistent chain shared by siblings.

Pickle is used on our own in-memory objects only (nothing from a network is unpickled), which is
why this lives with the tests. Two kinds of object are pickled by reference through a dispatch
table: the stack spec (one per exploration) and `random.Random` (interned by state: 3.7 kB of
Mersenne Twister that the layers never draw from, so it never changes).
"""

from __future__ import annotations

import copy
import hashlib
import io
import pickle
import random
from dataclasses import dataclass, field
from typing import Any

from cohort.stack.compose import StackSpec
from cohort.stack.record import Recorder
from cohort.stack.runtime import Endpoint
from cohort.stack.trace import CRASH, DELIVER, INSTALL, SAFE, Trace

Packet = tuple[str, str, bytes]  # (src, dst, data)
#: counters that only a broken protocol invariant can raise (no garbage is injected here)
INVARIANT_COUNTERS = (".bad_", "cut_below_delivered")


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
    #: deliveries that overtake an older packet to the same member; None: any number. Packets
    #: to different members are delivered in any order whatever this says.
    reorders: int | None = None
    depth: int = 40  # transitions along one path
    #: virtual seconds a terminal world runs on without faults before the check, which then
    #: includes liveness (L1, L2); 0: check the terminal world as it is (safety only)
    settle: float = 0.0
    max_states: int = 200_000


# --- interning: pickled by reference -----------------------------------------------------------

_RNG_IDS: dict[tuple, int] = {}
_RNG_STATES: list[tuple] = []
_SPECS: list[StackSpec] = []
_SPEC_IDS: dict[int, int] = {}  # id(spec) -> index of an equal spec in _SPECS
_SPEC_ALIVE: list[StackSpec] = []  # every spec seen, so that ids are not reused
_SPEC_BY_TEXT: dict[str, int] = {}  # repr(spec) -> index: equal specs pickle alike


def _rng(i: int) -> random.Random:
    r = random.Random(0)
    r.setstate(_RNG_STATES[i])
    return r


def _reduce_rng(r: random.Random) -> tuple:
    st = r.getstate()
    i = _RNG_IDS.get(st)
    if i is None:
        i = _RNG_IDS[st] = len(_RNG_STATES)
        _RNG_STATES.append(st)
    return _rng, (i,)


def _spec(i: int) -> StackSpec:
    return _SPECS[i]


def _reduce_spec(s: StackSpec) -> tuple:
    i = _SPEC_IDS.get(id(s))
    if i is None:
        i = _SPEC_BY_TEXT.setdefault(repr(s), len(_SPECS))
        if i == len(_SPECS):
            _SPECS.append(s)
        _SPEC_IDS[id(s)] = i
        _SPEC_ALIVE.append(s)
    return _spec, (i,)


_DISPATCH = {random.Random: _reduce_rng, StackSpec: _reduce_spec}


class Sink:
    """An endpoint's record sink: records wait here until the world stamps them with the time."""

    def __init__(self) -> None:
        self.out: list[tuple[str, tuple]] = []

    def __call__(self, kind: str, *data: Any) -> None:
        self.out.append((kind, data))


@dataclass(slots=True)
class Step:
    """The outcome of one local transition (memoised per store)."""

    digest: bytes
    packets: tuple[tuple[str, bytes], ...]
    records: tuple[tuple[str, tuple], ...]
    alive: bool
    deadline: float | None
    sig: int  # INS | DLV: what the records are, for the independence relation


INS, DLV, REO = 1, 2, 4  # a view installation; a delivery or safe mark; a reorder spent


class Store:
    """Member states by digest, and the memo of local transitions, for one exploration (the code
    may differ between explorations: a mutant)."""

    def __init__(self, spec: StackSpec) -> None:
        self.spec = spec
        self.blobs: dict[bytes, bytes] = {}
        self.memo: dict[tuple, Step] = {}
        self.hits = 0
        #: digest -> counters that only a broken protocol invariant can raise
        self.broken: dict[bytes, dict[str, int]] = {}

    def save(self, ep: Endpoint) -> Step:
        sink = ep.recorder.sink  # type: ignore[union-attr]
        recs, sink.out = tuple(sink.out), []
        packets = tuple(ep.take_packets())
        ep.take_events()
        _normalise_timers(ep)
        deadline = ep.next_deadline()
        f = io.BytesIO()
        p = pickle.Pickler(f, 5)
        p.dispatch_table = _DISPATCH  # type: ignore[assignment]
        p.dump(ep)
        blob = f.getvalue()
        d = hashlib.blake2b(blob, digest_size=16).digest()
        if d not in self.blobs:
            self.blobs[d] = blob
            c = ep.counters
            self.broken[d] = {k: n for k, n in c.items() if any(x in k for x in INVARIANT_COUNTERS)}
        sig = 0
        for kind, _ in recs:
            if kind == INSTALL:
                sig |= INS
            elif kind in (DELIVER, SAFE):
                sig |= DLV
        return Step(d, packets, recs, ep.alive, deadline, sig)

    def load(self, digest: bytes) -> Endpoint:
        return pickle.loads(self.blobs[digest])  # noqa: S301 - our own objects, in memory

    def step(self, digest: bytes, inp: tuple) -> Step:
        key = (digest, inp)
        s = self.memo.get(key)
        if s is not None:
            self.hits += 1
            return s
        ep = self.load(digest)
        kind = inp[0]
        if kind == "recv":
            ep.receive(inp[1], inp[2], inp[3])
        elif kind == "tick":
            ep.fire_timers(inp[1])
        elif kind == "cast":
            ep.cast(inp[1])
        elif kind == "crash":
            ep.crash()
        elif (
            kind == "suspect"
        ):  # a transport saw the peer's connection close (cohort.stack.transport.fdsock)
            ep.suspect(inp[1])
        elif kind == "resume":  # a stopped process wakes to its socket buffer, then its timers
            for src, data in inp[1]:
                ep.receive(src, data, inp[2])
            ep.fire_timers(inp[2])
        else:
            raise ValueError(inp)
        s = self.memo[key] = self.save(ep)
        return s


def _normalise_timers(ep: Endpoint) -> None:
    """Put the timer heap in a canonical form, so that equal timer sets pickle alike: timers of
    dead views go (they would be skipped), the rest is sorted (a sorted list is a heap) and the
    tie-breaking sequence numbers become 1..n (the same relative order, before and after any
    timer set later: the counter continues from n)."""
    live = sorted(t for t in ep._timers if t[2] == ep._gen)
    ep._timers[:] = [(t[0], i, *t[2:]) for i, t in enumerate(live, 1)]
    ep._tseq = len(live)


def new_endpoint(store: Store, addr: str, **kw: Any) -> Step:
    ep = Endpoint(addr, store.spec, recorder=Recorder(Sink()), strict=True, **kw)
    return store.save(ep)


@dataclass(eq=False)
class World:
    """Everything a branch owns: member states, packets in flight, time, budgets, the trace."""

    store: Store
    eps: dict[str, bytes] = field(default_factory=dict)  # member -> state digest
    alive: dict[str, bool] = field(default_factory=dict)
    deadline: dict[str, float | None] = field(default_factory=dict)
    inflight: list[Packet] = field(default_factory=list)
    now: float = 0.0
    casts_left: dict[str, int] = field(default_factory=dict)
    crashes: int = 0
    joins: int = 0
    drops: int = 0
    delays: int = 0
    held: list[Packet] = field(default_factory=list)  # delayed packets
    pauses: int = 0
    paused: dict[str, list] = field(default_factory=dict)  # member -> packets held while frozen
    ticks: int = 0
    reorders: int = 0  # overtakes left (when bounded)
    #: one-way link failures (src, dst): what src sends to dst is lost (scenario prefixes)
    cut: frozenset = frozenset()
    #: persistent chain (parent, records): siblings share their common history
    trace: tuple | None = None

    def copy(self) -> World:
        c = copy.copy(self)
        c.eps, c.alive, c.deadline = dict(self.eps), dict(self.alive), dict(self.deadline)
        c.inflight, c.held = list(self.inflight), list(self.held)
        c.casts_left = dict(self.casts_left)
        c.paused = {a: list(v) for a, v in self.paused.items()}
        return c

    def record(self, member: str, kind: str, *data: Any) -> None:
        self.trace = (self.trace, ((self.now, member, kind, data),))

    def put(self, addr: str, s: Step) -> int:
        """Adopt a local transition's outcome for `addr`: its state, packets and records."""
        self.eps[addr], self.alive[addr], self.deadline[addr] = s.digest, s.alive, s.deadline
        for dest, data in s.packets:
            if self.alive.get(dest) and (addr, dest) not in self.cut:
                self.inflight.append((addr, dest, data))
        if s.records:
            now = self.now
            self.trace = (self.trace, tuple((now, addr, k, d) for k, d in s.records))
        return s.sig

    def local(self, addr: str, inp: tuple) -> int:
        if not self.alive[addr]:  # a dead member takes no input (and keeps its summary digest)
            return 0
        return self.put(addr, self.store.step(self.eps[addr], inp))

    def history(self, addr: str) -> tuple:
        """`addr`'s records so far (time, kind, data)."""
        out = []
        node = self.trace
        while node is not None:
            node, recs = node
            out += [(t, k, d) for t, m, k, d in reversed(recs) if m == addr]
        return tuple(reversed(out))

    def endpoint(self, addr: str) -> Endpoint:
        """A live copy of `addr`'s endpoint (for prefixes and tests; changes to it are lost)."""
        return self.store.load(self.eps[addr])

    def full_trace(self) -> Trace:
        chunks = []
        node = self.trace
        while node is not None:
            node, recs = node
            chunks.append(recs)
        t = Trace()
        for recs in reversed(chunks):
            for now, member, kind, data in recs:
                t.add(now, member, kind, *data)
        return t

    def key(self) -> bytes:
        """A digest of the protocol state (not the history): equal states are explored once."""
        blob = pickle.dumps(
            (
                sorted(self.eps.items()),
                sorted(self.inflight),
                self.now,
                sorted(self.casts_left.items()),
                self.crashes,
                self.joins,
                self.drops,
                self.delays,
                sorted(self.held),
                self.ticks,
                self.reorders,
                sorted(self.cut),
                self.pauses,
                sorted((a, tuple(v)) for a, v in self.paused.items()),
            ),
            5,
        )
        return hashlib.blake2b(blob, digest_size=16).digest()


# --- moves ---------------------------------------------------------------------------------------
# A move names packets by value, not by position, so that it means the same in every world where
# it is enabled (sleep sets carry moves from a world to its children). Copies of one packet are
# interchangeable: delivering either leaves the same world.


def moves(w: World, b: Bounds) -> list[tuple]:
    pkts = list(dict.fromkeys(w.inflight))
    if b.reorders is None or w.reorders > 0:
        out: list[tuple] = [("deliver", p) for p in pkts]
    else:  # only the oldest packet to each member
        heads = {p[1]: p for p in reversed(w.inflight)}
        out = [("deliver", p) for p in pkts if heads[p[1]] is p]
    if w.drops:
        out += [("drop", p) for p in pkts]
    if w.delays:
        out += [("hold", p) for p in pkts]
    out += [("release", p) for p in dict.fromkeys(w.held)]
    for addr, left in w.casts_left.items():
        if left and w.alive[addr] and addr not in w.paused:
            out.append(("cast", addr))
    if w.crashes:
        out += [("crash", a) for a, ok in w.alive.items() if ok]
    if w.joins:
        out.append(("join",))
    if w.pauses:
        out += [("pause", a) for a, ok in w.alive.items() if ok and a not in w.paused]
    if w.ticks < b.ticks and not w.inflight:  # time moves on once the network is quiet
        out.append(("tick",))
    # (after tick: depth-first, a frozen member first sleeps as long as the bound allows)
    out += [("resume", a) for a in w.paused]
    return out


def apply(w: World, move: tuple, b: Bounds) -> int:
    """Make `move` in `w`; returns the signature (INS | DLV) of the records it made."""
    kind = move[0]
    if kind in ("deliver", "drop", "hold"):
        src, dst, data = move[1]
        if kind == "deliver" and b.reorders is not None:
            head = next(p for p in w.inflight if p[1] == dst)
            if head != move[1]:
                w.reorders -= 1
                w.inflight.remove(move[1])
                return REO | _deliver(w, src, dst, data)
        w.inflight.remove(move[1])
        if kind == "drop":
            w.drops -= 1
        elif kind == "hold":
            w.delays -= 1
            w.held.append(move[1])
        else:
            return _deliver(w, src, dst, data)
        return 0
    if kind == "release":
        w.held.remove(move[1])
        w.inflight.append(move[1])
        return 0
    if kind == "cast":
        addr = move[1]
        n = b.casts - w.casts_left[addr]
        w.casts_left[addr] -= 1
        return w.local(addr, ("cast", f"{addr}:{n}".encode()))
    if kind == "crash":
        w.crashes -= 1
        crash(w, move[1])
        return 0
    if kind == "join":
        w.joins -= 1
        addr = f"m{len(w.eps)}"
        seeds = [a for a in w.eps if a != addr]
        w.casts_left[addr] = 0
        return w.put(addr, new_endpoint(w.store, addr, seeds=seeds, seed=len(w.eps), now=w.now))
    if kind == "pause":
        w.pauses -= 1
        w.paused[move[1]] = []
        return 0
    if kind == "resume":
        held = w.paused.pop(move[1])
        return w.local(move[1], ("resume", tuple(held), w.now))
    if kind == "tick":
        w.ticks += 1
        due = [
            (d, a)
            for a, d in w.deadline.items()
            if d is not None and w.alive[a] and a not in w.paused
        ]
        if due:
            when, addr = min(due)
            w.now = max(w.now, when)
            return w.local(addr, ("tick", w.now))
        return 0
    raise ValueError(move)


def _deliver(w: World, src: str, dst: str, data: bytes) -> int:
    if dst in w.paused:
        w.paused[dst].append((src, data))  # waits in its socket buffer
    elif w.alive.get(dst):
        return w.local(dst, ("recv", src, data, w.now))
    return 0


#: key a dead member by its records, not its state (see crash)
MERGE_DEAD = True


def crash(w: World, addr: str) -> None:
    """`addr` stops dead; what is in flight to it is gone (no budget is charged here)."""
    w.local(addr, ("crash",))
    w.record(addr, CRASH)
    w.inflight = [p for p in w.inflight if p[1] != addr]
    w.held = [p for p in w.held if p[1] != addr]
    # A dead member's state no longer matters, only what it did (the checker reads that): it is
    # keyed by its records, so crashes at different inner states with the same history merge.
    # (Unless it counted a broken invariant: then it keeps its state, for the terminal check.)
    d = w.eps[addr]
    store = w.store
    if MERGE_DEAD and not store.broken[d]:
        dead = b"dead" + hashlib.blake2b(pickle.dumps(w.history(addr), 5), digest_size=16).digest()
        store.blobs.setdefault(dead, store.blobs[d])
        store.broken.setdefault(dead, {})
        w.eps[addr] = dead


# --- independence (partial-order reduction) -----------------------------------------------------

_LOCAL = frozenset(("deliver", "drop", "hold", "release", "cast"))


def independent(a: tuple, sa: int, m: tuple, sm: int) -> bool:
    """Do moves `a` and `m` (with record signatures `sa`, `sm`) commute, leaving the same world
    and a trace the checker cannot tell apart? See the explorer's docstring for why."""
    ka, km = a[0], m[0]
    if ka not in _LOCAL or km not in _LOCAL or a[1] == m[1]:
        return False
    if (sa & INS and sm) or (sm & INS and sa):  # an install against a delivery or install
        return False
    if ka in ("drop", "hold") and ka == km or sa & sm & REO:  # one budget
        return False
    # the member each touches: a cast its caster; the others the packet's destination (a drop or
    # hold may make another packet the oldest to its member, which a bounded reorder budget sees)
    ea = a[1] if ka == "cast" else a[1][1]
    em = m[1] if km == "cast" else m[1][1]
    return ea != em
