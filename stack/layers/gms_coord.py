"""The coordinator role of gms: run a flush ballot, choose the next view, install it.

Why a separate role class: this is the half of the membership protocol only the coordinator (the
lowest-ranked member not suspected) runs, as JGroups splits `CoordGmsImpl` from the member side.
It keeps the state of the ballot in progress and reaches the layer's shared state through `g`.
See `cohort.stack.layers.gms` for the theory of operation.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from cohort.stack.events import Oob
from cohort.stack.layers.gms_wire import (
    CUT,
    OOB_INSTALL,
    START,
    every,
    view_from_wire,
    view_to_wire,
)
from cohort.stack.view import View as ViewRec
from cohort.stack.view import majority_of

if TYPE_CHECKING:
    from cohort.stack.layers.gms import Gms


class CoordinatorRole:
    """One flush ballot at a time; `ballot` is None when idle."""

    def __init__(self, g: Gms) -> None:
        self.g = g
        self.ballot: tuple | None = None
        self.started = 0.0
        self.excluded: set[int] = set()
        self.reports: dict[int, tuple] = {}  # rank -> (counts, granted, accepted, received at)
        self.cut: tuple | None = None
        self.proposal: list | None = None  # wire form of the proposed view
        self.dones: dict[int, float] = {}  # rank -> our CUT time its DONE echoed
        self.install_at: float | None = None
        self.waiting = False
        self.partial = False  # re-proposing a view without some of its members (propose)

    @property
    def collecting(self) -> bool:
        """Still gathering reports (or waiting for a majority): safe to restart."""
        return self.ballot is not None and (self.cut is None or self.waiting)

    def start(self) -> None:
        g = self.g
        self.ballot = (g.top_ballot[0] + 1, g.ctx.me)
        g.top_ballot = self.ballot
        self.started = g.ctx.now
        self.excluded = set(g.suspected)
        self.reports = {}
        self.cut = None
        self.dones = {}
        self.install_at = None
        self.waiting = False
        self.partial = False
        g.ctx.trace(f"gms starts flush {self.ballot} excluding {sorted(self.excluded)}")
        for r in self.participants():
            g._to(r, (START, *self.ballot, sorted(self.excluded)))

    def participants(self) -> list[int]:
        return [r for r in range(self.g.view.n) if r not in self.excluded]

    def on_report(
        self, src: int, ballot: tuple, counts: list, granted: list, done: Any, seen: int
    ) -> None:
        if ballot != self.ballot or self.cut is not None:
            return
        if len(counts) != self.g.view.n or len(granted) != self.g.view.n or type(seen) is not int:
            self.g.ctx.count("gms.bad_report")
            return
        self.g.seen_ltime = max(self.g.seen_ltime, seen)
        self.reports[src] = (tuple(counts), tuple(granted), done, self.g.ctx.now)
        if all(r in self.reports for r in self.participants()):
            self.propose()

    def propose(self) -> None:
        v = self.g.view
        reports = self.reports
        maybe = self.installable_proposal()
        here = set(self.participants())
        self.partial = False
        if maybe is not None:
            # It may have been installed: propose it again as it is (Paxos), with its cut. Its
            # members we cannot reach do not confirm it now: they may be in it already, or learn
            # of it later (and install it if they confirmed it, else rejoin); the next view change
            # leaves out those that are gone. Proposing a different view instead (the same cut
            # without them) would split the group if those members did install this one.
            proposal, cut = maybe[1], tuple(maybe[2])
            p = view_from_wire(proposal)
            keep = tuple(m for m in p.members if v.rank(m) in here)
            everyone = all(v.rank(m) in here for m in p.members if v.rank(m) >= 0)
            # (a non-primary one is harmless to install without them: nothing is delivered in it)
            if (
                not everyone
                and p.primary
                and not (majority_of(keep, v.last_primary) and majority_of(keep, p.last_primary))
            ):
                self.waiting = True
                self.g.ctx.trace("gms waits: no majority for a primary view")
                return
            # once confirmed by only some of its members, always so (see installable_proposal)
            self.partial = not everyone or (len(maybe) > 3 and maybe[3] is True)
        else:
            cut = tuple(max(col) for col in zip(*(r[0] for r in reports.values())))
            fresh = self.next_view()
            if v.primary and not fresh.primary:
                # Without a majority, installing a non-primary view would strand this component
                # (its members would rejoin the primary one by one). Keep the flush open: they stay blocked,
                # deliver nothing, and the ballot restarts when a suspect is heard from again.
                self.waiting = True
                self.g.ctx.trace("gms waits: no majority for a primary view")
                return
            proposal = view_to_wire(fresh)
        self.cut = cut
        self.proposal = proposal
        # the confirmations get a flush timeout of their own: slow reports must not leave the
        # members only the remainder of it to confirm the cut (a healthy member would be excluded)
        self.started = self.g.ctx.now
        for r in self.participants():
            self.g._to(r, self._cut_msg())

    def _cut_msg(self) -> tuple:
        msg = (CUT, *self.ballot, list(self.cut), self.proposal, self.g.ctx.now)
        return (*msg, True) if self.partial else msg  # (the flag is rare: sent only when set)

    def installable_proposal(self) -> list | None:
        """The highest-ballot accepted proposal that some coordinator may have installed.

        A proposal is installed only after every one of its members we could reach accepted it
        (DONE): all of them, unless it is a re-proposal made without some of them (`partial`).
        A member's accepted proposal changes only when a later coordinator proves the old one was
        never installed. So a proposal that was never partial and that some reporter who is one
        of its members did not accept was certainly never installed, and may be dropped. A
        partial one may have been installed without any given member, so it is kept; and since
        any later ballot hears from one of the majority that confirmed it, and re-proposes the
        highest accepted one, every later entry of that view is partial too.
        """
        reports = self.reports
        members = self.g.view.members
        accepted = sorted(
            (r[2] for r in reports.values() if r[2]), key=lambda d: tuple(d[0]), reverse=True
        )
        for d in accepted:
            if len(d) > 3 and d[3] is True:
                return d
            vid, in_it = (d[1][0], d[1][1]), set(d[1][2])
            if all(
                r[2] and (r[2][1][0], r[2][1][1]) == vid
                for rank, r in reports.items()
                if members[rank] in in_it
            ):
                return d
        return None

    def next_view(self, also: tuple[str, ...] = ()) -> ViewRec:
        v = self.g.view
        gone = self.excluded | self.g.leaving
        members = [m for r, m in enumerate(v.members) if r not in gone]
        ref_vid, ref = v.last_primary_vid, v.last_primary
        ltime = self.g.seen_ltime  # above every proposal any participant saw: vids stay unique
        for addr in sorted(self.g.joiners):
            j = self.g.joiners[addr]
            if addr not in members:
                members.append(addr)
            ltime = max(ltime, int(j[2]))
            jvid = (int(j[3][0]), str(j[3][1]))
            if jvid > ref_vid:
                ref_vid, ref = jvid, tuple(j[4])
        members_t = tuple(members)
        vid = (ltime + 1, self.g.ctx.me)  # the proposer: two proposals never share a vid
        # Only members that take part in this flush vote (the acceptors): a joiner that dies
        # before installing must not count, or a few failed joins would block the group forever.
        confirmed = tuple(m for m in members_t if 0 <= v.rank(m) and v.rank(m) not in gone)
        # graceful leavers take part in this flush too: they vote for the view that lets them go
        # (and vote for nothing after it), so the last two members can part without deadlock
        voters = confirmed + tuple(v.members[r] for r in self.g.leaving if r not in self.excluded)
        primary = bool(confirmed) and majority_of(voters, ref) and majority_of(voters, also)
        if primary:
            ref, ref_vid = confirmed, vid
        return ViewRec(vid, members_t or (self.g.ctx.me,), primary, ref, ref_vid, v.vid)

    def confirming(self) -> list[int]:
        """Participants that must confirm the cut: those in the proposal (others are leaving,
        and their leases are waited out instead)."""
        members = set(self.proposal[2])
        return [r for r in self.participants() if self.g.view.members[r] in members]

    def on_done(self, src: int, ballot: tuple, t: float) -> None:
        if ballot == self.ballot and self.cut is not None:
            self.dones[src] = max(self.dones.get(src, t), t)
            self.maybe_install()

    def stale(self) -> list[int]:
        """Confirming members without a fresh DONE (our own counts if our flush layer is done)."""
        g = self.g
        now, fresh = g.ctx.now, g.params.fresh
        if g.done is not None and tuple(g.done[0]) == self.ballot:
            self.dones[g.me] = now
        return [r for r in self.confirming() if now - self.dones.get(r, -1e18) > fresh]

    def maybe_install(self) -> None:
        if self.stale():
            return
        proposal = view_from_wire(self.proposal)
        now = self.g.ctx.now
        wait = 0.0
        # members that did not confirm this ballot may still be delivering in the old view:
        # wait until the leases granted to them have run out
        dead = self.g.dead  # a dead process delivers nothing, whatever lease it was granted
        for _, granted, _, at in self.reports.values():
            for q, left in enumerate(granted):
                if q not in self.dones and q not in dead:
                    wait = max(wait, left - (now - at))
        if wait > 0:
            self.install_at = now + wait
            return
        self.install(proposal)

    def install(self, proposal: ViewRec) -> None:
        v = self.g.view
        joiners = [m for m in proposal.members if v.rank(m) < 0 or v.rank(m) in self.excluded]
        msg = [OOB_INSTALL, self.proposal, joiners, list(self.ballot)]
        pubs, key = self.g.install_keys(proposal.members)
        if pubs is not None:  # secure stack: auth turns the key into a grant per recipient
            msg += [pubs, key]
        leavers = [self.g.view.members[r] for r in self.g.leaving]
        for m in dict.fromkeys([*proposal.members, *leavers]):
            if m != self.g.ctx.me:
                self.g.ctx.down(Oob(m, msg))
        proposal = dataclasses.replace(proposal, ballot=self.ballot)
        if pubs is not None:
            ring = self.g.ring.successor(key, dict(zip(proposal.members, pubs)))
            proposal = dataclasses.replace(proposal, keys=ring)
        self.ballot = None
        self.g._apply_install(proposal, joiners)

    def tick(self) -> None:
        """Drive our flush: install when leases ran out, resend, exclude the silent."""
        now, p = self.g.ctx.now, self.g.params
        if self.install_at is not None:
            if self.stale():  # we slept past our confirmations: ask again before installing,
                self.install_at = None  # and give them time to answer (the lease wait used it)
                self.started = now
            elif now >= self.install_at:
                self.install(view_from_wire(self.proposal))
                return
            else:
                return
        if self.waiting:
            if self.excluded - self.g.suspected:
                # we exclude a member we no longer suspect: one a dead coordinator's START
                # excluded (adopted, dropped when we accepted our own): try again with it
                self.ballot = None
                self.g._maybe_start(force=True)
                return
            # Keep the blocked members' patience up, and reach the excluded too: a member we
            # timed out answers (NACK), which takes it back; a rival coordinator that timed
            # us out hears from a lower rank and steps down. Two camps converge on one.
            if every(now, p.flush_timeout / 4, p.retry_interval):
                for r in range(self.g.view.n):
                    if r != self.g.me:
                        self.g._to(r, (START, *self.ballot, sorted(self.excluded)))
            return
        if self.cut is None:
            silent = ask = [r for r in self.participants() if r not in self.reports]
        else:
            # A confirmation that merely went stale (we were waiting for someone else) is asked
            # again; only a member that confirmed none of our recent CUTs is silent.
            ask = self.stale()
            silent = [r for r in ask if now - self.dones.get(r, -1e18) > p.flush_timeout]
        if now - self.started > p.flush_timeout and silent:
            self.g.ctx.trace(f"gms flush timeout, excluding {silent}")
            self.g.timed_out |= set(silent) - {self.g.me}
            self.ballot = None
            self.g._resuspect()
            return
        for r in ask:
            if r == self.g.me:
                continue
            if self.cut is None:
                self.g._to(r, (START, *self.ballot, sorted(self.excluded)))
            else:
                self.g._to(r, self._cut_msg())
