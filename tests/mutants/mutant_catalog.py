"""A catalog of seeded protocol bugs ("mutants") in the real stack code, applied only in tests.

Why: the simulator and the trace checker are only as good as the bugs they catch. Each mutant is
one small, realistic deviation of a real layer method (a condition flipped, a bound off by one, a
line dropped or misplaced), the kind of bug group-communication systems have shipped. `run.py`
hunts each one with random scenarios and reports which property caught it and after how many
runs; a mutant that survives points at a blind spot of the scenario generator or of the checker.

How a mutant is applied: `Mutant.apply()` takes the *current* source of the method, replaces the
one line that contains `old` (which must occur on exactly one line) by `new`, compiles the result
in the method's own module and patches it onto the class with `unittest.mock.patch.object` for the
duration of a `with` block. Copying method bodies by hand would go stale as the layers evolve (and
a stale copy is "caught" for the wrong reason); mutating the live source at apply time keeps every
mutant a one-line diff against today's code, and a refactor that removes the mutated line makes
`build()` raise `StaleMutant` instead of silently testing nothing. Nothing in `stack/` knows about
this module, so no mutant is reachable in normal use. One mutant is higher-order (`also`): a
check that another method's guard makes redundant is deleted together with that guard, which
makes it the only defence (see start_from_any_coordinator).

A `scenario` (scenarios.py) is a hand-built run for mutants that random scenarios reach rarely (or
not within the small budget of `make test`): it takes a seed and returns the finished trace for the
checker. Scenarios run with the unmutated code too (`test_mutants.py`), so a scenario that fails
there is a scenario bug, not a catch.
"""

from __future__ import annotations

import inspect

import scenarios as sc
from cohort.stack import runtime
from cohort.stack.layers.gms import Gms
from cohort.stack.layers.gms_coord import CoordinatorRole
from cohort.stack.layers.nak import Nak
from cohort.stack.layers.pt2pt import Pt2pt
from cohort.stack.layers.sequencer import Sequencer
from cohort.stack.layers.stable import StableLayer
from cohort.stack.layers.suspect import SuspectLayer
from cohort.stack.layers.top import Top
from mutation import (  # noqa: F401 - re-exported for run.py and the tests
    CATALOG,
    Mutant,
    Scenario,
    StaleMutant,
    by_name,
    loaded_source,
    mutant,
)

# =================================================================================================
# nak: reliable FIFO multicast
# =================================================================================================

mutant(
    "nak_dup_after_retransmit",
    "a retransmitted cast that was already delivered is delivered again (no duplicate filter "
    "on the retransmission path)",
    Nak,
    "_receive",
    'self.ctx.count("nak.duplicate")',
    'self.ctx.up(Deliver(origin, payload, hdrs)) if ev is None else self.ctx.count("nak.duplicate")',
)
mutant(
    "nak_skip_gap",
    "a cast arriving ahead of a hole is delivered at once and the receiver skips the hole "
    "(an unreliable-multicast fast path left on)",
    Nak,
    "_receive",
    "if seq == nxt:",
    "if seq >= nxt:",
)
mutant(
    "nak_gc_before_stable",
    "retransmission buffers are freed once SOME member has a cast (stability maxs) instead of "
    "every member (mins): a lost cast can no longer be repaired",
    Nak,
    "_on_stable",
    "for origin, low in enumerate(ev.mins):",
    "for origin, low in enumerate(ev.maxs):",
)
mutant(
    "nak_first_hole_only",
    "a NAK round asks only for the first hole of each origin, not for every hole",
    Nak,
    "_nak_round",
    "seq = hi + 1",
    "seq = end",
    scenario=sc.bulk_over_lossy_link,
    seeds=(1, 2, 3),
)


mutant(
    "nak_ask_origin_only",
    "NAKs always go to the origin, never to every member: holes in a crashed origin's casts "
    "are never filled although survivors hold them",
    Nak,
    "_nak_round",
    "dest = origin if r % 2 == 0 else None",
    "dest = origin",
    scenario=sc.lossy_origin_crash,
    seeds=(1, 2, 3, 4, 5),
)
mutant(
    "joiner_first_cast_dropped",
    "receivers expect a joiner's first cast at seq 1 (off by one in the join handshake), so a "
    "member's first cast in its first view is discarded as a duplicate",
    Nak,
    "__init__",
    "self.next = [0] * n",
    "self.next = [int(view.primary and m not in view.last_primary and m != ctx.me)"
    " for m in view.members]",
)

