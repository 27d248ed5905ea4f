"""The wire boundary: turn events into packets and decoded packets into events.

Why here and not in every layer: one msgpack call per packet (cohort.stack.wire), and one place that knows
the packet kinds. The endpoint has already matched the packet to this view by its tag; the bottom
checks the sender's rank against the transport's source address, so a packet cannot claim another
member's rank. Provides: net.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cohort.stack import wire
from cohort.stack.events import (
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Oob,
    Packet,
    Recv,
    Send,
)
from cohort.stack.layer import Layer


class Bottom(Layer):
    name: ClassVar[str] = "bottom"
    provides: ClassVar[frozenset[str]] = frozenset({"net"})

    def __init__(self, ctx, view, params) -> None:
        super().__init__(ctx, view, params)
        self.tag = view.tag
        self.members = view.members

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Cast:
            self.ctx.down(
                Packet(None, wire.encode(wire.CAST, self.tag, self.me, ev.hdrs, ev.payload))
            )
        elif cls is Send:
            data = wire.encode(wire.SEND, self.tag, self.me, ev.hdrs, ev.payload)
            self.ctx.down(Packet(self.members[ev.dest], data))
        elif cls is Control:
            data = wire.encode(wire.CONTROL, self.tag, self.me, ev.hdrs, ev.payload)
            dest = None if ev.dest is None else self.members[ev.dest]
            self.ctx.down(Packet(dest, data))
        elif cls is Oob:
            self.ctx.down(Packet(ev.peer, wire.encode_oob(self.ctx.me, ev.msg)))
        # anything else is a control event no layer below consumed: it ends here

    def up(self, ev: Any) -> None:
        if type(ev) is not Recv:
            self.ctx.up(ev)
            return
        pkt = ev.data
        kind = pkt[0]
        if kind == wire.OOB:
            src = pkt[1]
            if ev.src is not None and ev.src != src:
                self.ctx.count("bottom.forged_src")
                return
            self.ctx.up(Oob(src, pkt[2]))
            return
        _, _, rank, hdrs, payload = pkt
        if not 0 <= rank < len(self.members) or rank == self.me:
            self.ctx.count("bottom.bad_rank")
            return
        if ev.src is not None and ev.src != self.members[rank]:
            self.ctx.count("bottom.forged_src")
            return
        if kind == wire.CAST:
            self.ctx.up(Deliver(rank, payload, hdrs))
        elif kind == wire.SEND:
            self.ctx.up(DeliverSend(rank, payload, hdrs))
        else:
            self.ctx.up(ControlIn(rank, payload, hdrs))
