"""Flush: every survivor delivers the same set of casts in a view before the next view.

Why: virtual synchrony (V3) needs members that move from V to V' together to have delivered the
same messages in V, although some were lost in transit and their origin may be dead.

Theory of operation (member side; gms runs the coordinator side and the messages):
1. `FlushStart` from gms: ask the application to stop casting (`Block`), wait for `BlockOk`.
2. Report how many casts of each origin we passed up (`FlushReport`); from then on delivery is
   frozen there: later arrivals are held, not delivered. For our own origin we report what we
   sent, not what has come back up yet: a cast sent just before `BlockOk` may still be on its way
   round, and the cut must include it, or we would move on without delivering our own message.
3. `FlushCut` from gms: the coordinator's cut is the element-wise maximum of all reports, so at
   least one survivor holds every message below it. Deliver exactly up to the cut (releasing held
   ones, asking nak to `Fetch` the rest from any holder), then `FlushDone`. What lies beyond stays
   held: if that coordinator dies, its successor's cut may be larger; at the view end it is dropped.
A coordinator that dies mid-flush is replaced; its successor's `FlushStart` gets a fresh report of
the (still frozen) counts. Requires: fifo, views. Provides: flush.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from cohort.stack.events import (
    Block,
    BlockOk,
    Cast,
    Deliver,
    DeliverSend,
    Fetch,
    FlushCut,
    FlushDone,
    FlushReport,
    FlushStart,
    Lease,
    Send,
    Stable,
)
from cohort.stack.layer import Layer


class Flush(Layer):
    name: ClassVar[str] = "flush"
    provides: ClassVar[frozenset[str]] = frozenset({"flush"})
    requires: ClassVar[frozenset[str]] = frozenset({"fifo", "views"})
    passes_up: ClassVar[frozenset[type]] = frozenset({DeliverSend, Stable, Lease})
    passes_down: ClassVar[frozenset[type]] = frozenset({Send})

    def __init__(self, ctx, view, params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self.counts = [0] * n
        self.sent = 0  # our own casts gone down in this view
        self.blocking = False
        self.block_ok = False
        self.frozen = False
        self.attempt: tuple | None = None
        self.cut: list[int] | None = None
        self.held: list[deque] = [deque() for _ in range(n)]

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:
            if not self.frozen:
                self.counts[ev.origin] += 1
                self.ctx.up(ev)
                return
            o = ev.origin
            cut = self.cut
            if cut is not None and self.counts[o] < cut[o] and not self.held[o]:
                self.counts[o] += 1
                self.ctx.up(ev)
                self._maybe_done()
            else:  # beyond the cut: held, as a later coordinator's cut may still include it
                self.held[o].append(ev)
        elif cls is FlushStart:
            self.attempt = ev.attempt
            self.cut = None
            if not self.blocking:
                self.blocking = True
                self.ctx.up(Block())
            elif self.block_ok:
                self._report()
        elif cls is FlushCut:
            if ev.attempt != self.attempt or not self.frozen:
                return
            cut = list(ev.cut)
            if any(c < have for c, have in zip(cut, self.counts)):
                self.ctx.count("flush.cut_below_delivered")
                return
            self.cut = cut
            for o, queue in enumerate(self.held):
                while queue and self.counts[o] < cut[o]:
                    self.counts[o] += 1
                    self.ctx.up(queue.popleft())
            self.ctx.down(Fetch(tuple(cut)))
            self._maybe_done()
        else:
            self.ctx.up(ev)

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Cast:
            self.sent += 1
        elif cls is BlockOk:
            self.block_ok = True
            if self.attempt is not None:
                self._report()
            return
        self.ctx.down(ev)

    def _report(self) -> None:
        self.frozen = True
        counts = list(self.counts)
        counts[self.me] = max(counts[self.me], self.sent)
        self.ctx.down(FlushReport(self.attempt, tuple(counts)))

    def _maybe_done(self) -> None:
        if self.cut is not None and self.counts == self.cut:
            self.ctx.down(FlushDone(self.attempt))

    def dump(self) -> dict:
        return {"counts": list(self.counts), "frozen": self.frozen, "cut": self.cut}
