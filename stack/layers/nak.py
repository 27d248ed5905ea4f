"""Reliable FIFO multicast: sequence numbers, NAKs for gaps, retransmission from any holder.

Why NAKs: an acknowledgement per message would cost O(n) packets per cast; with NAKs a loss-free
run sends nothing but the data. Every member keeps what it received until `stable` says all have it,
so a gap can be filled by any holder, not only by the origin (which may have crashed: the flush
relies on that). Own casts are delivered locally at once (loopback), so counts include them.

Tail losses are invisible to a receiver, so it also learns other members' highest counts from
stability gossip (`Stable.maxs`) and the flush's target (`Fetch`). Requires: net. Provides: fifo.

Headers on casts: (DATA, seq). Control: (NAK, origin, lo, hi) and (RETRANS, origin, seq), the latter
carrying the stored upper headers and payload of the cast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from stack.events import (
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Fetch,
    Lease,
    Send,
    Stable,
    Timer,
)
from stack.layer import Layer

DATA, NAK, RETRANS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Params:
    #: seconds between NAK rounds while something is missing; also the retransmission pace
    xmit_interval: float = 0.02
    #: most messages asked for in one NAK (bounds the retransmission burst)
    max_nak_span: int = 256


class Nak(Layer):
    name: ClassVar[str] = "nak"
    provides: ClassVar[frozenset[str]] = frozenset({"fifo"})
    requires: ClassVar[frozenset[str]] = frozenset({"net"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({DeliverSend, Lease})
    passes_down: ClassVar[frozenset[type]] = frozenset({Send})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self.next = [0] * n  # next seq expected from each origin (= count delivered)
        self.held: list[dict[int, tuple]] = [{} for _ in range(n)]  # seq -> (payload, hdrs)
        self.gc_below = [0] * n  # seqs below this were garbage-collected
        self.ahead: list[dict[int, tuple]] = [{} for _ in range(n)]  # out-of-order arrivals
        self.target = [0] * n  # highest count some member is known to have
        self.rounds = [0] * n
        self.timer_set = False

    # --- down ------------------------------------------------------------------------------------

    def down(self, ev: Any) -> None:
        if type(ev) is Cast:
            me = self.me
            seq = self.next[me]
            self.next[me] = seq + 1
            hdrs = ev.hdrs
            self.held[me][seq] = (ev.payload, tuple(hdrs))
            self.ctx.up(Deliver(me, ev.payload, list(hdrs)))
            hdrs.append((DATA, seq))
            self.ctx.down(ev)
        elif type(ev) is Control:
            ev.hdrs.append(None)
            self.ctx.down(ev)
        elif type(ev) is Fetch:
            self._raise_target(ev.cut)
        elif type(ev) is Stable:
            self._on_stable(ev)
        else:
            self.ctx.down(ev)

    # --- up --------------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:
            h = ev.hdrs.pop()
            if h is None or h[0] != DATA:
                self.ctx.count("nak.bad_header")
                return
            self._receive(ev.origin, h[1], ev.payload, ev.hdrs, ev)
        elif cls is ControlIn:
            h = ev.hdrs.pop()
            if h is None:
                self.ctx.up(ev)
            elif h[0] == NAK:
                self._on_nak(ev.src, h[1], h[2], h[3])
            elif h[0] == RETRANS:
                self._receive(h[1], h[2], ev.payload, ev.hdrs)
            else:
                self.ctx.count("nak.bad_header")
        elif cls is Timer:
            self.timer_set = False
            self._nak_round()
        else:
            self.ctx.up(ev)

    def _receive(
        self, origin: int, seq: int, payload: bytes, hdrs: list, ev: Deliver | None = None
    ) -> None:
        if not (0 <= origin < len(self.next)) or type(seq) is not int or origin == self.me:
            self.ctx.count("nak.bad_header")
            return
        nxt = self.next[origin]
        if seq == nxt:
            self.held[origin][seq] = (payload, tuple(hdrs))
            self.next[origin] = seq + 1
            self.ctx.up(ev if ev is not None else Deliver(origin, payload, hdrs))
            ahead = self.ahead[origin]
            if ahead:
                self._drain(origin, ahead)
        elif seq > nxt:
            self.ahead[origin][seq] = (payload, tuple(hdrs))
            if seq + 1 > self.target[origin]:
                self.target[origin] = seq + 1
            self._arm(self.params.xmit_interval / 2)
        else:
            self.ctx.count("nak.duplicate")

    def _drain(self, origin: int, ahead: dict) -> None:
        seq = self.next[origin]
        held = self.held[origin]
        while seq in ahead:
            payload, hdrs = ahead.pop(seq)
            held[seq] = (payload, hdrs)
            seq += 1
            self.next[origin] = seq
            self.ctx.up(Deliver(origin, payload, list(hdrs)))

    def _on_nak(self, src: int, origin: Any, lo: Any, hi: Any) -> None:
        if not (type(origin) is int and 0 <= origin < len(self.next)):
            self.ctx.count("nak.bad_header")
            return
        if not (type(lo) is int and type(hi) is int) or not 0 <= hi - lo < self.params.max_nak_span:
            self.ctx.count("nak.bad_header")
            return
        held = self.held[origin]
        for seq in range(max(lo, 0), hi + 1):
            item = held.get(seq)
            if item is not None:
                payload, hdrs = item
                self.ctx.count("nak.retransmitted")
                self.ctx.down(Control(src, payload, [*hdrs, (RETRANS, origin, seq)]))

    def _on_stable(self, ev: Stable) -> None:
        self._raise_target(ev.maxs)
        for origin, low in enumerate(ev.mins):
            below = self.gc_below[origin]
            if low > below:
                held = self.held[origin]
                for seq in range(below, low):
                    held.pop(seq, None)
                self.gc_below[origin] = low

    def _raise_target(self, counts: tuple[int, ...]) -> None:
        missing = False
        for origin, c in enumerate(counts[: len(self.target)]):
            if c > self.target[origin]:
                self.target[origin] = c
            if self.target[origin] > self.next[origin]:
                missing = True
        if missing:
            self._arm(0.0)

    def _arm(self, delay: float) -> None:
        if not self.timer_set:
            self.timer_set = True
            self.ctx.set_timer(delay, "xmit")

    def _nak_round(self) -> None:
        """Ask for every hole (not what already waits out of order): first from the origin, on
        later rounds from everyone, since the origin may be gone and any holder can answer."""
        again = False
        span = self.params.max_nak_span
        for origin in range(len(self.next)):
            lo, end = self.next[origin], self.target[origin]  # missing: [lo, end) minus ahead
            if lo >= end or origin == self.me:
                self.rounds[origin] = 0
                continue
            r = self.rounds[origin]
            self.rounds[origin] = r + 1
            dest = origin if r % 2 == 0 else None
            ahead = self.ahead[origin]
            budget = span
            seq = lo
            while seq < end and budget > 0:
                if seq in ahead:
                    seq += 1
                    continue
                hi = seq
                while hi + 1 < end and hi + 1 not in ahead and hi + 1 - seq < budget - 1:
                    hi += 1
                self.ctx.count("nak.nak_sent")
                self.ctx.down(Control(dest, b"", [(NAK, origin, seq, hi)]))
                budget -= hi - seq + 1
                seq = hi + 1
            again = True
        if again:
            self._arm(self.params.xmit_interval)

    def dump(self) -> dict:
        return {"next": list(self.next), "target": list(self.target)}


def fmt_header(h: Any) -> str:
    if h is None:
        return "-"
    kind = {DATA: "DATA", NAK: "NAK", RETRANS: "RETRANS"}.get(h[0], "?")
    return f"{kind}{tuple(h[1:])}"
