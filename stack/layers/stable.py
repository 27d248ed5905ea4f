"""Stability detection: which casts every member has received.

Why: retransmission buffers can only be freed once nobody can ask for a message again, and a reply
to a client is only safe once the invocation cannot be lost with any single member (uniformity).
Each member gossips the per-origin counts it has received; the element-wise minimum over the view is
stable, the maximum tells nak about tail losses it could not otherwise see.

Gossip is sent shortly after new casts arrive (so stability follows traffic closely) and then
periodically while anything is unstable (so a lost gossip is repaired). A periodic gossip asks the
others to answer with theirs: a member that has everything stops gossiping, so if its last gossip
to us was lost, only our asking gets its counts to us (else our stability, and flow control's
credits, stay stale until the next traffic). Answers never ask, so two members that both wait
for a crashed one do not answer each other forever. Requires: fifo. Provides: stability.

Control header: (GOSSIP, counts, ask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cohort.stack.events import (
    Blocked,
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Lease,
    Send,
    Stable,
    Timer,
)
from cohort.stack.layer import Layer

GOSSIP = 0


@dataclass(frozen=True, slots=True)
class Params:
    #: seconds between new casts arriving and our counts being gossiped. Zero still batches: the
    #: timer fires after the driver has handled everything that arrived in the same loop tick, and
    #: client replies wait for this gossip (they are sent once an invocation is Safe)
    gossip_delay: float = 0.0
    #: seconds between gossips while some cast is not yet stable
    gossip_interval: float = 0.05


class StableLayer(Layer):
    name: ClassVar[str] = "stable"
    provides: ClassVar[frozenset[str]] = frozenset({"stability"})
    requires: ClassVar[frozenset[str]] = frozenset({"fifo"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({DeliverSend, Lease})
    passes_down: ClassVar[frozenset[type]] = frozenset({Cast, Send})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self.counts = [0] * n
        self.matrix = [[0] * n for _ in range(n)]  # row r: counts member r reported
        self.mins = (0,) * n
        self.maxs = (0,) * n
        self.quorum = (0,) * n
        # the acceptors (see View.last_primary): a count held by a majority of them survives any
        # next primary view, whose flush hears from a majority of them
        acc = [r for r in (view.rank(a) for a in view.last_primary) if r >= 0] or list(range(n))
        self.acceptors = acc
        self.majority = len(acc) // 2 + 1
        self.timer_set = False  # the periodic repair gossip
        self.dirty = False  # the prompt gossip after new casts (its own timer, never delayed by
        # the periodic one: a reply waits for it)
        self.frozen: tuple[int, ...] | None = None

    def down(self, ev: Any) -> None:
        if type(ev) is Control:
            ev.hdrs.append(None)
        elif type(ev) is Blocked:
            # Once blocked, the flush cut is at most what we delivered so far: casts received from
            # now on may fall beyond it, so they must never count as stable (a member being
            # excluded would otherwise report them Safe although the survivors drop them).
            if self.frozen is None:  # a later ballot must not thaw it: its cut is no larger
                self.frozen = tuple(self.counts)
            return
        self.ctx.down(ev)

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:
            self.counts[ev.origin] += 1
            if not self.dirty:
                self.dirty = True
                self.ctx.set_timer(self.params.gossip_delay, "prompt")
            self.ctx.up(ev)
        elif cls is ControlIn:
            h = ev.hdrs.pop()
            if h is None:
                self.ctx.up(ev)
            elif h[0] == GOSSIP and type(h[1]) is list and len(h[1]) == self.view.n:
                if all(type(c) is int for c in h[1]):
                    self.matrix[ev.src] = h[1]
                    self._recompute()
                    if len(h) > 2 and h[2] is True and not self.dirty:
                        self.dirty = True  # answer with our counts (an answer never asks)
                        self.ctx.set_timer(self.params.gossip_delay, "prompt")
                else:
                    self.ctx.count("stable.bad_header")
            else:
                self.ctx.count("stable.bad_header")
        elif cls is Timer:
            if ev.token == "prompt":
                if self.dirty:
                    self._gossip()
            else:
                self.timer_set = False
                self._gossip(ask=True)
        else:
            self.ctx.up(ev)

    def _gossip(self, ask: bool = False) -> None:
        self.dirty = False
        counts = list(self.counts if self.frozen is None else self.frozen)
        self.matrix[self.me] = counts
        self._recompute()
        unsettled = self.mins != tuple(counts) or self.maxs != tuple(counts)
        self.ctx.down(Control(None, b"", [(GOSSIP, counts, ask and unsettled)]))
        if unsettled:
            self._arm(self.params.gossip_interval)

    def _recompute(self) -> None:
        self.matrix[self.me] = self.counts if self.frozen is None else list(self.frozen)
        cols = list(zip(*self.matrix))
        mins = tuple(min(c) for c in cols)
        maxs = tuple(max(c) for c in cols)
        rows, k = [self.matrix[r] for r in self.acceptors], self.majority - 1
        quorum = tuple(sorted((row[o] for row in rows), reverse=True)[k] for o in range(len(cols)))
        if mins != self.mins or maxs != self.maxs or quorum != self.quorum:
            self.mins, self.maxs, self.quorum = mins, maxs, quorum
            ev = Stable(mins, maxs, quorum)
            self.ctx.up(ev)
            self.ctx.down(ev)

    def _arm(self, delay: float) -> None:
        if not self.timer_set:
            self.timer_set = True
            self.ctx.set_timer(delay, "gossip")

    def dump(self) -> dict:
        return {"mins": list(self.mins), "counts": list(self.counts)}


def fmt_header(h: Any) -> str:
    return "-" if h is None else f"GOSSIP{h[1]}"
