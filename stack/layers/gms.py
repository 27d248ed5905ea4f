"""Group membership: joins, leaves and exclusions, agreed as a sequence of views.

Why a coordinator-driven protocol with ballots: the coordinator (lowest-ranked member not suspected)
decides the next view, but it can die half-way, and its successor must not install a different view
that some member may already have installed. So view agreement is single-decree Paxos in disguise:
- `START(ballot)` blocks members (the flush layer freezes deliveries and reports counts);
- the coordinator proposes the next view and the flush cut (`CUT`); members deliver to the cut and
  answer `DONE`, which is "accepting" the proposal; only when every member of the proposal taking
  part in the flush is DONE is it installed (`INSTALL`, out of view, also to joiners);
- a new coordinator's START gathers reports; if any reporter accepted a proposal it must re-propose
  the highest-ballot one with its cut. A proposal that may have been installed was accepted by
  a majority of the view's acceptors, so any majority of reporters contains one of them.
  If some of that proposal's members cannot be reached, it is re-proposed as it is all the same,
  confirmed by those that can (`partial`); the next view change leaves out those that are gone.
  (Deriving a different view, the same cut without them, split the group when they had installed
  the original.)
Members stuck in the old view (their INSTALL lost) keep sending heartbeats tagged with it; a member
of the new view answers such packets by relaying the INSTALL (`OldView`).

Primary partition: a proposal is primary iff its confirmed members (those taking part in the flush,
not joiners) hold a majority of the confirmed members of the newest primary view any participant
knows (`View.last_primary`). A non-primary component keeps running view changes, so it
can absorb members and become primary again, and its members keep asking (JOIN) the seeds and the
last primary members to take them back. A group still forming has the seed list as reference:
it exists once a majority of the seeds has gathered, any majority, whichever seeds are up. Forming
components merge into the one whose coordinator ranks lowest in the seed list (`view.admits`), so
they cannot keep swapping members; and a member in a flush of its component never lets another
non-primary one absorb it (it may have confirmed a proposal that becomes primary counting it), so
no member is confirmed in two first primary views, and since any two majorities of the seeds
share a member, there is at most one. A member whose component moved on without it by a later
ballot knows that what it accepted was never installed, and starts afresh (`moved_on`).

Before installing a view that excludes live members, the coordinator waits out the delivery leases
that members granted them (`Granted`, see `suspect`), so a zombie stops delivering before the primary
moves on. Requires: fifo, suspicion, lease. Provides: views.

Secure stacks (an `auth` layer below): auth hands us the view's keyring and a fresh key (`Keys`).
Every INSTALL we send carries the members' public keys and the view key, which auth turns into a
per-recipient grant; an INSTALL we receive comes with the keyring auth opened from its grant, and
every view record we make carries its keyring (`View.keys`). Nothing else changes: without auth,
the messages and the protocol are exactly those above.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from cohort.stack.events import (
    Blocked,
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Exit,
    FlushCut,
    FlushDone,
    FlushReport,
    FlushStart,
    Granted,
    Keys,
    Lease,
    Leave,
    OldView,
    Oob,
    Refused,
    Send,
    Stable,
    Suspect,
    Timer,
    Verify,
    View,
)
from cohort.stack.layer import Layer
from cohort.stack.layers.gms_coord import CoordinatorRole
from cohort.stack.layers.gms_join import JoinRole
from cohort.stack.layers.gms_wire import (
    CUT,
    DONE,
    FWD_JOIN,
    LEAVE,
    NACK,
    OOB_INSTALL,
    OOB_JOIN,
    OOB_PROBE,
    OOB_REFUSED,
    REPORT,
    START,
    SUSPECT,
    every,
    fmt_header,
    view_from_wire,
    view_to_wire,
)
from cohort.stack.view import View as ViewRec
from cohort.stack.view import majority_of


@dataclass(frozen=True, slots=True)
class Params:
    #: seconds between retransmissions of flush messages and pending requests
    retry_interval: float = 0.05
    #: seconds a coordinator waits for reports/acks before excluding the silent members
    flush_timeout: float = 1.0
    #: seconds between join requests while outside the primary component
    join_interval: float = 0.2
    #: a coordinator installs only on confirmations (DONE) echoing a CUT it sent this recently:
    #: a coordinator paused mid-flush wakes up to stale ones and must not act on them
    fresh: float = 0.5


class Gms(Layer):
    name: ClassVar[str] = "gms"
    provides: ClassVar[frozenset[str]] = frozenset({"views"})
    requires: ClassVar[frozenset[str]] = frozenset({"fifo", "suspicion", "lease"})
    requires_above: ClassVar[frozenset[str]] = frozenset({"flush"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Deliver, DeliverSend, Stable, Lease})
    passes_down: ClassVar[frozenset[type]] = frozenset({Cast, Send})

    def __init__(self, ctx, view: ViewRec, params: Params) -> None:
        super().__init__(ctx, view, params)
        self.local: set[int] = set()  # what our failure detector says now
        self.dead: set[int] = set()  # certainly crashed (see Suspect.dead): no lease to wait out
        self.adopted: set[int] = set()  # what the coordinator's accepted START excludes
        self.timed_out: set[int] = set()  # silent in a flush: until it speaks gms to us again
        self.suspected: set[int] = set()  # the union: decides who coordinates
        self.leaving: set[int] = set()
        self.i_leave = False
        self.joiners: dict[str, list] = {}  # addr -> JOIN message
        self.top_ballot = (0, "")
        self.seen_ltime = view.ltime  # highest ltime of any view or proposal we have seen
        # member side
        self.accepted: tuple | None = None
        self.accepted_at = 0.0
        self.blocked_since: float | None = None
        self.my_report: tuple | None = None
        self.granted: tuple = (0.0,) * view.n
        self.proposal: tuple | None = None  # (ballot, view wire, cut, partial) of the latest CUT
        self.done: tuple | None = None  # that of the proposal we accepted (delivered its cut)
        self.cut_t = 0.0  # the coordinator's clock in the latest CUT
        self.coord = CoordinatorRole(self)
        self.relayed: dict[str, float] = {}
        self.joins = JoinRole(self)
        self.ring = view.keys  # secure stacks: this view's keyring (auth's `Keys` may update it)
        self.fresh: bytes | None = None  # the key of a view we install (from auth)
        ctx.set_timer(params.retry_interval, "tick")
        if not view.primary:
            self.joins.send()
        self._maybe_start()  # e.g. at once confirm the joiners of this view as acceptors

    # --- helpers ---------------------------------------------------------------------------------

    def _coordinator(self, suspected: set[int] | None = None) -> int:
        s = self.suspected if suspected is None else suspected
        for r in range(self.view.n):
            if r not in s:
                return r
        return self.me

    def _to(self, rank: int, hdr: tuple) -> None:
        if rank == self.me:
            self._control(self.me, hdr)
        else:
            self.ctx.down(Control(rank, b"", [hdr]))

    # --- events ----------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is ControlIn:
            h = ev.hdrs.pop()
            if h is None:
                self.ctx.up(ev)
            else:
                try:
                    self._control(ev.src, h)
                except (TypeError, ValueError, IndexError, KeyError):
                    self.ctx.count("gms.bad_header")
        elif cls is Suspect:
            self.local = set(ev.ranks) - {self.me}
            self.dead |= set(ev.dead) - {self.me}
            self._resuspect()
        elif cls is Granted:
            self.granted = ev.remaining
        elif cls is Oob:
            try:
                self._oob(ev.peer, ev.msg)
            except (TypeError, ValueError, IndexError, KeyError):
                self.ctx.count("gms.bad_oob")
        elif cls is OldView:
            self._relay(ev.src)
        elif cls is Keys:
            self.ring, self.fresh = ev.ring, ev.fresh
        elif cls is Timer:
            self._tick()
            self.ctx.set_timer(self.params.retry_interval, "tick")
        else:
            self.ctx.up(ev)

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Control:
            ev.hdrs.append(None)
            self.ctx.down(ev)
        elif cls is FlushReport:
            if ev.attempt == self.accepted:
                self.my_report = ev.counts
                self._send_report()
        elif cls is FlushDone:
            if self.proposal is not None and ev.attempt == self.accepted == self.proposal[0]:
                self.done = self.proposal
                self._to(self.view.rank(self.accepted[1]), (DONE, *self.accepted, self.cut_t))
        elif cls is Leave:
            self.i_leave = True
            if self.view.n == 1 or not self.view.primary:
                self.ctx.up(Exit("left"))
                return
            self._request_leave()
        else:
            self.ctx.down(ev)

    # --- control messages ------------------------------------------------------------------------

    def _control(self, src: int, h: Any) -> None:
        kind = h[0]
        if src in self.timed_out:  # it speaks to us after all: take it back
            self.timed_out.discard(src)
            self._resuspect()
        if kind == START:
            self._on_start(src, (h[1], h[2]), set(h[3]))
        elif kind == REPORT:
            self.coord.on_report(src, (h[1], h[2]), h[3], h[4], h[5], h[6])
        elif kind == CUT:
            self._on_cut(
                src, (h[1], h[2]), tuple(h[3]), h[4], float(h[5]), len(h) > 6 and h[6] is True
            )
        elif kind == DONE:
            self.coord.on_done(src, (h[1], h[2]), float(h[3]))
        elif kind == SUSPECT:
            if src in self.suspected:  # its view of the group is the far side of a partition
                return
            new = {r for r in h[1] if type(r) is int and 0 <= r < self.view.n} - {self.me}
            dead = set(h[2]) & new if len(h) > 2 else set()
            if dead - self.dead:  # the reporter saw its process gone: no need to wait and see
                self.ctx.down(Verify(frozenset(dead - self.dead), force=True, dead=True))
            new -= dead
            if new - self.suspected:  # our own failure detector must agree (VERIFY_SUSPECT)
                self.ctx.down(Verify(frozenset(new - self.suspected)))
        elif kind == LEAVE:
            self.leaving.add(src)
            self._maybe_start()
        elif kind == FWD_JOIN:
            self.joins.on_join(h[1])
        elif kind == NACK:
            ballot = (int(h[1]), str(h[2]))
            self.top_ballot = max(self.top_ballot, ballot)
            if self._coordinator() == self.me and (
                self.coord.ballot is None or self.coord.ballot < ballot
            ):
                self.coord.ballot = None
                self._maybe_start(force=True)  # members are blocked: a new view must free them
        else:
            self.ctx.count("gms.bad_header")

    def _resuspect(self) -> None:
        suspected = self.local | self.adopted | self.timed_out
        if suspected != self.suspected:
            self.suspected = suspected
            self._on_suspicion()

    def _on_suspicion(self) -> None:
        self.ctx.trace(f"gms suspects {sorted(self.view.members[r] for r in self.suspected)}")
        collecting = self.coord.collecting
        if self._coordinator() == self.me:
            if collecting and self.suspected != self.coord.excluded:
                self.coord.ballot = (
                    None  # restart: exclude the new suspects, take back the forgiven
                )
            self._maybe_start()
        else:
            if collecting:  # a lower-ranked member is back and coordinates; a proposal already
                self.coord.ballot = None  # cut is finished (finishing a proposal is always safe)
            if self.local:
                self._to(self._coordinator(), (SUSPECT, sorted(self.local), sorted(self.dead)))

    def _request_leave(self) -> None:
        if self._coordinator() == self.me:
            self.leaving.add(self.me)
            self._maybe_start()
        else:
            self._to(self._coordinator(), (LEAVE,))

    # --- member side of the flush ----------------------------------------------------------------

    def _on_start(self, src: int, ballot: tuple, excluded: set[int]) -> None:
        if src in self.local:
            return
        if self.me in excluded:
            # Say we are here: a coordinator that timed us out in a slow flush takes us back
            # (any gms message from us withdraws it), instead of excluding us forever.
            self._to(src, (NACK, *(self.accepted or (0, ""))))
            return
        if self.accepted is not None and ballot <= self.accepted:
            if ballot == self.accepted:
                self.accepted_at = self.ctx.now  # the coordinator is alive (maybe waiting)
                self._send_report()
            else:  # a coordinator behind the times: tell it which ballot to beat
                self._to(src, (NACK, *self.accepted))
            return
        excluded = {r for r in excluded if 0 <= r < self.view.n}
        if self._coordinator(self.local | excluded) != src or ballot[1] != self.view.members[src]:
            return
        self.adopted = excluded if src != self.me else set()  # ours come from `local` already
        self.timed_out.discard(src)
        self.suspected = self.local | self.adopted | self.timed_out
        self.accepted = ballot
        self.accepted_at = self.ctx.now
        if self.blocked_since is None:
            self.blocked_since = self.ctx.now
        self.top_ballot = max(self.top_ballot, ballot)
        self.my_report = None
        self.proposal = None
        self.ctx.down(Blocked())
        self.ctx.up(FlushStart(ballot))

    def _send_report(self) -> None:
        if self.my_report is None or self.accepted is None:
            return
        done = list(self.done) if self.done else None
        hdr = (
            REPORT,
            *self.accepted,
            list(self.my_report),
            list(self.granted),
            done,
            self.seen_ltime,
        )
        self._to(self.view.rank(self.accepted[1]), hdr)

    def _on_cut(
        self, src: int, ballot: tuple, cut: tuple, proposal: list, t: float, partial: bool
    ) -> None:
        if ballot != self.accepted:
            return
        self.cut_t = t  # echoed in DONE: the coordinator only trusts fresh confirmations
        if self.done is not None and self.done[0] == ballot:
            self._to(src, (DONE, *ballot, t))
            return
        if len(cut) != self.view.n or view_from_wire(proposal) is None:
            self.ctx.count("gms.bad_cut")
            return
        self.proposal = (ballot, proposal, cut, partial)
        self.seen_ltime = max(self.seen_ltime, int(proposal[0]))
        self.ctx.up(FlushCut(ballot, cut))

    # --- coordinator side ------------------------------------------------------------------------

    def _maybe_start(self, force: bool = False) -> None:
        if self._coordinator() != self.me or self.coord.ballot is not None:
            return
        if not (force or self._wants_change() or self.accepted is not None):
            return  # (members blocked in some ballot must always be released by a new view)
        self.coord.start()

    def _participants(self) -> list[int]:
        return self.coord.participants()

    def _wants_change(self) -> bool:
        v = self.view
        if self.suspected or self.leaving or self.joiners:
            return True
        if v.primary:
            # joiners of this view are not acceptors yet: one flush they take part in makes them
            # so (a dead one is timed out), and then the group can afford to lose old members
            return not set(v.members) <= set(v.last_primary)
        return majority_of(v.members, v.last_primary)

    # --- installation ----------------------------------------------------------------------------

    def _oob(self, peer: str, msg: Any) -> None:
        kind = msg[0]
        if kind == OOB_JOIN:
            self.joins.on_join(msg)
        elif kind == OOB_PROBE:  # someone blocked in an older view: show it where we are
            if tuple(msg[1]) < self.view.vid:
                self._relay(peer)
        elif kind == OOB_INSTALL:
            proposal = view_from_wire(msg[1])
            if proposal is None:
                self.ctx.count("gms.bad_install")
                return
            ballot = (int(msg[3][0]), str(msg[3][1])) if len(msg) > 3 and msg[3] else None
            if ballot is not None:
                proposal = dataclasses.replace(proposal, ballot=ballot)
            # secure stacks: the keyring auth opened for us (in others, nothing sends one)
            keys = msg[5] if self.ring is not None and len(msg) > 5 else None
            if keys is None and self.ring is not None and self.ctx.me in proposal.members:
                self.ctx.count("gms.install_without_key")
                return
            if keys is not None:
                proposal = dataclasses.replace(proposal, keys=keys)
            self._on_install(proposal, [str(j) for j in msg[2]], ballot)
        elif kind == OOB_REFUSED:
            if not self.view.primary:  # only a joiner cares; auth never lets this through
                self.ctx.up(Refused(str(msg[1])))
        else:
            self.ctx.count("gms.bad_oob")

    def _on_install(self, w: ViewRec, joiners: list[str], ballot: tuple | None = None) -> None:
        """`ballot` is the one that installed `w` (None when relayed by a member)."""
        me, v = self.ctx.me, self.view
        if w.vid <= v.vid:
            return
        if (
            w.prev == v.vid
            and ballot is not None
            and self.done is not None
            and tuple(self.done[0]) > ballot
            and tuple(self.done[1][:2]) != w.vid  # a later ballot may re-propose the same view
        ):
            # we accepted a later coordinator's proposal, with the same cut: that one is ours
            self.ctx.count("gms.install_superseded")
            return
        if me in joiners and not v.primary:
            if self.accepted is not None and not w.primary and w.prev != v.vid:
                # in a flush here, we may have confirmed a proposal that becomes primary counting
                # us: no other non-primary component may count us too (see `view.admits`)
                self.ctx.count("gms.absorb_while_blocked")
                return
            self._apply_install(w, joiners)
        elif w.prev == v.vid and me in w.members:
            if self.done is not None and tuple(self.done[1][:2]) == w.vid:
                self._apply_install(w, joiners)
            else:  # installed without our accepting it: we were left behind, start afresh
                self.ctx.count("gms.left_behind")
                self._leave_component(w)
        elif w.prev == v.vid and w.primary:  # the group moved on without us: leave or rejoin
            self._apply_install(w, joiners)
        elif w.prev == v.vid and ballot is not None:
            # our component moved on without us by a later ballot (ours would be the later one,
            # above): so what we accepted was never installed (it would be w). Rejoin from there
            self.ctx.count("gms.moved_on")
            self._apply_install(w, joiners)
        elif w.primary and v.primary and w.prev is not None:
            # a newer primary view exists and we did not take part in making it: we are out
            self.ctx.count("gms.far_behind")
            self._leave_component(w)

    def _apply_install(self, w: ViewRec, joiners: list[str]) -> None:
        me = self.ctx.me
        if me in w.members:
            self.ctx.up(View(w))
        elif self.i_leave:
            self.ctx.up(Exit("left"))
        else:
            self._leave_component(w)

    def _leave_component(self, w: ViewRec) -> None:
        """Excluded: carry on alone, outside the primary component, and ask to come back."""
        me, v = self.ctx.me, self.view
        alone = ViewRec(
            (max(w.ltime, v.ltime, self.seen_ltime) + 1, me),
            (me,),
            False,
            w.last_primary,
            w.last_primary_vid,
            v.vid,
        )
        if self.ring is not None:  # alone: a key no one else holds
            key = self.fresh if self.fresh is not None else self.ring.key
            alone = dataclasses.replace(alone, keys=self.ring.successor(key, {me: self.ring.pub}))
        self.ctx.trace(f"gms excluded by {w}")
        self.ctx.up(View(alone))

    def _relay(self, src: str) -> None:
        """`src` still sends in our previous view: show it this one (it installs it, or learns
        it was excluded and goes to rejoin)."""
        v, now = self.view, self.ctx.now
        if (not v.primary and v.ballot is None) or now - self.relayed.get(src, -1.0) < 0.05:
            return  # where the group went, or (forming) our component went (see _on_install)
        self.relayed[src] = self.ctx.now
        ballot = list(v.ballot) if v.ballot else None
        self.ctx.down(Oob(src, [OOB_INSTALL, view_to_wire(v), [], ballot, *self._keyed(v)]))

    # --- joins -----------------------------------------------------------------------------------

    def _keyed(self, v: ViewRec) -> list:
        """What a secure INSTALL of our current view carries: public keys and the view key."""
        if self.ring is None:
            return []
        return [[self.ring.pubs.get(m) for m in v.members], self.ring.key]

    def install_keys(self, members: tuple[str, ...]) -> tuple[list, bytes] | tuple[None, None]:
        """Public keys of a view we install (joiners' from their authenticated join) and its key."""
        if self.ring is None:
            return None, None
        pubs = []
        for m in members:
            j = self.joiners.get(m)
            pubs.append(j[6] if j is not None and len(j) > 6 else self.ring.pubs.get(m))
        return pubs, self.fresh

    # --- time ------------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.coord.ballot is not None:
            self.coord.tick()
        else:
            self._maybe_start()
        if self._coordinator() != self.me:
            self._member_tick()
        self._outsider_tick()

    def _member_tick(self) -> None:
        """Keep our coordinator informed; give up on one that went quiet mid-flush."""
        now, p = self.ctx.now, self.params
        coord = self._coordinator()
        if self.accepted is not None and now - self.accepted_at > 2 * p.flush_timeout:
            # the coordinator of our flush went quiet: suspect it, a successor takes over
            self.accepted_at = now
            c = self.view.rank(self.accepted[1])
            if c >= 0 and c != self.me:
                self.timed_out.add(c)
                self._resuspect()
        elif self.accepted is not None and coord != self.view.rank(self.accepted[1]):
            self._to(coord, (NACK, *self.accepted))  # blocked under another coordinator
        elif self.local and self.accepted is None:
            self._to(coord, (SUSPECT, sorted(self.local), sorted(self.dead)))
        if self.i_leave and self.accepted is None:
            self._to(coord, (LEAVE,))

    def _outsider_tick(self) -> None:
        """Outside the primary component, ask to be let back in; blocked for long, ask where
        the group went (it may have moved on while we were paused)."""
        now, p = self.ctx.now, self.params
        if not every(now, p.join_interval, p.retry_interval):
            return
        if not self.view.primary:
            self.joins.send()
        elif self.blocked_since is not None and now - self.blocked_since > p.flush_timeout:
            msg = [OOB_PROBE, list(self.view.vid)]
            for m in self.view.members:
                if m != self.ctx.me:
                    self.ctx.down(Oob(m, msg))

    def dump(self) -> dict:
        return {
            "suspected": sorted(self.suspected),
            "accepted": self.accepted,
            "coordinating": self.coord.ballot,
        }


__all__ = ["Gms", "Params", "fmt_header", "view_from_wire", "view_to_wire"]