# =================================================================================================
# runtime: demultiplexing packets by view tag
# =================================================================================================

mutant(
    "accept_old_view_packets",
    "a packet tagged with the previous view (a late retransmission) is also fed to the current "
    "view's stack: no view-tag check on that path",
    runtime.Endpoint,
    "_route",
    "self._q.append((self._bottom_up, OldView(who)))",
    "self._q.append((self._bottom_up, OldView(who)))\nself._q.append((self._bottom_up, Recv(src, pkt)))",
)

# =================================================================================================
# pt2pt: reliable unicast
# =================================================================================================

mutant(
    "pt2pt_ack_off_by_one",
    "a cumulative ack also releases the message it names (`<=` for `<`), so a lost unicast is "
    "never retransmitted",
    Pt2pt,
    "up",
    "for seq in [s for s in unacked if s < h[1]]:",
    "for seq in [s for s in unacked if s <= h[1]]:",
    scenario=sc.unicasts_over_lossy_link,
    seeds=(1, 2, 3),
)

# =================================================================================================
# stable: stability detection
# =================================================================================================

mutant(
    "stable_live_counts_after_blocked",
    "stability gossip keeps reporting live receive counts after the view blocked, so casts "
    "beyond the flush cut can be declared stable (and Safe)",
    StableLayer,
    "down",
    "self.frozen = tuple(self.counts)",
    "pass",
)
mutant(
    "stable_ignores_silent_members",
    "stability is computed over the members that have gossiped so far: a member not heard yet "
    "counts as having everything",
    StableLayer,
    "_recompute",
    "cols = list(zip(*self.matrix))",
    "cols = list(zip(*[row for r, row in enumerate(self.matrix) if r == self.me or any(row)]))",
)

# =================================================================================================
# suspect: failure detection and the delivery lease
# =================================================================================================


mutant(
    "suspect_echo_while_blocked",
    "heartbeats are still echoed after the view blocked, so a member being excluded keeps "
    "renewing its delivery lease past what the coordinator waits out",
    SuspectLayer,
    "up",
    "if not self.blocked:",
    "if True:",
    scenario=sc.jittery_bridge,
    seeds=(9, 13, 14, 15, 16, 17),
)
mutant(
    "suspect_never_revoked",
    "a suspicion is never withdrawn when the member is heard again (no forgiveness after a "
    "pause or a healed partition)",
    SuspectLayer,
    "up",
    "if src in self.suspects:",
    "if False:",
    scenario=sc.forgiven_coordinator_then_join,
    seeds=(1, 2, 3),
)
mutant(
    "suspect_verify_off",
    "another member's suspicion is adopted without consulting our own failure detector "
    "(VERIFY_SUSPECT off): one confused member can evict a healthy one",
    SuspectLayer,
    "down",
    "self.suspects |= {r for r in ranks if now - self.last_heard[r] > quiet}",
    "self.suspects |= ranks",
    scenario=sc.one_way_cut_between_members,
    seeds=(1, 2, 3),
)


mutant(
    "lease_quorum_off_by_one",
    "the delivery lease needs echoes from half the view instead of a strict majority, so an "
    "isolated member of a 3-member view leases itself forever",
    SuspectLayer,
    "__init__",
    "self.need = len(ref) // 2 + 1 - (1 if ctx.me in ref else 0)",
    "self.need = len(ref) // 2 - (1 if ctx.me in ref else 0)",
    scenario=sc.sleeping_sequencer,
)

# =================================================================================================
# gms: membership, member side
# =================================================================================================

