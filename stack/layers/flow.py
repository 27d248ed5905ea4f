"""Flow control: a member keeps a bounded amount of its own data unacknowledged.

Why: nak keeps every cast until `stable` reports that every member has it, pt2pt keeps (and
resends) every send until its destination acknowledges it, and nothing else slows a sender down: a
slow or overloaded receiver (or one whose socket buffer overflowed in a burst) would make those
buffers, and the sender's socket queue, grow without bound. Ensemble's mflow and JGroups' MFC/UFC
bound what a sender has in flight by credits that the receivers return.

Casts (MFC): the credits are the stability information the stack already gossips. `Stable.mins[me]`
counts my casts that every member has received, so the bytes of my later casts are exactly what nak
must still hold for me, at every member. No extra messages, and the bound covers every member's
buffers, not only the sender's. The price: credits return at the pace of stability gossip, so one
sender moves about `window` per gossip round.
Sends (UFC): pt2pt's acknowledgements are its own business, so the receiving flow layer returns
credit explicitly, cumulatively, each time a quarter of `send_window` has arrived from a sender.

Theory of operation:
- Every cast (send) going down is charged len(payload) + `overhead` bytes. Cast charges are kept in
  cast order: flow sits above flush and below sequencer, so it sees every cast that this member's
  nak numbers (the sequencer's order casts included), and the i-th charge is nak's seq i.
- A cast that would take the unstable bytes over `window` is queued, and so is every cast after it
  (FIFO), unless nothing is in flight (a cast larger than the window goes alone). Queueing sends
  `Backpressure(True)` up to the application; the queue draining sends `Backpressure(False)`.
  Sends queue per destination the same way against `send_window`, without a signal: a send is not
  awaited (`cohort.stack.transport.group.Group.send`), and pt2pt drops unacknowledged sends at a view change anyway.
- `Stable` going up: my casts below mins[me] are stable, their charges return, and the queue drains
  as far as the window allows (mins may step back on reordered gossip: only increases count).
  (SEND_CREDIT, total) from a destination returns the charges of the first `total` bytes sent to it.
- Credit can be lost: stability gossip stops once a member sees everything stable (if the gossip that
  would have told us was lost, our `mins` stay stale in a quiet group), and a SEND_CREDIT is one
  unreliable control message. A member blocked for `probe_interval` therefore asks: ASK to everyone,
  answered with the mins[asker] of each one's latest Stable (any member's mins is a lower bound of
  what every member has received, so the largest answer is a safe credit), and SEND_ASK to a
  destination, answered with a fresh SEND_CREDIT.
- View end: once gms starts a flush, stable freezes our counts, so no credit returns in this view.
  At `BlockOk` (the application has stopped casting) the whole queue is sent at once, and BlockOk
  goes on to flush from a zero-delay timer: by then nak has looped those casts back up through
  flush, so flush's report counts them and every survivor delivers them in this view. No message
  (nor a fragmented message's tail) is carried into the next view, and none is lost; the burst is at
  most the window plus what was queued. From then on nothing is throttled (only sequencer orders
  and stray sends still go down in this view). Queued sends are released at the same time.
Requires: stability. Provides: flow.

Control headers: (ASK,), (CREDIT, count), (SEND_ASK,), (SEND_CREDIT, bytes). None on data.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from cohort.stack.events import (
    Backpressure,
    Block,
    BlockOk,
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Lease,
    Leave,
    Send,
    Stable,
    Timer,
)
from cohort.stack.layer import Layer

ASK, CREDIT, SEND_ASK, SEND_CREDIT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Params:
    #: most bytes of this member's casts not yet received by every member (payload + overhead)
    window: int = 2 << 20
    #: most bytes of this member's sends to one destination not yet credited by it
    send_window: int = 2 << 20
    #: bytes charged per cast or send on top of its payload (headers, bookkeeping), so that a
    #: flood of tiny messages is bounded too
    overhead: int = 64
    #: seconds blocked without credit before asking the others for it
    probe_interval: float = 0.1

    def __post_init__(self) -> None:
        if min(self.window, self.send_window) < 1 or self.overhead < 0 or self.probe_interval <= 0:
            raise ValueError("need window, send_window >= 1, overhead >= 0, probe_interval > 0")


class Flow(Layer):
    name: ClassVar[str] = "flow"
    provides: ClassVar[frozenset[str]] = frozenset({"flow"})
    requires: ClassVar[frozenset[str]] = frozenset({"stability"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Deliver, Lease, Block})
    passes_down: ClassVar[frozenset[type]] = frozenset({Leave})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self._down = ctx.down  # bound once: called per cast
        self.window = params.window
        self.overhead = params.overhead
        self.inflight = 0  # bytes charged for my casts not yet stable
        self.charges: deque[int] = deque()  # per unstable cast, in cast order
        self.acked = 0  # my casts known stable (charges returned)
        self.queue: deque[Cast] = deque()
        self.blocked = False  # Backpressure(True) was sent and not yet lifted
        self.open = False  # BlockOk seen: the view is ending, nothing is throttled any more
        self.mins: tuple[int, ...] = (0,) * n  # the latest Stable.mins (answers to ASK)
        self.probing = False  # a "probe" timer is pending
        # sends, per destination: bytes charged, bytes credited, sends waiting
        self.sent = [0] * n
        self.credited = [0] * n
        self.send_queues: list[deque[Send]] = [deque() for _ in range(n)]
        # sends, per origin: bytes received, bytes we last credited
        self.got = [0] * n
        self.told = [0] * n
        self.credit_every = max(1, params.send_window // 4)

    # --- down ------------------------------------------------------------------------------------

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Cast:
            cost = len(ev.payload) + self.overhead
            if self.queue or (
                self.inflight and self.inflight + cost > self.window and not self.open
            ):
                self.queue.append(ev)
                if not self.blocked:
                    self.blocked = True
                    self.ctx.up(Backpressure(True))
                    self._arm_probe()
                return
            self.inflight += cost
            self.charges.append(cost)
            self._down(ev)
        elif cls is Send:
            self._send(ev)
        elif cls is BlockOk:
            self.open = True
            for d, q in enumerate(self.send_queues):
                if q:
                    self._release_sends(d)
            if not self.queue:
                self.ctx.down(ev)
                return
            self.ctx.count("flow.released_at_block", len(self.queue))
            self._release()
            self.ctx.set_timer(0.0, "block_ok")
        elif cls is Control:
            ev.hdrs.append(None)
            self.ctx.down(ev)
        else:
            self.ctx.down(ev)

    def _send(self, ev: Send) -> None:
        d = ev.dest
        if d == self.me or not 0 <= d < len(self.sent):  # to self: pt2pt buffers nothing
            self.ctx.down(ev)
            return
        cost = len(ev.payload) + self.overhead
        out = self.sent[d] - self.credited[d]
        q = self.send_queues[d]
        if q or (out and out + cost > self.params.send_window and not self.open):
            q.append(ev)
            self._arm_probe()
            return
        self.sent[d] += cost
        self.ctx.down(ev)

    # --- up --------------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Stable:
            self.mins = ev.mins
            self._credit(ev.mins[self.me])
            self.ctx.up(ev)
        elif cls is DeliverSend:
            src = ev.origin
            if src != self.me:
                self.got[src] += len(ev.payload) + self.overhead
                if self.got[src] - self.told[src] >= self.credit_every:
                    self._send_credit(src)
            self.ctx.up(ev)
        elif cls is ControlIn:
            h = ev.hdrs.pop()
            if h is None:
                self.ctx.up(ev)
            else:
                self._control(ev.src, h)
        elif cls is Timer:
            if ev.token == "block_ok":
                self.ctx.down(BlockOk())
            else:
                self.probing = False
                self._probe()
        else:
            self.ctx.up(ev)

    def _control(self, src: int, h: Any) -> None:
        if type(h) not in (list, tuple) or not h:
            self.ctx.count("flow.bad_header")
            return
        kind = h[0]
        if kind == ASK and len(h) == 1:
            self.ctx.down(Control(src, b"", [(CREDIT, self.mins[src])]))
        elif kind == CREDIT and len(h) == 2 and type(h[1]) is int:
            self._credit(h[1])
        elif kind == SEND_ASK and len(h) == 1:
            self._send_credit(src)
        elif kind == SEND_CREDIT and len(h) == 2 and type(h[1]) is int:
            if h[1] > self.credited[src]:
                self.credited[src] = min(h[1], self.sent[src])  # never beyond what we sent
                if self.send_queues[src]:
                    self._release_sends(src)
        else:
            self.ctx.count("flow.bad_header")

    def _send_credit(self, src: int) -> None:
        self.told[src] = self.got[src]
        self.ctx.down(Control(src, b"", [(SEND_CREDIT, self.got[src])]))

    def _credit(self, acked: int) -> None:
        """My first `acked` casts are stable: return their charges and send what now fits."""
        n = min(acked - self.acked, len(self.charges))  # never beyond what we sent
        if n > 0:
            charges = self.charges
            for _ in range(n):
                self.inflight -= charges.popleft()
            self.acked += n
            if self.queue:
                self._release()

    def _release(self) -> None:
        """Send queued casts while the window allows (all of them once the view is ending)."""
        queue, window, overhead = self.queue, self.window, self.overhead
        while queue:
            cost = len(queue[0].payload) + overhead
            if self.inflight and self.inflight + cost > window and not self.open:
                return
            self.inflight += cost
            self.charges.append(cost)
            self.ctx.down(queue.popleft())
        if self.blocked:
            self.blocked = False
            self.ctx.up(Backpressure(False))

    def _release_sends(self, d: int) -> None:
        q, window, overhead = self.send_queues[d], self.params.send_window, self.overhead
        while q:
            cost = len(q[0].payload) + overhead
            out = self.sent[d] - self.credited[d]
            if out and out + cost > window and not self.open:
                return
            self.sent[d] += cost
            self.ctx.down(q.popleft())

    def _arm_probe(self) -> None:
        if not self.probing:
            self.probing = True
            self.ctx.set_timer(self.params.probe_interval, "probe")

    def _probe(self) -> None:
        """Still blocked after `probe_interval`: ask for the credit we may have missed."""
        if self.open:
            return
        asked = False
        if self.queue:
            self.ctx.down(Control(None, b"", [(ASK,)]))
            asked = True
        for d, q in enumerate(self.send_queues):
            if q:
                self.ctx.down(Control(d, b"", [(SEND_ASK,)]))
                asked = True
        if asked:
            self.ctx.count("flow.probe")
            self._arm_probe()

    def dump(self) -> dict:
        return {
            "inflight": self.inflight,
            "queued": len(self.queue),
            "blocked": self.blocked,
            "sends_queued": sum(len(q) for q in self.send_queues),
        }


def fmt_header(h: Any) -> str:
    if h is None:
        return "-"
    kind = {ASK: "ASK", CREDIT: "CREDIT", SEND_ASK: "SEND_ASK", SEND_CREDIT: "SEND_CREDIT"}
    args = ", ".join(str(x) for x in h[1:])
    return f"{kind.get(h[0], '?')}({args})" if args else kind.get(h[0], "?")
