"""Group membership: joins, leaves and exclusions, agreed as a sequence of views.

Why a coordinator-driven protocol with ballots: the coordinator (lowest-ranked member not suspected)
decides the next view, but it can die half-way, and its successor must not install a different view
that some member may already have installed. So view agreement is single-decree Paxos in disguise:
- `START(ballot)` blocks members (the flush layer freezes deliveries and reports counts);
- the coordinator proposes the next view and the flush cut (`CUT`); members deliver to the cut and
  answer `DONE`, which is "accepting" the proposal; only when every member of the proposal is DONE
  is it installed (`INSTALL`, out of view, also to joiners);
- a new coordinator's START gathers reports; if any reporter accepted a proposal it must re-propose
  the highest-ballot one with its cut. A proposal that may have been installed was accepted by all
  its members, a majority of the view, so any majority of reporters contains one of them.
Members stuck in the old view (their INSTALL lost) keep sending heartbeats tagged with it; a member
of the new view answers such packets by relaying the INSTALL (`OldView`).

Primary partition: a proposal is primary iff its confirmed members (those taking part in the flush,
not joiners) hold a majority of the confirmed members of the newest primary view any participant
knows (`View.last_primary`). A non-primary component keeps running view changes, so it
can absorb members and become primary again, and its members keep asking (JOIN) the seeds and the
last primary members to take them back. Components merge into the one with the lowest coordinator
address, so they cannot keep swapping members. A group still forming has the seed list as reference:
it exists once a majority of the seeds has gathered.

Before installing a view that excludes live members, the coordinator waits out the delivery leases
that members granted them (`Granted`, see `suspect`), so a zombie stops delivering before the primary
moves on. Requires: fifo, suspicion, lease. Provides: views.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from stack.events import (
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
    Lease,
    Leave,
    OldView,
    Oob,
    Send,
    Stable,
    Suspect,
    Timer,
    Verify,
    View,
)
from stack.layer import Layer
from stack.view import View as ViewRec
from stack.view import majority_of

START, REPORT, CUT, DONE, SUSPECT, LEAVE, FWD_JOIN, NACK = range(8)
OOB_JOIN, OOB_INSTALL, OOB_PROBE = "join", "install", "probe"


@dataclass(frozen=True, slots=True)
class Params:
    #: seconds between retransmissions of flush messages and pending requests
    retry_interval: float = 0.05
    #: seconds a coordinator waits for reports/acks before excluding the silent members
    flush_timeout: float = 1.0
    #: seconds between join requests while outside the primary component
    join_interval: float = 0.2


def view_to_wire(v: ViewRec) -> list:
    return [
        v.vid[0],
        v.vid[1],
        list(v.members),
        v.primary,
        list(v.last_primary),
        list(v.last_primary_vid),
        list(v.prev) if v.prev else None,
    ]


def view_from_wire(w: Any) -> ViewRec | None:
    try:
        lt, coord, members, primary, lp, lpv, prev = w
        members = tuple(members)
        if not (
            type(lt) is int
            and type(coord) is str
            and members
            and all(type(m) is str for m in members)
            and len(set(members)) == len(members)
            and type(primary) is bool
        ):
            return None
        return ViewRec(
            (lt, coord),
            members,
            primary,
            tuple(str(m) for m in lp),
            (int(lpv[0]), str(lpv[1])),
            (int(prev[0]), str(prev[1])) if prev else None,
        )
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return None


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
        self.proposal: tuple | None = None  # (ballot, view wire, cut) from the latest CUT
        self.done: tuple | None = None  # (ballot, view wire, cut) accepted = delivered the cut
        # coordinator side
        self.c_ballot: tuple | None = None
        self.c_started = 0.0
        self.c_excluded: set[int] = set()
        self.c_reports: dict[int, tuple] = {}
        self.c_cut: tuple | None = None
        self.c_done: set[int] = set()
        self.c_install_at: float | None = None
        self.c_waiting = False
        self.relayed: dict[str, float] = {}
        ctx.set_timer(params.retry_interval, "tick")
        if not view.primary:
            self._send_joins()
            self._maybe_start()

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
                self._to(self.view.rank(self.accepted[1]), (DONE, *self.accepted))
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
            self._on_report(src, (h[1], h[2]), h[3], h[4], h[5], h[6])
        elif kind == CUT:
            self._on_cut(src, (h[1], h[2]), tuple(h[3]), h[4])
        elif kind == DONE:
            if self.c_ballot == (h[1], h[2]) and self.c_cut is not None:
                self.c_done.add(src)
                self._maybe_install()
        elif kind == SUSPECT:
            if src in self.suspected:  # its view of the group is the far side of a partition
                return
            new = {r for r in h[1] if type(r) is int and 0 <= r < self.view.n} - {self.me}
            if new - self.suspected:  # our own failure detector must agree (VERIFY_SUSPECT)
                self.ctx.down(Verify(frozenset(new - self.suspected)))
        elif kind == LEAVE:
            self.leaving.add(src)
            self._maybe_start()
        elif kind == FWD_JOIN:
            self._on_join(h[1])
        elif kind == NACK:
            ballot = (int(h[1]), str(h[2]))
            self.top_ballot = max(self.top_ballot, ballot)
            if self._coordinator() == self.me and (self.c_ballot is None or self.c_ballot < ballot):
                self.c_ballot = None
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
        collecting = self.c_ballot is not None and (self.c_cut is None or self.c_waiting)
        if self._coordinator() == self.me:
            if collecting and self.suspected != self.c_excluded:
                self.c_ballot = None  # restart: exclude the new suspects, take back the forgiven
            self._maybe_start()
        else:
            if collecting:  # a lower-ranked member is back and coordinates; a proposal already
                self.c_ballot = None  # cut is finished (finishing a proposal is always safe)
            if self.local:
                self._to(self._coordinator(), (SUSPECT, sorted(self.local)))

    def _request_leave(self) -> None:
        if self._coordinator() == self.me:
            self.leaving.add(self.me)
            self._maybe_start()
        else:
            self._to(self._coordinator(), (LEAVE,))

    # --- member side of the flush ----------------------------------------------------------------

    def _on_start(self, src: int, ballot: tuple, excluded: set[int]) -> None:
        if self.me in excluded or src in self.local:
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

    def _on_cut(self, src: int, ballot: tuple, cut: tuple, proposal: list) -> None:
        if ballot != self.accepted:
            return
        if self.done is not None and self.done[0] == ballot:
            self._to(src, (DONE, *ballot))
            return
        if len(cut) != self.view.n or view_from_wire(proposal) is None:
            self.ctx.count("gms.bad_cut")
            return
        self.proposal = (ballot, proposal, cut)
        self.seen_ltime = max(self.seen_ltime, int(proposal[0]))
        self.ctx.up(FlushCut(ballot, cut))

    # --- coordinator side ------------------------------------------------------------------------

    def _wants_change(self) -> bool:
        v = self.view
        if self.suspected or self.leaving or self.joiners:
            return True
        if v.primary:
            # joiners of this view are not acceptors yet: one flush they take part in makes them
            # so (a dead one is timed out), and then the group can afford to lose old members
            return not set(v.members) <= set(v.last_primary)
        return majority_of(v.members, v.last_primary)

    def _maybe_start(self, force: bool = False) -> None:
        if self._coordinator() != self.me or self.c_ballot is not None:
            return
        if not (force or self._wants_change() or self.accepted is not None):
            return  # (members blocked in some ballot must always be released by a new view)
        self.c_ballot = (self.top_ballot[0] + 1, self.ctx.me)
        self.top_ballot = self.c_ballot
        self.c_started = self.ctx.now
        self.c_excluded = set(self.suspected)
        self.c_reports = {}
        self.c_cut = None
        self.c_done = set()
        self.c_install_at = None
        self.c_waiting = False
        self.ctx.trace(f"gms starts flush {self.c_ballot} excluding {sorted(self.c_excluded)}")
        for r in self._participants():
            self._to(r, (START, *self.c_ballot, sorted(self.c_excluded)))

    def _participants(self) -> list[int]:
        return [r for r in range(self.view.n) if r not in self.c_excluded]

    def _on_report(
        self, src: int, ballot: tuple, counts: list, granted: list, done: Any, seen: int
    ) -> None:
        if ballot != self.c_ballot or self.c_cut is not None:
            return
        if len(counts) != self.view.n or len(granted) != self.view.n or type(seen) is not int:
            self.ctx.count("gms.bad_report")
            return
        self.seen_ltime = max(self.seen_ltime, seen)
        self.c_reports[src] = (tuple(counts), tuple(granted), done, self.ctx.now)
        if all(r in self.c_reports for r in self._participants()):
            self._propose()

    def _propose(self) -> None:
        v = self.view
        reports = self.c_reports
        maybe = self._installable_proposal()
        here = set(self._participants())
        if maybe is not None and all(v.rank(m) in here for m in maybe[1][2] if v.rank(m) >= 0):
            # it may have been installed: finish it, with every one of its members confirming
            proposal, cut = maybe[1], tuple(maybe[2])
        elif maybe is not None:
            # It may have been installed by members we cannot reach. Keep what matters, its cut,
            # so everyone leaving this view delivers the same messages in it; move on without the
            # unreachable. Its lonely installers hold no majority of acceptors, hence no lease:
            # that view stays inert, and they rejoin when they hear of this one.
            cut = tuple(maybe[2])
            fresh = self._successor(maybe[1], here)
            if not fresh.primary:
                self.c_waiting = True
                self.ctx.trace("gms waits: no majority for a primary view")
                return
            proposal = view_to_wire(fresh)
        else:
            cut = tuple(max(col) for col in zip(*(r[0] for r in reports.values())))
            fresh = self._next_view()
            if v.primary and not fresh.primary:
                # Without a majority, installing a non-primary view would strand this component
                # (components do not merge yet). Keep the flush open instead: members stay blocked,
                # deliver nothing, and the ballot restarts when a suspect is heard from again.
                self.c_waiting = True
                self.ctx.trace("gms waits: no majority for a primary view")
                return
            proposal = view_to_wire(fresh)
        self.c_cut = cut
        self.c_proposal = proposal
        for r in self._participants():
            self._to(r, (CUT, *self.c_ballot, list(cut), proposal))

    def _installable_proposal(self) -> list | None:
        """The highest-ballot accepted proposal that some coordinator may have installed.

        A proposal is installed only after every one of its members accepted it (DONE), and a
        member's accepted proposal changes only when a later coordinator proves the old one was
        never installed. So a proposal that some reporter who is one of its members did not
        accept was certainly never installed, and may be dropped.
        """
        reports = self.c_reports
        members = self.view.members
        accepted = sorted(
            (r[2] for r in reports.values() if r[2]), key=lambda d: tuple(d[0]), reverse=True
        )
        for d in accepted:
            vid, in_it = (d[1][0], d[1][1]), set(d[1][2])
            if all(
                r[2] and (r[2][1][0], r[2][1][1]) == vid
                for rank, r in reports.items()
                if members[rank] in in_it
            ):
                return d
        return None

    def _successor(self, accepted: list, here: set[int]) -> ViewRec:
        """The accepted proposal without its members that are not taking part in this flush."""
        v = self.view
        p = view_from_wire(accepted)
        keep = tuple(m for m in p.members if v.rank(m) in here)
        vid = (self.seen_ltime + 1, self.ctx.me)
        primary = (
            bool(keep)
            and p.primary
            and majority_of(keep, v.last_primary)
            and majority_of(keep, p.last_primary)
        )
        if primary:
            return ViewRec(vid, keep, True, keep, vid, v.vid)
        return ViewRec(
            vid, keep or (self.ctx.me,), False, v.last_primary, v.last_primary_vid, v.vid
        )

    def _next_view(self, also: tuple[str, ...] = ()) -> ViewRec:
        v = self.view
        gone = self.c_excluded | self.leaving
        members = [m for r, m in enumerate(v.members) if r not in gone]
        ref_vid, ref = v.last_primary_vid, v.last_primary
        ltime = self.seen_ltime  # above every proposal any participant saw: vids stay unique
        for addr in sorted(self.joiners):
            j = self.joiners[addr]
            if addr not in members:
                members.append(addr)
            ltime = max(ltime, int(j[2]))
            jvid = (int(j[3][0]), str(j[3][1]))
            if jvid > ref_vid:
                ref_vid, ref = jvid, tuple(j[4])
        members_t = tuple(members)
        vid = (ltime + 1, self.ctx.me)  # the proposer: two proposals never share a vid
        # Only members that take part in this flush vote (the acceptors): a joiner that dies
        # before installing must not count, or a few failed joins would block the group forever.
        confirmed = tuple(m for m in members_t if 0 <= v.rank(m) and v.rank(m) not in gone)
        primary = bool(confirmed) and majority_of(confirmed, ref) and majority_of(confirmed, also)
        if primary:
            ref, ref_vid = confirmed, vid
        return ViewRec(vid, members_t or (self.ctx.me,), primary, ref, ref_vid, v.vid)

    def _confirming(self) -> list[int]:
        """Participants that must confirm the cut: those in the proposal (others are leaving,
        and their leases are waited out instead)."""
        members = set(self.c_proposal[2])
        return [r for r in self._participants() if self.view.members[r] in members]

    def _maybe_install(self) -> None:
        if not all(r in self.c_done for r in self._confirming()):
            return
        proposal = view_from_wire(self.c_proposal)
        now = self.ctx.now
        wait = 0.0
        # members that did not confirm this ballot may still be delivering in the old view:
        # wait until the leases granted to them have run out
        for _, granted, _, at in self.c_reports.values():
            for q, left in enumerate(granted):
                if q not in self.c_done:
                    wait = max(wait, left - (now - at))
        if wait > 0:
            self.c_install_at = now + wait
            return
        self._install(proposal)

    def _install(self, proposal: ViewRec) -> None:
        v = self.view
        joiners = [m for m in proposal.members if v.rank(m) < 0 or v.rank(m) in self.c_excluded]
        msg = [OOB_INSTALL, self.c_proposal, joiners, list(self.c_ballot)]
        leavers = [self.view.members[r] for r in self.leaving]
        for m in dict.fromkeys([*proposal.members, *leavers]):
            if m != self.ctx.me:
                self.ctx.down(Oob(m, msg))
        proposal = dataclasses.replace(proposal, ballot=self.c_ballot)
        self.c_ballot = None
        self._apply_install(proposal, joiners)

    # --- installation ----------------------------------------------------------------------------

    def _oob(self, peer: str, msg: Any) -> None:
        kind = msg[0]
        if kind == OOB_JOIN:
            self._on_join(msg)
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
            self._on_install(proposal, [str(j) for j in msg[2]], ballot)
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
            self._apply_install(w, joiners)
        elif w.prev == v.vid and me in w.members:
            if self.done is not None and tuple(self.done[1][:2]) == w.vid:
                self._apply_install(w, joiners)
            else:  # installed without our accepting it: we were left behind, start afresh
                self.ctx.count("gms.left_behind")
                self._leave_component(w)
        elif w.prev == v.vid and w.primary:  # the group moved on without us: leave or rejoin
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
            (max(w.ltime, v.ltime) + 1, me),
            (me,),
            False,
            w.last_primary,
            w.last_primary_vid,
            v.vid,
        )
        self.ctx.trace(f"gms excluded by {w}")
        self.ctx.up(View(alone))

    def _relay(self, src: str) -> None:
        """`src` still sends in our previous view: show it this one (it installs it, or learns
        it was excluded and goes to rejoin)."""
        v = self.view
        if not v.primary or self.ctx.now - self.relayed.get(src, -1.0) < 0.05:
            return  # only a primary view is where the group went
        self.relayed[src] = self.ctx.now
        ballot = list(v.ballot) if v.ballot else None
        self.ctx.down(Oob(src, [OOB_INSTALL, view_to_wire(v), [], ballot]))

    # --- joins -----------------------------------------------------------------------------------

    def _join_msg(self) -> list:
        v = self.view
        return [
            OOB_JOIN,
            self.ctx.me,
            v.ltime,
            list(v.last_primary_vid),
            list(v.last_primary),
            v.coord,
        ]

    def _send_joins(self) -> None:
        v = self.view
        contacts = dict.fromkeys([*self.ctx.seeds, *v.last_primary])
        msg = self._join_msg()
        for m in contacts:
            if m not in v.members:
                self.ctx.down(Oob(m, msg))

    def _on_join(self, msg: list) -> None:
        _, addr, ltime, _, _, _ = msg
        addr = str(addr)
        v = self.view
        if type(ltime) is not int:
            raise TypeError("ltime")
        coord = self._coordinator()
        if coord != self.me:
            self._to(coord, (FWD_JOIN, msg))
            return
        if addr in v.members:
            r = v.rank(addr)
            if r == self.me:
                return
            if ltime < v.ltime:  # it never installed this view (its INSTALL was lost): resend
                if self.ctx.now - self.relayed.get(addr, -1.0) >= 0.05:
                    self.relayed[addr] = self.ctx.now
                    self.ctx.down(Oob(addr, [OOB_INSTALL, view_to_wire(v), [addr]]))
                return
            # it left this view (excluded elsewhere, or far behind): take it out and back in within
            # one flush, so the view keeps its majority while it rejoins by state transfer
            self.joiners[addr] = msg
            self.ctx.down(Verify(frozenset([r]), force=True))
            return
        if not self._absorbs():
            return
        if addr not in self.joiners:
            self.joiners[addr] = msg
            self._maybe_start()

    def _absorbs(self) -> bool:
        """Who may admit members: a primary view, or the first seed while the group is forming.

        Two non-primary coordinators admitting each other's members concurrently could both reach
        a majority of the same reference; letting only one endpoint form the group rules that out.
        Reuniting non-primary components without the primary is the merge protocol's job.
        """
        v = self.view
        if v.primary:
            return True
        seeds = self.ctx.seeds
        return v.last_primary_vid == (0, "") and bool(seeds) and self.ctx.me == seeds[0]

    # --- time ------------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.c_ballot is not None:
            self._coordinator_tick()
        else:
            self._maybe_start()
        if self._coordinator() != self.me:
            self._member_tick()
        self._outsider_tick()

    def _coordinator_tick(self) -> None:
        """Drive our flush: install when leases ran out, resend, exclude the silent."""
        now, p = self.ctx.now, self.params
        if self.c_install_at is not None:
            if now >= self.c_install_at:
                self._install(view_from_wire(self.c_proposal))
            return
        if self.c_waiting:  # keep the blocked members' patience up while we wait
            if _every(now, p.flush_timeout / 4, p.retry_interval):
                for r in self._participants():
                    if r != self.me:
                        self._to(r, (START, *self.c_ballot, sorted(self.c_excluded)))
            return
        if self.c_cut is None:
            silent = [r for r in self._participants() if r not in self.c_reports]
        else:
            silent = [r for r in self._confirming() if r not in self.c_done]
        if now - self.c_started > p.flush_timeout and silent:
            self.ctx.trace(f"gms flush timeout, excluding {silent}")
            self.timed_out |= set(silent) - {self.me}
            self.c_ballot = None
            self._resuspect()
            return
        for r in silent:
            if r == self.me:
                continue
            if self.c_cut is None:
                self._to(r, (START, *self.c_ballot, sorted(self.c_excluded)))
            else:
                self._to(r, (CUT, *self.c_ballot, list(self.c_cut), self.c_proposal))

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
            self._to(coord, (SUSPECT, sorted(self.local)))
        if self.i_leave and self.accepted is None:
            self._to(coord, (LEAVE,))

    def _outsider_tick(self) -> None:
        """Outside the primary component, ask to be let back in; blocked for long, ask where
        the group went (it may have moved on while we were paused)."""
        now, p = self.ctx.now, self.params
        if not _every(now, p.join_interval, p.retry_interval):
            return
        if not self.view.primary:
            self._send_joins()
        elif self.blocked_since is not None and now - self.blocked_since > p.flush_timeout:
            msg = [OOB_PROBE, list(self.view.vid)]
            for m in self.view.members:
                if m != self.ctx.me:
                    self.ctx.down(Oob(m, msg))

    def dump(self) -> dict:
        return {
            "suspected": sorted(self.suspected),
            "accepted": self.accepted,
            "coordinating": self.c_ballot,
        }


def _every(now: float, period: float, tick: float) -> bool:
    """True on the first tick of each `period` (ticks come every `tick` seconds)."""
    return int(now / period) != int((now - tick) / period)


def fmt_header(h: Any) -> str:
    names = ["START", "REPORT", "CUT", "DONE", "SUSPECT", "LEAVE", "FWD_JOIN", "NACK"]
    return "-" if h is None else f"{names[h[0]] if 0 <= h[0] < 8 else '?'}{tuple(h[1:])}"
