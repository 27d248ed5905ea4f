"""Virtual-synchrony checker over `cohort.stack.trace.Trace`.

Why: the simulator runs the real layer code, so verifying these properties on every trace it emits
(hundreds of seeded runs per `make test`) is how we know the stack, not a model of it, is correct.
A violation names the property, the members and payloads involved, and the seed and replay command
that reproduce the run. Only the stdlib and `cohort.stack.trace` are imported, so the checker also works
offline on traces of real processes (`Trace.loads`).

Properties (ids as in docs/guarantees.md, adapted to our primary-partition design):

- M1 self inclusion · M2 local monotonicity of vids · M3 send/deliver/safe only after an install
  (a crash or leave ends the incarnation until its next install)
- M4 view agreement (same vid => same members, order and primary flag)
- M5 primary component: relevant primary views (those with an effect: a delivery in them, a move
  from them into another primary view, or a live member's final view) form a chain, each reached
  from its predecessor by some member, keeping a majority of the predecessor's members
- M7 previous-view coherence: a view is entered from different views only if those are disjoint
- M8 no minority progress: no deliver/safe in a non-primary view, and no delivery in a view after
  a primary successor that excludes the deliverer was installed (stale zombie)
- D1 integrity · D2 no duplication · D3 no foreign origin
- V1 sending-view delivery · V3 virtual synchrony · V4 self delivery · V5 uniform agreement of safe
  messages (set form; with `trace.total` also the order form) · S1 safe implies delivered
- O1 gap-free FIFO per origin and view
- O3/O5 total order (only with `trace.total`): members that move on to a primary view (plus, when
  liveness applies, live members still in the view) deliver prefixes of one sequence; members that
  move on to the same view deliver identical sequences. Members that crash in a view or move to a
  non-primary view are not constrained here: the stack's total order is uniform only for safe
  messages, which V5 checks through the safe records.
- L2 membership precision, L1 termination in the final view (only with `trace.liveness`)
- In `faults` (over generator records, below): U1-U4 reliable unicast; with a complete
  fault schedule, M9 every exclusion has a cause and L3 prompt repair

Generator records (from a scenario generator, `cohort.stack.sim.run_scenario`): SCHEDULE (a repair bound
in seconds, or None) says every fault is recorded: CRASH/PAUSE/RESUME, CUT (member = sender, data
(receiver,)), HEAL (all links work again), JOINING/LEAVING (told to join/leave). USEND (vid, dest,
payload) and UDELIVER (vid, origin, payload) record unicasts. Without them those checks are skipped.

API: each property is a public `check_<name>(trace) -> list[Violation]` (a generator over the
shared `index.Index`, wrapped by `index.prop`); its module lists it in `PROPERTIES`, and this
index lists the modules in `PROPERTIES` below, explicitly: `check()` runs all of them, `report()`
formats the result with the seed and replay command, `assert_ok()` raises with that report.

Performance: one indexing pass plus per-property passes over dict/set indexes; linear in the trace
except sorting (~0.2 s for 50k records). At most `CAP` violations are reported per property.
"""

from __future__ import annotations

from cohort.stack.check import delivery, faults, liveness, membership
from cohort.stack.check.delivery import (
    check_fifo,
    check_integrity,
    check_no_duplication,
    check_no_foreign,
    check_safe,
    check_self_delivery,
    check_sending_view,
    check_total_order,
    check_uniform_agreement,
    check_virtual_synchrony,
)
from cohort.stack.check.faults import (
    check_exclusion_cause,
    check_prompt_repair,
    check_unicast,
)
from cohort.stack.check.index import CAP, Check, Index, Violation
from cohort.stack.check.liveness import (
    check_membership_precision,
    check_termination,
)
from cohort.stack.check.membership import (
    check_initial_view,
    check_minority_progress,
    check_monotonicity,
    check_prev_view,
    check_primary_component,
    check_self_inclusion,
    check_view_agreement,
)
from cohort.stack.trace import (
    CRASH,
    CUT,
    DELIVER,
    HEAL,
    INSTALL,
    JOINING,
    LEAVE,
    LEAVING,
    PAUSE,
    RESUME,
    SAFE,
    SCHEDULE,
    SEND,
    UDELIVER,
    USEND,
    Trace,
)

#: every property, in the order `check()` runs them: membership, delivery, liveness, then the
#: properties over generator records (unicasts, the fault schedule)
PROPERTIES: tuple[Check, ...] = (
    *membership.PROPERTIES,
    *delivery.PROPERTIES,
    *liveness.PROPERTIES,
    *faults.PROPERTIES,
)


def check(trace: Trace) -> list[Violation]:
    """Run every property on `trace` (one shared index); at most CAP violations per property."""
    ix = Index(trace)
    return [v for run in PROPERTIES for v in run(trace, ix)]


def report(trace: Trace, violations: list[Violation]) -> str:
    """Human-readable report: one line per violation, then how to reproduce the run."""
    if not violations:
        return f"trace ok ({len(trace.records)} records, seed={trace.seed})"
    props = sorted({v.prop for v in violations})
    head = f"{len(violations)} violation(s) of {', '.join(props)} in {len(trace.records)} records"
    lines = [head, *(f"  {v.describe()}" for v in violations), f"seed={trace.seed}"]
    lines.append(f"replay: {trace.replay or '(no replay command recorded)'}")
    return "\n".join(lines)


def assert_ok(trace: Trace) -> None:
    """Raise AssertionError carrying the report if any property is violated."""
    violations = check(trace)
    if violations:
        raise AssertionError(report(trace, violations))


__all__ = [
    "CAP",
    "CRASH",
    "CUT",
    "Check",
    "DELIVER",
    "HEAL",
    "INSTALL",
    "Index",
    "JOINING",
    "LEAVE",
    "LEAVING",
    "PAUSE",
    "PROPERTIES",
    "RESUME",
    "SAFE",
    "SCHEDULE",
    "SEND",
    "Trace",
    "UDELIVER",
    "USEND",
    "Violation",
    "assert_ok",
    "check",
    "check_exclusion_cause",
    "check_fifo",
    "check_initial_view",
    "check_integrity",
    "check_membership_precision",
    "check_minority_progress",
    "check_monotonicity",
    "check_no_duplication",
    "check_no_foreign",
    "check_prev_view",
    "check_primary_component",
    "check_prompt_repair",
    "check_safe",
    "check_self_delivery",
    "check_self_inclusion",
    "check_sending_view",
    "check_termination",
    "check_total_order",
    "check_unicast",
    "check_uniform_agreement",
    "check_view_agreement",
    "check_virtual_synchrony",
    "report",
]
