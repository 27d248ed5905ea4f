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
this module, so no mutant is reachable in normal use.

A `scenario` (scenarios.py) is a hand-built run for mutants that random scenarios reach rarely (or
not within the small budget of `make test`): it takes a seed and returns the finished trace for the
checker. Scenarios run with the unmutated code too (`test_mutants.py`), so a scenario that fails
there is a scenario bug, not a catch.
"""

from __future__ import annotations

import inspect

import scenarios as sc
from mutation import (  # noqa: F401 - re-exported for run.py and the tests
    CATALOG,
    Mutant,
    Scenario,
    StaleMutant,
    by_name,
    loaded_source,
    mutant,
)

from stack import runtime
from stack.layers.gms import Gms
from stack.layers.gms_coord import CoordinatorRole
from stack.layers.nak import Nak
from stack.layers.pt2pt import Pt2pt
from stack.layers.sequencer import Sequencer
from stack.layers.stable import StableLayer
from stack.layers.suspect import SuspectLayer
from stack.layers.top import Top

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
    seeds=(1, 2, 3, 4, 5, 6),
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
    "self.proposal = (ballot, proposal, cut)",
    "cut = tuple(min(c, self.my_report[o]) if o in self.suspected and self.my_report else c"
    " for o, c in enumerate(cut))\nself.proposal = (ballot, proposal, cut)",
)
mutant(
    "install_ballot_check_off",
    "an INSTALL from an older ballot is applied although we accepted a later coordinator's "
    "proposal (which carries the same cut)",
    Gms,
    "_on_install",
    "and tuple(self.done[0]) > ballot",
    "and False",
    scenario=sc.random_run(7),
    seeds=(1001487,),  # L2: joiner m7 never installs a view (an older ballot's INSTALL won)
)
mutant(
    "install_accepts_unaccepted",
    "a member installs a successor of its view although it never confirmed that proposal, "
    "instead of treating itself as left behind",
    Gms,
    "_on_install",
    "if self.done is not None and tuple(self.done[1][:2]) == w.vid:",
    "if True:",
    known_gap=(
        "not equivalent, but reachable only through a stale JOIN. The mutated line runs only for "
        "an INSTALL of W that reaches a member q still in W's predecessor V, names q as a member "
        "but not as a joiner, and either carries no ballot or one not below q's accepted ballot, "
        "while q's accepted proposal is not W (counter gms.left_behind). Every INSTALL sent by a "
        "coordinator, and every relay, carries the ballot that installed W; that coordinator had "
        "q's fresh DONE for W, and q's accepted proposal only moves on to a later ballot's "
        "successor of W, which the superseded check above handles. The one INSTALL without a "
        "ballot is `_on_join`'s resend to a member whose JOIN is older than W: a JOIN q sent "
        "before it entered V, delivered after W was installed and after a later coordinator of "
        "V, cut off from W's, had q accept a successor W2 of W (same cut, fewer members). Then, "
        "mutated, q installs W instead of leaving: harmless while W's other installers hold no "
        "majority of W's acceptors, a split brain (M5 fork: W and W2 both deliver) when q tips "
        "them over one. Counted: gms.left_behind 0 times in 4000 strict random scenarios "
        "(seeds 1000000+ and 3000000+, 3/5/7 members), nor by the explorer (one packet held "
        "across timer firings) within its bounds. A scenario would have to hand-place a JOIN "
        "delayed across two flushes and a coordinator cut off between INSTALLs, so none is written"
    ),
)
mutant(
    "start_from_any_coordinator",
    "a member joins the flush of whoever sends START, not only of the member it believes "
    "coordinates (no check of the proposer's rank)",
    Gms,
    "_on_start",
    "if self._coordinator(self.local | excluded) != src or ballot[1] != self.view.members[src]:",
    "if ballot[1] != self.view.members[src]:",
    known_gap=(
        "equivalent mutant: the deleted clause `_coordinator(local | excluded) != src` is false "
        "for every START the code can send, so no execution differs (message counts and timing "
        "included). It is true only if (a) a rank below src is missing from local | excluded, or "
        "(b) src is in local | excluded. (b): src in local was dropped two lines earlier, and a "
        "coordinator never excludes itself (`local` comes from the suspect layer without us, "
        "`adopted` never holds us since a START excluding us is answered with NACK, `timed_out` "
        "drops us). (a): a START carries the `excluded` set fixed by CoordinatorRole.start(), "
        "which runs only when `_coordinator() == me`, i.e. every lower rank is in the sender's "
        "`suspected` = `excluded`; resends reuse it unchanged; the property is of the message's "
        "content, so delays and reordering do not matter; ranks are those of the one view whose "
        "tag the packet carries. Only a forged START could tell. test_the_start_rank_check_"
        "never_decides checks the invariant on running code; in 4000 strict random scenarios "
        "103,137 STARTs reached the check and none failed it"
    ),
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
    scenario=sc.random_run(3),
    seeds=(1000064,),  # L2: joiner m4 never installs (installed before every member confirmed)
)


mutant(
    "coord_trusts_stale_dones",
    "the coordinator counts any DONE of its ballot, however old: a coordinator paused mid-flush "
    "wakes up and installs on confirmations that may have been overtaken",
    CoordinatorRole,
    "stale",
    "return [r for r in self.confirming() if now - self.dones.get(r, -1e18) > fresh]",
    "return [r for r in self.confirming() if r not in self.dones]",
    scenario=sc.coordinator_naps_mid_flush,
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

for _m in CATALOG:  # snapshot the sources now, while they match the freshly imported modules
    try:
        loaded_source(inspect.unwrap(_m.original()))
    except (OSError, StaleMutant):
        pass  # reported when the mutant is applied

__all__ = ["CATALOG", "Mutant", "Scenario", "StaleMutant", "by_name", "mutant"]
