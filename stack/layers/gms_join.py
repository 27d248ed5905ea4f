"""The join role of gms: ask to be let in, and decide whom to let in.

Why a separate role class: who may admit whom is what keeps a forming group from splitting in
two, and it has a small state of its own (when we last heard from a lower-ranked forming seed);
the rule itself is the pure function `cohort.stack.view.admits`. Like `CoordinatorRole`, it
reaches the layer's shared state (view, joiners, relays) through `g`. See `cohort.stack.layers.gms`
for the theory of operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cohort.stack.events import Oob, Verify
from cohort.stack.layers.gms_wire import FWD_JOIN, OOB_INSTALL, OOB_JOIN, view_to_wire
from cohort.stack.view import admits

if TYPE_CHECKING:
    from cohort.stack.layers.gms import Gms

#: the reference of a view of a group still forming (no primary view yet): the seed list
FORMING = (0, "")


class JoinRole:
    def __init__(self, g: Gms) -> None:
        self.g = g
        self.born = g.ctx.now  # since when we could hear from lower-ranked forming seeds
        self.lower_heard = float("-inf")  # a JOIN from a lower seed's forming component, when

    def msg(self) -> list:
        v = self.g.view
        return [
            OOB_JOIN,
            self.g.ctx.me,
            v.ltime,
            list(v.last_primary_vid),
            list(v.last_primary),
            v.coord,
        ]

    def send(self) -> None:
        """Outside the primary component: ask the seeds and the last primary view's members."""
        g, v = self.g, self.g.view
        msg = self.msg()
        for m in dict.fromkeys([*g.ctx.seeds, *v.last_primary]):
            if m not in v.members:
                g.ctx.down(Oob(m, msg))

    def on_join(self, msg: list) -> None:
        g = self.g
        _, addr, ltime, _, _, _ = msg[:6]
        addr = str(addr)
        # secure stacks: auth appended the joiner's public key; a new one means a new incarnation
        pub = msg[6] if len(msg) > 6 else None
        known = g.ring.pubs.get(addr) if g.ring is not None else None
        reborn = pub is not None and known is not None and pub != known
        v = g.view
        if type(ltime) is not int:
            raise TypeError("ltime")
        coord = g._coordinator()
        if coord != g.me:
            g._to(coord, (FWD_JOIN, msg))
            return
        seeds, me, theirs = g.ctx.seeds, g.ctx.me, msg[5]
        forming = not v.primary and v.last_primary_vid == FORMING
        if forming and msg[3] in ([*FORMING], FORMING) and theirs in seeds[: self.rank()]:
            self.lower_heard = g.ctx.now  # a lower seed forms a component too: leave it the rest
        if addr in v.members:
            r = v.rank(addr)
            if r == g.me:
                return
            if ltime < v.ltime and not reborn:  # it never installed this view (lost): resend
                if g.ctx.now - g.relayed.get(addr, -1.0) >= 0.05:
                    g.relayed[addr] = g.ctx.now
                    out = [OOB_INSTALL, view_to_wire(v), [addr]]
                    keyed = g._keyed(v)
                    g.ctx.down(Oob(addr, [*out, None, *keyed] if keyed else out))
                return
            # it left this view (excluded elsewhere, or far behind): take it out and back in within
            # one flush, so the view keeps its majority while it rejoins by state transfer (a
            # forming seed takes back only a member it may admit: members flow one way)
            if not forming or admits(v, seeds, me, theirs):
                g.joiners[addr] = msg
            g.ctx.down(Verify(frozenset([r]), force=True))
            return
        if self.defers() or not admits(v, seeds, me, theirs):
            return
        if addr not in g.joiners:
            g.joiners[addr] = msg
            g._maybe_start()

    def rank(self) -> int:
        """Our rank in the seed list (after every seed if we are none)."""
        seeds = self.g.ctx.seeds
        return seeds.index(self.g.ctx.me) if self.g.ctx.me in seeds else len(seeds)

    def defers(self) -> bool:
        """A forming seed leaves the members to a lower-ranked forming seed it heard from lately,
        or might hear from yet (in our first join interval): fewer concurrent absorptions to
        undo (each costs a flush timeout). Only speed depends on it, not safety."""
        g = self.g
        v, now, p = g.view, g.ctx.now, g.params
        if v.primary or v.last_primary_vid != FORMING or self.rank() == 0:
            return False
        return now - self.born < p.join_interval or now - self.lower_heard < 3 * p.join_interval
