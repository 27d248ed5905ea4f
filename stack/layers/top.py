"""The application boundary: ranks become addresses, and deliveries wait for a valid lease.

Why the lease gate lives here: it is the last point before the application, so nothing the layers
below do (ordering, flushing) can leak a delivery out of a view that the primary may have left (see
`suspect` for the lease). Deliveries held by an expired lease are released when the lease is renewed,
or at the view end when we move on with the primary; otherwise they are dropped with the view.
Stacks without a failure detector have no lease and deliver at once. Requires: nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from cohort.stack.events import Deliver, DeliverSend, Lease, Safe, View
from cohort.stack.layer import Layer


class Top(Layer):
    name: ClassVar[str] = "top"

    def __init__(self, ctx, view, params) -> None:
        super().__init__(ctx, view, params)
        self.members = view.members
        self.primary = view.primary
        self.leased = False  # becomes True when the stack below provides leases
        self.lease_until = float("inf")
        self.held: deque = deque()  # deliveries (and Safe counts) waiting for a lease

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver or cls is DeliverSend:
            if not self.primary:
                self.ctx.count("top.nonprimary_drop")
                return
            ev.origin = self.members[ev.origin]  # the application speaks addresses
            if self.held or self.ctx.now >= self.lease_until:
                self.held.append(ev)
            else:
                self.ctx.up(ev)
        elif cls is Safe:
            if self.held:
                self.held.append(ev)
            else:
                self.ctx.up(ev)
        elif cls is Lease:
            self.lease_until = ev.until
            if self.ctx.now < ev.until:
                self._release()
        elif cls is View:
            nv = ev.view
            if nv.primary and self.ctx.me in nv.members and self.primary:
                self._release()
            else:
                self.held.clear()
            self.ctx.up(ev)
        else:
            self.ctx.up(ev)

    def _release(self) -> None:
        held = self.held
        while held:
            self.ctx.up(held.popleft())

    def dump(self) -> dict:
        return {"held": len(self.held), "lease_until": self.lease_until}
