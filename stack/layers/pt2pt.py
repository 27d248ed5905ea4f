"""Reliable FIFO unicast within a view: per-destination sequence numbers, cumulative acks.

Why separate from nak: unicast traffic has one receiver, so a sender-driven scheme (retransmit
until acked) is cheaper than NAK detection and needs no stability gossip. Unacknowledged messages
die with the view: the application resends what matters after a view change. Requires: net.
Provides: pt2pt.

Headers on sends: (DATA, seq). Control: (ACK, count) — the receiver has everything below count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cohort.stack.events import (  # noqa: F811
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

DATA, ACK = 0, 1


@dataclass(frozen=True, slots=True)
class Params:
    #: seconds before an unacknowledged unicast is sent again
    retry_interval: float = 0.05


class Pt2pt(Layer):
    name: ClassVar[str] = "pt2pt"
    provides: ClassVar[frozenset[str]] = frozenset({"pt2pt"})
    requires: ClassVar[frozenset[str]] = frozenset({"net"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Deliver, Lease})
    passes_down: ClassVar[frozenset[type]] = frozenset({Cast, Stable})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self.send_next = [0] * n
        self.unacked: list[dict[int, tuple]] = [{} for _ in range(n)]
        self.recv_next = [0] * n
        self.ahead: list[dict[int, tuple]] = [{} for _ in range(n)]
        self.timer_set = False

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Send:
            d = ev.dest
            seq = self.send_next[d]
            self.send_next[d] = seq + 1
            if d == self.me:
                self.ctx.up(DeliverSend(d, ev.payload, ev.hdrs))
                return
            self.unacked[d][seq] = (ev.payload, tuple(ev.hdrs))
            ev.hdrs.append((DATA, seq))
            self.ctx.down(ev)
            self._arm()
        elif cls is Control:
            ev.hdrs.append(None)
            self.ctx.down(ev)
        else:
            self.ctx.down(ev)

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is DeliverSend:
            h = ev.hdrs.pop()
            if h is None or h[0] != DATA or type(h[1]) is not int:
                self.ctx.count("pt2pt.bad_header")
                return
            self._receive(ev.origin, h[1], ev.payload, ev.hdrs)
        elif cls is ControlIn:
            h = ev.hdrs.pop()
            if h is None:
                self.ctx.up(ev)
            elif h[0] == ACK and type(h[1]) is int:
                unacked = self.unacked[ev.src]
                for seq in [s for s in unacked if s < h[1]]:
                    del unacked[seq]
            else:
                self.ctx.count("pt2pt.bad_header")
        elif cls is Timer:
            self.timer_set = False
            self._retransmit()
        else:
            self.ctx.up(ev)

    def _receive(self, src: int, seq: int, payload: bytes, hdrs: list) -> None:
        nxt = self.recv_next[src]
        if seq == nxt:
            self.recv_next[src] = nxt = seq + 1
            self.ctx.up(DeliverSend(src, payload, hdrs))
            ahead = self.ahead[src]
            while nxt in ahead:
                p, h = ahead.pop(nxt)
                nxt += 1
                self.recv_next[src] = nxt
                self.ctx.up(DeliverSend(src, p, list(h)))
        elif seq > nxt:
            self.ahead[src][seq] = (payload, tuple(hdrs))
        else:
            self.ctx.count("pt2pt.duplicate")
        self.ctx.down(Control(src, b"", [(ACK, self.recv_next[src])]))

    def _retransmit(self) -> None:
        pending = False
        for dest, unacked in enumerate(self.unacked):
            for seq, (payload, hdrs) in sorted(unacked.items()):
                pending = True
                self.ctx.count("pt2pt.retransmitted")
                self.ctx.down(Send(dest, payload, [*hdrs, (DATA, seq)]))
        if pending:
            self._arm()

    def _arm(self) -> None:
        if not self.timer_set:
            self.timer_set = True
            self.ctx.set_timer(self.params.retry_interval, "retry")

    def dump(self) -> dict:
        return {"unacked": sum(len(u) for u in self.unacked)}


def fmt_header(h: Any) -> str:
    return "-" if h is None else f"{'DATA' if h[0] == DATA else 'ACK'}{tuple(h[1:])}"
