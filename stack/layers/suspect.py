"""Failure detection by heartbeats, and the delivery lease that keeps zombies quiet.

Why heartbeats: a crashed or hung member sends nothing, so silence for `timeout` seconds is the
suspicion. Why a lease: a member that was paused (SIGSTOP, a long GC) wakes up with a stale view and
a queue of old packets; it must not deliver in that view after the others moved on. So every member
pings with its own clock and peers echo the timestamp back (PONG). An echo of timestamp t from q
means q heard us at or after t, and q will not agree to exclude us before t + timeout. Holding echoes
from a majority of the view newer than now - lease (lease < timeout) proves no new primary view can
exist without us yet: deliveries above this layer are allowed only until `Lease.until`.

When the view starts to change (`Blocked`), we stop echoing, and report for every peer how much of
the lease we granted it is left (`Granted`), so the coordinator can wait it out before installing a
view that excludes a member which might still be alive. Transports may inject `Suspect` (a closed
TCP connection is a certain crash: see `cohort.stack.transport.fdsock`); such members are reported `dead`, and the
lease granted to them is reported as 0 (a dead process delivers nothing). Requires: net. Provides: suspicion, lease.

Control headers: (PING, t), (PONG, t).
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
    Granted,
    Lease,
    Send,
    Stable,
    Suspect,
    Timer,
    Verify,
)
from cohort.stack.layer import Layer

PING, PONG = 0, 1
INF = float("inf")


@dataclass(frozen=True, slots=True)
class Params:
    #: seconds between heartbeats
    interval: float = 0.1
    #: seconds of silence before a member is suspected
    timeout: float = 1.0
    #: seconds a majority's echo lets us deliver; must stay below `timeout`
    lease: float = 0.5
    #: another member's suspicion is confirmed only if we have not heard the member for this long
    #: (JGroups' VERIFY_SUSPECT: a member back from a partition reports stale suspicions)
    verify: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.interval < self.timeout:
            raise ValueError("need 0 < interval < timeout")
        if not 0 < self.lease < self.timeout:
            raise ValueError("need 0 < lease < timeout: a lease must expire before exclusion")


class SuspectLayer(Layer):
    name: ClassVar[str] = "suspect"
    provides: ClassVar[frozenset[str]] = frozenset({"suspicion", "lease"})
    requires: ClassVar[frozenset[str]] = frozenset({"net"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Deliver, DeliverSend, Stable})
    passes_down: ClassVar[frozenset[type]] = frozenset({Cast, Send})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        now = ctx.now
        self.last_heard = [now] * n
        self.pong = [-INF] * n
        self.echoed_at = [-INF] * n
        self.suspects: set[int] = set()  # silent for `timeout`: forgiven when heard again
        self.forced: set[int] = set()  # suspected for the rest of the view
        self.dead: set[int] = set()  # certainly crashed (closed connection): lease irrelevant
        self.reported: frozenset[int] = frozenset()
        self.reported_dead = 0
        self.blocked = False
        self.lease_until = -INF
        # A successor view needs a majority of this view's acceptors (`last_primary`; joiners are
        # not among them), so the lease needs echoes from such a majority: any such set meets the
        # members that make the successor, and they report the lease they granted us.
        ref = view.last_primary if view.primary else view.members
        self.voters = [r for r, m in enumerate(view.members) if m in ref and r != self.me]
        self.need = len(ref) // 2 + 1 - (1 if ctx.me in ref else 0)
        if self.need <= 0:
            self.lease_until = INF
        ctx.up(Lease(self.lease_until))  # no deliveries in a new view before a majority echoes
        if n > 1:
            self._ping()
        ctx.set_timer(params.interval, "beat")

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Control:
            ev.hdrs.append(None)
            self.ctx.down(ev)
        elif cls is Verify:
            now, quiet = self.ctx.now, self.params.verify
            ranks = {r for r in ev.ranks if 0 <= r < len(self.last_heard) and r != self.me}
            if ev.dead:
                self.forced |= ranks
                self.dead |= ranks
            elif ev.force:
                self.forced |= ranks
            else:
                self.suspects |= {r for r in ranks if now - self.last_heard[r] > quiet}
            self._report()
        elif cls is Blocked:
            if not self.blocked:
                self.blocked = True
                now, lease = self.ctx.now, self.params.lease
                dead = self.dead
                self.ctx.up(
                    Granted(
                        tuple(
                            0.0 if r in dead else max(0.0, t + lease - now)
                            for r, t in enumerate(self.echoed_at)
                        )
                    )
                )
            self.ctx.down(ev)
        else:
            self.ctx.down(ev)

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is ControlIn:
            h = ev.hdrs.pop()
            if h is None:
                self.ctx.up(ev)
                return
            src = ev.src
            self.last_heard[src] = self.ctx.now
            if src in self.suspects:
                self.suspects.discard(src)
                self._report()
            if h[0] == PING and isinstance(h[1], int | float):
                if not self.blocked:
                    self.echoed_at[src] = self.ctx.now
                    self.ctx.down(Control(src, b"", [(PONG, h[1])]))
            elif h[0] == PONG and isinstance(h[1], int | float):
                if h[1] > self.pong[src] and h[1] <= self.ctx.now:
                    self.pong[src] = h[1]
                    self._renew()
            else:
                self.ctx.count("suspect.bad_header")
        elif cls is Timer:
            self._ping()
            self._check()
            self.ctx.set_timer(self.params.interval, "beat")
        elif cls is Suspect:  # from the transport: a closed connection is a certain crash
            ranks = {r for r in ev.ranks if r != self.me and 0 <= r < len(self.last_heard)}
            self.forced |= ranks
            self.dead |= ranks
            self._report()
        else:
            self.ctx.up(ev)

    def _ping(self) -> None:
        self.ctx.down(Control(None, b"", [(PING, self.ctx.now)]))

    def _check(self) -> None:
        now, timeout = self.ctx.now, self.params.timeout
        for r, t in enumerate(self.last_heard):
            if r != self.me and now - t > timeout:
                self.suspects.add(r)
        self._report()

    def _report(self) -> None:
        current = frozenset(self.suspects | self.forced)
        if current != self.reported or len(self.dead) != self.reported_dead:
            self.reported = current
            self.reported_dead = len(self.dead)
            self.ctx.trace(f"suspects {sorted(self.view.members[r] for r in current)}")
            self.ctx.up(Suspect(current, frozenset(self.dead)))

    def _renew(self) -> None:
        if self.need <= 0 or self.need > len(self.voters):
            return
        echoes = sorted((self.pong[r] for r in self.voters), reverse=True)
        until = echoes[self.need - 1] + self.params.lease
        if until > self.lease_until:
            self.lease_until = until
            self.ctx.up(Lease(until))

    def dump(self) -> dict:
        return {"suspects": sorted(self.reported), "lease_until": self.lease_until}


def fmt_header(h: Any) -> str:
    return "-" if h is None else f"{'PING' if h[0] == PING else 'PONG'}({h[1]:.3f})"