mutant(
    "done_before_cut_delivered",
    "a member confirms the flush (DONE) as soon as the cut arrives, before it has fetched and "
    "delivered the casts up to the cut",
    Gms,
    "_on_cut",
    "self.ctx.up(FlushCut(ballot, cut))",
    "self.ctx.up(FlushCut(ballot, cut))\nself.done = self.proposal\nself._to(src, (DONE, *ballot, t))",
)
mutant(
    "flush_skips_crashed_origin",
    "a member takes what it holds of a suspected origin's casts as complete and delivers only "
    "that, instead of fetching up to the coordinator's cut",
    Gms,
    "_on_cut",
    "self.proposal = (ballot, proposal, cut, partial)",
    "cut = tuple(min(c, self.my_report[o]) if o in self.suspected and self.my_report else c"
    " for o, c in enumerate(cut))\nself.proposal = (ballot, proposal, cut, partial)",
)
derive_successor_view = mutant(
    "derive_successor_view",
    "a new coordinator that cannot reach every member of a possibly installed view proposes "
    "that view without them (a new view id, the same cut) instead of proposing it again as it is",
    CoordinatorRole,
    "propose",
    "self.partial = not everyone or (len(maybe) > 3 and maybe[3] is True)",
    "self.partial = False\nif not everyone:\n    vid = (self.g.seen_ltime + 1, self.g.ctx.me)\n"
    "    proposal = view_to_wire(ViewRec(vid, keep, True, keep, vid, v.vid))",
    # This was the protocol until issue 6 (stop 9), and the bug the strengthened checker found
    # in it (cohort sim seed 1000113, 7 members): members that confirmed the derived view ignore
    # relays of the original, so if its lonely installers and they each lack a majority, the
    # group never reunites (L2). Two guards of the real code only matter under this bug; their
    # mutants below are higher-order with it.
    scenario=sc.successor_then_crash,
    seeds=(2, 3),  # L2: m0, m1, m5 stay in W, m2 and m3 in V (seed 1 happens to reunite)
)
mutant(
    "install_ballot_check_off",
    "an INSTALL from an older ballot is applied although we accepted a later coordinator's "
    "proposal of another view",
    Gms,
    "_on_install",
    "and tuple(self.done[0]) > ballot",
    "and False",
    # Alone, equivalent since partial re-proposals: the branch (gms.install_superseded) was hit
    # 0 times in 2850 unmutated random scenarios and in every targeted one. A later ballot
    # proposes another view only after hearing from a member of W that had not accepted W, and
    # then W cannot be installed. The check guards against derived views (derive_successor_view):
    # with both, an older ballot's INSTALL of W wins over the derived view a member accepted.
    also=(derive_successor_view,),
    scenario=sc.random_run(7),
    seeds=(1001487,),  # L2 (derived view alone: clean on this seed)
)
mutant(
    "install_accepts_unaccepted",
    "a member installs a successor of its view although it never confirmed that proposal, "
    "instead of treating itself as left behind",
    Gms,
    "_on_install",
    "if self.done is not None and tuple(self.done[1][:2]) == w.vid:",
    "if True:",
    # Reached (counter gms.left_behind) by a member of a view that was installed without its
    # confirmation: a partial re-proposal made while it was unreachable. Random scenarios reach
    # it in 8 of 2850 unmutated (the first, seed 1001198 of 5 members, is caught: V3): the
    # partition must start between the member's REPORT and the CUT. The scenario isolates m3
    # right after it reported; m3 hears of W when it heals.
    scenario=sc.cut_off_after_reporting,
    seeds=(1, 2, 3),  # V3 at seed 1: m3 installs W without m1's and m2's last casts
)
mutant(
    "absorbed_while_confirming",
    "a member in its component's flush lets a forming seed of another component absorb it: it "
    "may have confirmed a first primary view that is installed without it, and the absorber's "
    "next view counts it as well, so two groups form",
    Gms,
    "_on_install",
    "if self.accepted is not None and not w.primary and w.prev != v.vid:",
    "if self.accepted is not None and w.primary and w.prev != v.vid:",
    # Random scenarios never form a group under faults, and the forming family (tests/stack/
    # forming.py) reaches the window (a member that confirmed, its INSTALL lost, a lower seed
    # starting just then) about once in a thousand runs: the scenario builds it.
    scenario=sc.partition_at_formation,
    seeds=(1, 2, 3),  # M5: a fork, (3,m1) of m1, m3, m2 and (4,m0) of m0, m4, m2
)

