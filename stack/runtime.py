"""The group endpoint: one member's stack, driven by whoever owns the I/O.

Why one object for every driver: the simulator, the exhaustive explorer and the asyncio runtime all
feed it packets and timer firings and read back packets and application events, so the code that is
checked in simulation is the code that runs.

Theory of operation:
- Events go through one explicit deque of (handler, event); a layer's `ctx.up` appends the `up`
  method of the next layer above that handles that event class (layers declare what they pass
  through untouched, so a data message skips them), `ctx.down` likewise. No recursion.
- A `View` event that leaves the top ends the view: once the deque drains, every layer is rebuilt
  from the new view (the Ensemble approach); timers of the old layers die with them.
- Packets are demultiplexed here by view tag before the bottom layer sees them: the current view's
  go in; the previous view's tell gms that a member is stuck behind (so it relays the installation);
  unknown tags may belong to a view about to be installed and are held (bounded) and replayed.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from cohort.stack import wire
from cohort.stack.compose import StackSpec
from cohort.stack.events import (
    Block,
    BlockOk,
    Cast,
    Deliver,
    Exit,
    Leave,
    OldView,
    Packet,
    Recv,
    Safe,
    Send,
    Suspect,
    Timer,
    View,
)
from cohort.stack.view import View as ViewRec
from cohort.stack.view import joining_view

FUTURE_LIMIT = 4096


class _Parked:
    """Stands for a neighbour's handler while the layers of a view are being built."""

    __slots__ = ("ctx", "up")

    def __init__(self, ctx: _Ctx, up: bool) -> None:
        self.ctx, self.up = ctx, up

    def __call__(self, ev: Any) -> None:
        raise AssertionError("an event was dispatched before the stack was built")


class _Ctx:
    """The context handed to one layer: its index in the stack and shared endpoint facilities."""

    __slots__ = ("_ep", "_q", "i", "me", "rng", "seeds", "_up", "_down", "_up_to", "_down_to")

    def __init__(self, ep: Endpoint, i: int) -> None:
        self._ep = ep
        self._q = ep._q
        self.i = i
        self.me = ep.addr
        self.rng = ep.rng
        self.seeds = ep.seeds
        # filled in by the endpoint once every layer exists: the default neighbours' handlers,
        # and per event class the handler of the next layer that does not pass it through
        self._up: Callable = None  # type: ignore[assignment]
        self._down: Callable = None  # type: ignore[assignment]
        self._up_to: dict[type, Callable] = {}
        self._down_to: dict[type, Callable] = {}

    @property
    def now(self) -> float:
        return self._ep.now

    def up(self, ev: Any) -> None:
        self._q.append((self._up_to.get(type(ev), self._up), ev))

    def down(self, ev: Any) -> None:
        self._q.append((self._down_to.get(type(ev), self._down), ev))

    def set_timer(self, delay: float, token: Any) -> None:
        self._ep._set_timer(self.i, delay, token)

    def count(self, name: str, n: int = 1) -> None:
        self._ep.counters[name] += n

    def trace(self, msg: str) -> None:
        if self._ep.tracer is not None:
            self._ep.tracer(f"{self._ep.now:.4f} {self.me}: {msg}")


