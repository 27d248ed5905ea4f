"""Reliable FIFO multicast: sequence numbers, NAKs for gaps, retransmission from any holder.

Why NAKs: an acknowledgement per message would cost O(n) packets per cast; with NAKs a loss-free
run sends nothing but the data. Every member keeps what it received until `stable` says all have it,
so a gap can be filled by any holder, not only by the origin (which may have crashed: the flush
relies on that). Own casts are delivered locally at once (loopback), so counts include them.

Tail losses are invisible to a receiver, so it also learns other members' highest counts from
stability gossip (`Stable.maxs`) and the flush's target (`Fetch`). Requires: net. Provides: fifo.

Theory of operation (repair): a hole is asked for as soon as it is seen (a cast arrives beyond it,
or gossip says someone has more), from a zero-delay timer so that the holes one loop tick reveals
go out as a few range NAKs; the first ask goes to the origin. Each hole remembers when it was last
asked for and how often, and is asked for again only after `xmit_interval`, alternately from
everyone (the origin may be gone; any holder answers) and from the origin. So a hole costs one
NAK and one retransmission when nothing else is lost, however many casts follow it, and the
repair takes a round trip instead of a timer period: re-asking every hole at every period made a
loaded group retransmit what was already on its way, which at 10% loss made the receivers
fall behind on retransmissions (congestion collapse).

Headers on casts: (DATA, seq). Control: (NAK, origin, lo, hi) and (RETRANS, origin, seq), the latter
carrying the stored upper headers and payload of the cast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cohort.stack.events import (
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
from cohort.stack.layer import Layer

DATA, NAK, RETRANS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Params:
    #: most seconds before a hole is asked for again (its NAK or retransmission may be lost)
    xmit_interval: float = 0.02
    #: fewest seconds before a hole is asked for again: between the two, three times the smoothed
    #: time repairs take (TCP's RTO, from holes asked for once: Karn), so on a fast network a
    #: lost repair costs a few round trips, not a timer period that stalls every later delivery
    min_xmit_interval: float = 0.002
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
        self.asked: list[dict[int, list]] = [{} for _ in range(n)]  # hole -> [last ask, tries]
        self.timer_at = float("inf")  # when the earliest re-ask timer ("xmit") fires
        self.prompt_set = False  # the ask-now timer ("gap")
        self.srtt: float | None = None  # smoothed seconds from first ask to repair

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
            if ev.token == "gap":
                self.prompt_set = False
            elif self.ctx.now >= self.timer_at:
                self.timer_at = float("inf")
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
            asked = self.asked[origin]
            if asked:
                self._repaired(asked.pop(seq, None))
            ahead = self.ahead[origin]
            if ahead:
                self._drain(origin, ahead)
        elif seq > nxt:
            ahead = self.ahead[origin]
            if seq in ahead:  # a copy of what already waits for the gap to fill
                self.ctx.count("nak.duplicate_ahead")
                return
            ahead[seq] = (payload, tuple(hdrs))
            if seq > self.target[origin]:
                self._prompt()  # new holes: [target, seq)
            if seq + 1 > self.target[origin]:
                self.target[origin] = seq + 1
        else:
            self.ctx.count("nak.duplicate")

    def _drain(self, origin: int, ahead: dict) -> None:
        seq = self.next[origin]
        held = self.held[origin]
        asked = self.asked[origin]
        while seq in ahead:
            payload, hdrs = ahead.pop(seq)
            if asked:
                self._repaired(asked.pop(seq, None))
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
        new = False  # holes nobody asked for yet
        for origin, c in enumerate(counts[: len(self.target)]):
            if c > self.target[origin]:
                new = new or (c > self.next[origin] and origin != self.me)
                self.target[origin] = c
        if new:
            self._prompt()

    def _repaired(self, item: list | None) -> None:
        if item is not None and item[1] == 1:  # asked once: the time is a round trip (Karn)
            rtt = self.ctx.now - item[0]
            self.srtt = rtt if self.srtt is None else self.srtt + (rtt - self.srtt) / 8

    def _rto(self) -> float:
        p = self.params
        if self.srtt is None:
            return p.xmit_interval
        return min(p.xmit_interval, max(p.min_xmit_interval, 3 * self.srtt))

    def _prompt(self) -> None:
        """Ask for new holes once this tick is handled."""
        if not self.prompt_set:
            self.prompt_set = True
            self.ctx.set_timer(0.0, "gap")

    def _arm(self, delay: float) -> None:
        """A re-ask timer `delay` from now, unless one fires earlier (a later one just finds
        nothing due, or what became due since)."""
        at = self.ctx.now + delay
        if at < self.timer_at:
            self.timer_at = at
            self.ctx.set_timer(delay, "xmit")

    def _nak_round(self) -> None:
        """Ask for every hole that is due (never asked, or last asked an RTO ago; not what
        already waits out of order): first from the origin, on later tries from everyone and the
        origin in turn, since the origin may be gone and any holder can answer. Looks at most
        `max_nak_span` holes past the first of each origin; the rest are asked as those fill."""
        now, interval = self.ctx.now, self._rto()
        span = self.params.max_nak_span
        wake = None  # when the earliest hole asked for but still open is due again
        for origin in range(len(self.next)):
            lo, end = self.next[origin], self.target[origin]  # missing: [lo, end) minus ahead
            asked = self.asked[origin]
            if lo >= end or origin == self.me:
                asked.clear()
                continue
            ahead = self.ahead[origin]
            budget = span
            seq = lo
            while seq < end and budget > 0:
                if seq in ahead:
                    seq += 1
                    continue
                budget -= 1
                item = asked.get(seq)
                if item is not None and now < item[0] + interval:
                    due = item[0] + interval
                    wake = due if wake is None or due < wake else wake
                    seq += 1
                    continue
                r = item[1] if item is not None else 0
                dest = origin if r % 2 == 0 else None
                hi = seq
                while hi + 1 < end and hi + 1 not in ahead and budget > 0:
                    nxt = asked.get(hi + 1)
                    if (nxt[1] if nxt else 0) % 2 != r % 2 or (nxt and now < nxt[0] + interval):
                        break  # the next hole goes elsewhere, or is not due yet
                    hi += 1
                    budget -= 1
                for s in range(seq, hi + 1):
                    prev = asked.get(s)
                    asked[s] = [now, (prev[1] if prev else 0) + 1]
                self.ctx.count("nak.nak_sent")
                self.ctx.down(Control(dest, b"", [(NAK, origin, seq, hi)]))
                due = now + interval
                wake = due if wake is None or due < wake else wake
                seq = hi + 1
            if seq < end and budget <= 0:  # holes beyond the span: look again after a period
                due = now + interval
                wake = due if wake is None or due < wake else wake
        if wake is not None:
            self._arm(max(0.0, wake - now))

    def dump(self) -> dict:
        return {"next": list(self.next), "target": list(self.target)}


def fmt_header(h: Any) -> str:
    if h is None:
        return "-"
    kind = {DATA: "DATA", NAK: "NAK", RETRANS: "RETRANS"}.get(h[0], "?")
    return f"{kind}{tuple(h[1:])}"