# A higher-order mutant. Its receiver half alone (the rank check in `_on_start` deleted) is
# equivalent: a START always comes from `_coordinator(local | excluded)` of its receiver, since
# CoordinatorRole.start() runs only when every lower rank is in the sender's `suspected`, which
# the START carries as `excluded` (resends reuse it), and a coordinator never excludes itself;
# the check never decides (test_the_start_rank_check_never_decides: 103,137 STARTs in 4000
# random scenarios, none failed it). Its sender half alone (`premature_takeover`: a member that
# suspects the view's first member starts a flush at once, its START excluding only what it
# suspects) is masked by that check: every such START fails it at every receiver, the sender's
# own included, so the flush gathers no report; the sender times out, waits without a majority,
# and is taken back when the link heals (test_the_premature_takeover_alone_is_masked; no
# violation in the scenario at seeds 1-15, nor in 1200 random scenarios). Together: members
# join whichever flush has the highest ballot, m3's and m4's overtake each other and m1's
# (which adopted m0's exclusion from them), coordinators time out the members that followed a
# rival, and healthy members are excluded (M9). Random scenarios miss it (0 in 300, both halves
# applied): it takes two members cut off from the coordinator at once (they cut one pair or one
# member).
premature_takeover = Mutant(
    "premature_takeover",
    "a member whose failure detector suspects the view's first member starts a flush as "
    "coordinator at once, without deferring to the members ranked between them",
    Gms,
    "_maybe_start",
    "if self._coordinator() != self.me or self.coord.ballot is not None:",
    "if (self._coordinator() != self.me and 0 not in self.local) or self.coord.ballot is not None:",
)
mutant(
    "start_from_any_coordinator",
    "a member joins the flush of whoever sends START (no check of the proposer's rank), and a "
    "member that suspects the view's first member takes over at once: concurrent coordinators",
    Gms,
    "_on_start",
    "if self._coordinator(self.local | excluded) != src or ballot[1] != self.view.members[src]:",
    "if ballot[1] != self.view.members[src]:",
    also=(premature_takeover,),
    scenario=sc.coordinator_unheard_by_two,
    seeds=(5, 33),  # M9 at 5: m0 excluded by (2,m1), though neither m1 nor m0 lost contact with it
)

# =================================================================================================
# gms: membership, coordinator side
# =================================================================================================

mutant(
    "flush_cut_min",
    "the flush cut is the element-wise minimum of the reports instead of the maximum, so casts "
    "some survivor delivered are cut off",
    CoordinatorRole,
    "propose",
    "cut = tuple(max(col) for col in zip(*(r[0] for r in reports.values())))",
    "cut = tuple(min(col) for col in zip(*(r[0] for r in reports.values())))",
)


mutant(
    "coord_no_paxos_adopt",
    "a new coordinator ignores the proposals members report having accepted and proposes a "
    "fresh view and cut (the Paxos 'adopt the highest accepted value' rule is off)",
    CoordinatorRole,
    "propose",
    "maybe = self.installable_proposal()",
    "maybe = None",
    scenario=sc.split_after_install,
)
mutant(
    "majority_check_off",
    "the coordinator marks any proposal primary, so the minority side of a partition installs "
    "its own primary view (split brain)",
    CoordinatorRole,
    "next_view",
    "primary = bool(confirmed) and majority_of(voters, ref) and majority_of(voters, also)",
    "primary = bool(confirmed)",
)


mutant(
    "joiners_count_as_acceptors",
    "joiners count as acceptors of the view that admits them, so a joiner that dies before "
    "its first flush is needed for every later majority",
    CoordinatorRole,
    "next_view",
    "confirmed = tuple(m for m in members_t if 0 <= v.rank(m) and v.rank(m) not in gone)",
    "confirmed = members_t",
    scenario=sc.joiner_then_double_crash,
)
mutant(
    "install_without_all_done",
    "the coordinator installs once a majority of the proposal's members confirmed (DONE) "
    "instead of all of them",
    CoordinatorRole,
    "maybe_install",
    "if self.stale():",
    "if 2 * len(self.stale()) >= len(self.confirming()):",
    # A member that gets the INSTALL of a view it never confirmed counts itself left behind, so
    # the early install harms only when the one that did not confirm goes on without it: the
    # partition moves between its report and the CUT. Random scenarios: first caught at 1845
    # (seed 1001844, 7 members, V3), so not within make test's budget.
    scenario=sc.split_before_confirming,
    seeds=(1, 2, 3),  # M5 at seed 1: m0..m2 install W, m3..m6 their own primary view
)