class Endpoint:
    """A member of one group, with no I/O of its own.

    Feed it with `receive(src, data)` and `fire_timers(now)`; read `take_packets()` (address, bytes)
    and `take_events()` (Deliver/View/Block/Safe/Exit for the application); ask `next_deadline()`.
    """

    def __init__(
        self,
        addr: str,
        spec: StackSpec,
        *,
        seeds: Iterable[str] = (),
        initial_view: ViewRec | None = None,
        seed: int = 0,
        now: float = 0.0,
        recorder: Callable[..., None] | None = None,
        tracer: Callable[[str], None] | None = None,
        strict: bool = False,
    ) -> None:
        self.addr = addr
        self.spec = spec
        self.seeds = tuple(seeds)
        self.now = now
        self.rng = random.Random(seed)
        self.counters: Counter[str] = Counter()
        self.recorder = recorder
        self.tracer = tracer
        self.strict = strict
        self.alive = True
        self.blocked = False
        self._q: deque = deque()
        self._timers: list = []
        self._tseq = 0
        self._gen = 0
        self._packets: list[tuple[str, bytes]] = []
        self._events: list[Any] = []
        self._pending_casts: list[bytes] = []
        self._future: list[tuple[str | None, list]] = []
        self._next_view: ViewRec | None = None
        self._exiting = False
        self.prev_view: ViewRec | None = None
        self.view = initial_view or joining_view(addr, self.seeds)
        self._build()
        if initial_view is not None:
            self._events.append(View(initial_view))
            if self.recorder:
                self.recorder("view", initial_view)
        self._run()

    # --- driver side -----------------------------------------------------------------------------

    def receive(self, src: str | None, data: bytes, now: float | None = None) -> None:
        """A packet from the transport. Garbage is counted and dropped, never raised."""
        if not self.alive:
            return
        if now is not None:
            self.now = now
        pkt = wire.decode(data)
        if pkt is None:
            self.counters["wire.malformed"] += 1
            return
        self._route(src, pkt)
        self._run()

    def receive_datagram(self, src: str | None, datagram: bytes, now: float | None = None) -> None:
        """A datagram of concatenated packets (see cohort.stack.transport.datagrams): one dispatch run for all."""
        if not self.alive:
            return
        if now is not None:
            self.now = now
        n = 0
        for obj in wire.unbatch(datagram):
            n += 1
            pkt = wire.validate(obj)
            if pkt is None:
                self.counters["wire.malformed"] += 1
            else:
                self._route(src, pkt)
        if n == 0:
            self.counters["wire.malformed"] += 1
        self._run()

    def _route(self, src: str | None, pkt: list) -> None:
        if pkt[0] == wire.OOB:
            self._q.append((self._bottom_up, Recv(src, pkt)))
            return
        tag = pkt[1]
        if tag == self.view.tag:
            self._q.append((self._bottom_up, Recv(src, pkt)))
        elif self.prev_view is not None and tag == self.prev_view.tag:
            rank = pkt[2]
            members = self.prev_view.members
            who = src or (members[rank] if 0 <= rank < len(members) else None)
            if who is not None and who != self.addr:
                self._q.append((self._bottom_up, OldView(who)))
        elif len(self._future) < FUTURE_LIMIT:
            self._future.append((src, pkt))
        else:
            self.counters["wire.future_overflow"] += 1

    def fire_timers(self, now: float) -> None:
        """Run every timer due at or before `now`."""
        if not self.alive:
            return
        self.now = max(self.now, now)
        timers = self._timers
        while timers and timers[0][0] <= self.now and self.alive:
            _, _, gen, i, token = heapq.heappop(timers)
            if gen != self._gen:
                continue
            self._q.append((self._layers[i].up, Timer(self.now, token)))
            self._run()

    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers and timers[0][2] != self._gen:
            heapq.heappop(timers)
        return timers[0][0] if timers and self.alive else None

    def take_packets(self) -> list[tuple[str, bytes]]:
        out, self._packets = self._packets, []
        return out

    def take_events(self) -> list[Any]:
        out, self._events = self._events, []
        return out

    # --- application side ------------------------------------------------------------------------

    def cast(self, payload: bytes) -> None:
        """Multicast in the current view, or hold until a primary view lets us send."""
        if not self.alive:
            return
        if self.view.primary and not self.blocked:
            self._send_cast(payload)
            self._run()
        else:
            self._pending_casts.append(payload)

    def send(self, dest: str, payload: bytes) -> None:
        """Reliable unicast to a member of the current view (dropped at a view change)."""
        rank = self.view.rank(dest)
        if rank < 0 or not self.alive:
            raise ValueError(f"{dest} is not a member of the current view {self.view}")
        self._q.append((self._top_down, Send(rank, payload, [])))
        self._run()

    def leave(self) -> None:
        if self.alive:
            self._q.append((self._top_down, Leave()))
            self._run()

    def suspect(self, addr: str) -> None:
        """An external suspicion, e.g. from a transport that saw the peer's connection close."""
        rank = self.view.rank(addr)
        if rank >= 0 and self.alive:
            self._q.append((self._bottom_up, Suspect(frozenset([rank]))))
            self._run()

    def crash(self) -> None:
        """Stop dead (simulator): no more output, timers or input."""
        self.alive = False
        self._q.clear()
        self._timers.clear()

    def dump(self) -> dict:
        return {layer.name: layer.dump() for layer in self._layers}

    def lease_until(self) -> float:
        """Until when (endpoint time) a majority of the view is known to listen to us: after it,
        this member may be cut off and delivers nothing (`top` holds deliveries). +inf for
        stacks without leases."""
        top = self._layers[-1] if self._layers else None
        return getattr(top, "lease_until", float("inf"))

    @property
    def pending_casts(self) -> int:
        return len(self._pending_casts)

    # --- internals -------------------------------------------------------------------------------

    def _send_cast(self, payload: bytes) -> None:
        if self.recorder:
            self.recorder("send", self.view, payload)
        self._q.append((self._top_down, Cast(payload, [])))

    def _build(self) -> None:
        self._gen += 1
        self._q.clear()
        spec = self.spec
        classes = spec.classes
        n = len(classes)
        ctxs = [_Ctx(self, i) for i in range(n)]
        for ctx in ctxs:  # layers may emit while being built, before the tables below exist
            ctx._up, ctx._down = _Parked(ctx, True), _Parked(ctx, False)
        self._layers = layers = [
            cls(ctxs[i], self.view, p) for i, (cls, p) in enumerate(zip(classes, spec.params))
        ]
        self._bottom_up = layers[0].up
        self._top_down = layers[-1].down
        passing = set().union(*(c.passes_up | c.passes_down for c in classes))

        def up_handler(j: int) -> Callable:
            return layers[j].up if j < n else self._to_app

        def down_handler(j: int) -> Callable:
            return layers[j].down if j >= 0 else self._to_wire

        for i, ctx in enumerate(ctxs):
            ctx._up, ctx._down = up_handler(i + 1), down_handler(i - 1)
            for ev in passing:
                j = i + 1
                while j < n and ev in classes[j].passes_up:
                    j += 1
                if j != i + 1:
                    ctx._up_to[ev] = up_handler(j)
                j = i - 1
                while j >= 0 and ev in classes[j].passes_down:
                    j -= 1
                if j != i - 1:
                    ctx._down_to[ev] = down_handler(j)
        q = self._q
        for handler, ev in [q.popleft() for _ in range(len(q))]:
            if type(handler) is _Parked:
                (handler.ctx.up if handler.up else handler.ctx.down)(ev)
            else:
                q.append((handler, ev))

    def _set_timer(self, i: int, delay: float, token: Any) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (self.now + delay, self._tseq, self._gen, i, token))

    def _run(self) -> None:
        q = self._q
        popleft = q.popleft
        while q:
            handler, ev = popleft()
            try:
                handler(ev)
            except Exception:
                # Headers come off the wire: a forged or corrupt one may not have the shape a
                # layer expects. The event is dropped and counted; the member carries on.
                # `strict` (the simulator, tests) re-raises so that our own bugs surface.
                if self.strict:
                    raise
                who = getattr(getattr(handler, "__self__", None), "name", "endpoint")
                self.counters[f"{who}.bad_input"] += 1
            if not q:
                if self._exiting:
                    self.crash()
                    return
                if self._next_view is not None:
                    self._install()

    def _to_wire(self, ev: Packet) -> None:
        if ev.dest is None:
            me = self.addr
            data = ev.data
            self._packets.extend((m, data) for m in self.view.members if m != me)
        else:
            self._packets.append((ev.dest, ev.data))

    def _to_app(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver or cls is Safe:
            self._events.append(ev)
            if self.recorder:
                self.recorder("deliver" if cls is Deliver else "safe", self.view, ev)
        elif cls is Block:
            self.blocked = True
            self._events.append(ev)
            self._q.append((self._top_down, BlockOk()))
        elif cls is View:
            self._next_view = ev.view
        elif cls is Exit:
            self._events.append(ev)
            if self.recorder:
                self.recorder("exit", self.view, ev)
            self._exiting = True  # stop once what is queued (the last installs) has gone out
        else:
            self._events.append(ev)

    def _install(self) -> None:
        view, self._next_view = self._next_view, None
        self.prev_view = self.view
        self.view = view
        self.blocked = False
        self._build()
        self._events.append(View(view))
        if self.recorder:
            self.recorder("view", view)
        if view.primary and self._pending_casts:
            pending, self._pending_casts = self._pending_casts, []
            for p in pending:
                self._send_cast(p)
        future, self._future = self._future, []
        for src, pkt in future:
            self._route(src, pkt)
