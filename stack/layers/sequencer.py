"""Total order by a fixed sequencer: the coordinator's own FIFO stream is the order.

Why this scheme: with reliable FIFO below, the order can be a run-length script ("next deliver 3
casts of member 2, then 1 of member 0") cast by rank 0; its own data casts are their own slots. Every
member replays the sequencer's stream, so agreeing on that stream (which flush guarantees) is
agreeing on the order. Orders are batched per event-loop tick with a zero-delay timer.

At a view end every survivor holds the same casts (flush), so casts still without a slot are
delivered in a deterministic order (by origin rank, then FIFO) — unless the next view is not
primary or excludes us, in which case nothing more is delivered in this view.

Uniformity: a delivered message is reported `Safe` once it and every slot before it (the data and
the sequencer cast that ordered it) are held by a majority of the view's acceptors (`Stable.quorum`):
the flush of any next primary view hears from a majority of them, so its cut holds both, and no
survivor can miss the message or order it differently (docs/guarantees.md, V5: waiting for every member would
let the slowest one set the reply latency). Requires: fifo, views, flush, stability. Provides: total.

Header on casts: (DATA,) for a data cast, (ORDER, [origin, count, origin, count, ...]).
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from cohort.stack.events import Cast, Deliver, DeliverSend, Lease, Send, Stable, Timer, View  # noqa: F811
from cohort.stack.events import Safe as SafeEv
from cohort.stack.layer import Layer

DATA, ORDER = 0, 1
_DATA_HDR = (DATA,)


class Sequencer(Layer):
    name: ClassVar[str] = "sequencer"
    provides: ClassVar[frozenset[str]] = frozenset({"total", "uniform"})
    requires: ClassVar[frozenset[str]] = frozenset({"fifo", "views", "flush", "stability"})
    passes_up: ClassVar[frozenset[type]] = frozenset({DeliverSend, Lease})
    passes_down: ClassVar[frozenset[type]] = frozenset({Send})

    def __init__(self, ctx, view, params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self.is_seq = self.me == 0
        self.data: list[deque] = [deque() for _ in range(n)]  # undelivered data per origin
        self.nak_seq = [0] * n  # casts seen per origin (data and order alike) = nak seq + 1
        self.script: deque = deque()  # pending slots: [origin, remaining, seq_stream_index]
        self.pending: list[int] = []  # sequencer only: origins to order, in arrival order
        self.timer_set = False
        self.unsafe: deque = deque()  # (origin, origin_nak_index, order_nak_index)
        self.delivered = 0
        self.safe = 0
        self.mins = (0,) * n

    def down(self, ev: Any) -> None:
        if type(ev) is Cast:
            ev.hdrs.append(_DATA_HDR)
        self.ctx.down(ev)

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:
            o = ev.origin
            idx = self.nak_seq[o]
            self.nak_seq[o] = idx + 1
            h = ev.hdrs.pop()
            if h[0] == DATA:
                if o == 0:  # the sequencer's own data is its own slot
                    self.script.append([0, 1, idx])
                    self.data[0].append((ev, idx))
                else:
                    self.data[o].append((ev, idx))
                    if self.is_seq:
                        self.pending.append(o)
                        if not self.timer_set:
                            self.timer_set = True
                            self.ctx.set_timer(0.0, "order")
            elif h[0] == ORDER and o == 0:
                runs = h[1]
                for i in range(0, len(runs) - 1, 2):
                    self.script.append([runs[i], runs[i + 1], idx])
            else:
                self.ctx.count("sequencer.bad_header")
                return
            self._drain()
        elif cls is Stable:
            self.mins = ev.quorum or ev.mins
            self._advance_safe()
        elif cls is Timer:
            self.timer_set = False
            self._cast_order()
        elif cls is View:
            nv = ev.view
            if nv.primary and self.ctx.me in nv.members and self.view.primary:
                self._deliver_leftovers()
            self.ctx.up(ev)
        else:
            self.ctx.up(ev)

    def _cast_order(self) -> None:
        runs: list[int] = []
        last = -1
        for o in self.pending:
            if o == last:
                runs[-1] += 1
            else:
                runs += [o, 1]
                last = o
        self.pending = []
        if runs:
            self.ctx.down(Cast(b"", [(ORDER, runs)]))

    def _drain(self) -> None:
        script, data = self.script, self.data
        while script:
            slot = script[0]
            q = data[slot[0]]
            if not q:
                return
            ev, idx = q.popleft()
            self._deliver(ev, slot[0], idx, slot[2])
            slot[1] -= 1
            if slot[1] <= 0:
                script.popleft()

    def _deliver(self, ev: Deliver, origin: int, idx: int, order_idx: int) -> None:
        self.delivered += 1
        self.unsafe.append((origin, idx, order_idx))
        self.ctx.up(ev)

    def _advance_safe(self) -> None:
        mins, unsafe = self.mins, self.unsafe
        safe = self.safe
        while unsafe:
            o, idx, oidx = unsafe[0]
            if mins[o] > idx and mins[0] > oidx:
                unsafe.popleft()
                safe += 1
            else:
                break
        if safe != self.safe:
            self.safe = safe
            self.ctx.up(SafeEv(safe))

    def _deliver_leftovers(self) -> None:
        """View end: finish the script with what we hold, then the rest by rank; all are uniform."""
        script, data = self.script, self.data
        while script:
            slot = script.popleft()
            q = data[slot[0]]
            while slot[1] > 0 and q:
                ev, idx = q.popleft()
                self._deliver(ev, slot[0], idx, slot[2])
                slot[1] -= 1
        for o, q in enumerate(data):
            while q:
                ev, idx = q.popleft()
                self._deliver(ev, o, idx, idx)
        if self.delivered != self.safe:
            self.safe = self.delivered
            self.ctx.up(SafeEv(self.safe))

    def dump(self) -> dict:
        return {"delivered": self.delivered, "safe": self.safe, "script": len(self.script)}