mutant(
    "coord_trusts_stale_dones",
    "the coordinator counts any DONE of its ballot, however old: a coordinator paused mid-flush "
    "wakes up and installs on confirmations that may have been overtaken",
    CoordinatorRole,
    "stale",
    "return [r for r in self.confirming() if now - self.dones.get(r, -1e18) > fresh]",
    "return [r for r in self.confirming() if r not in self.dones]",
    # Alone, equivalent since partial re-proposals: the mutated line decides (a DONE counted
    # though stale) in 122 of 2000 random scenarios (463 calls) with no violation, and in
    # coordinator_naps_mid_flush the waking m0 installs the views it installs on the real code
    # (test_stale_dones_install_only_the_view_the_group_installed): once every confirming member
    # has confirmed W, every later ballot re-proposes W, so a stale confirmation can only install
    # what the group installs anyway. It matters when a later coordinator may derive another view
    # (derive_successor_view): then the waking coordinator installs W beside it (M8).
    also=(derive_successor_view,),
    scenario=sc.coordinator_naps_mid_flush,
    seeds=(1, 2, 3),  # M8 at each (derived view alone: clean on these seeds)
)
mutant(
    "no_lease_wait",
    "the coordinator installs a view that excludes live members without waiting out the "
    "delivery leases granted to them",
    CoordinatorRole,
    "maybe_install",
    "if wait > 0:",
    "if False:",
)

# =================================================================================================
# sequencer: total order and uniformity
# =================================================================================================

mutant(
    "deliver_before_order",
    "a member delivers another member's cast when it arrives, without waiting for the "
    "sequencer's ORDER slot",
    Sequencer,
    "up",
    "self.data[o].append((ev, idx))",
    "self._deliver(ev, o, idx, idx)",
)


mutant(
    "sequencer_skips_slot",
    "the sequencer's run-length ORDER loses a slot when one origin has two casts in a row, so "
    "that origin's casts lag one behind (the last waits for the view end)",
    Sequencer,
    "_cast_order",
    "runs[-1] += 1",
    "pass",
    scenario=sc.sequencer_naps,
)
mutant(
    "leftovers_unordered",
    "at a view end, casts without an ORDER slot are delivered in a per-member arbitrary order "
    "(hash/arrival order) instead of by origin rank",
    Sequencer,
    "_deliver_leftovers",
    "for o, q in enumerate(data):",
    "for o, q in sorted(enumerate(data), key=lambda _: self.ctx.rng.random()):",
)
mutant(
    "leftovers_when_excluded",
    "unordered casts are delivered at every view end, also when the next view is not primary "
    "or excludes us",
    Sequencer,
    "up",
    "if nv.primary and self.ctx.me in nv.members and self.view.primary:",
    "if self.view.primary:",
)
mutant(
    "safe_when_sender_has_it",
    "a cast is reported Safe once some member (the sender) has it: stability maxs used where "
    "mins are needed",
    Sequencer,
    "up",
    "self.mins = ev.quorum or ev.mins",
    "self.mins = ev.maxs",
)


mutant(
    "safe_ignores_order_stability",
    "a cast is reported Safe when it is stable although the ORDER cast that placed it is not, "
    "so survivors may order it differently",
    Sequencer,
    "_advance_safe",
    "if mins[o] > idx and mins[0] > oidx:",
    "if mins[o] > idx:",
    scenario=sc.order_seen_by_two,
)

# =================================================================================================
# top: the application boundary and the lease gate
# =================================================================================================

mutant(
    "top_ignores_lease",
    "deliveries are passed to the application whatever the lease says, so a paused member "
    "delivers in its stale view after the others moved on",
    Top,
    "up",
    "if self.held or self.ctx.now >= self.lease_until:",
    "if self.held:",
)
mutant(
    "top_releases_held_when_excluded",
    "deliveries held for an expired lease are released at any view end, also when we were "
    "excluded, instead of being dropped",
    Top,
    "up",
    "if nv.primary and self.ctx.me in nv.members and self.primary:",
    "if True:",
)


mutant(
    "safe_overtakes_held",
    "a Safe indication is passed up at once while earlier deliveries are still held for the "
    "lease: the application is told 'safe' for messages it has not been given",
    Top,
    "up",
    "if self.held:",
    "if False:",
    scenario=sc.pause_with_traffic,
)

# snapshot the sources now, while they match the freshly imported modules (every site)
for _m in [site for m in CATALOG for site in (m, *m.also)]:
    try:
        loaded_source(inspect.unwrap(_m.original()))
    except (OSError, StaleMutant):
        pass  # reported when the mutant is applied

__all__ = ["CATALOG", "Mutant", "Scenario", "StaleMutant", "by_name", "mutant"]
