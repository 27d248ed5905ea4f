"""The checker properties over generator records (cohort.stack.check.faults) fail the traces they must.

Why here: these properties were added to catch seeded bugs of the catalog (pt2pt, suspect, nak);
like tests/stack/test_check.py for the others, each gets a hand-written trace it must reject and a
close variant it must accept, so a weakened predicate shows up here and not as a survivor.
"""

from __future__ import annotations

from cohort.stack import check
from cohort.stack.trace import DELIVER, INSTALL, SEND, Trace

V = (1, "m0")
W = (2, "m0")
ABC = ("m0", "m1", "m2")


def _props(tr: Trace) -> set[str]:
    return {v.prop for v in check.check(tr)}


def _group(schedule: bool = True, bound: float | None = None) -> Trace:
    tr = Trace(total=False)
    if schedule:
        tr.add(0.0, "", check.SCHEDULE, bound)
    for m in ABC:
        tr.add(0.0, m, INSTALL, V, ABC, True, None, ABC)
    return tr


def _unicasts(deliveries: list[tuple[str, bytes]], live: bool = False) -> Trace:
    tr = _group(schedule=False)
    for p in (b"a", b"b"):
        tr.add(0.1, "m0", check.USEND, V, "m1", p)
    for q, p in deliveries:
        tr.add(0.2, q, check.UDELIVER, V, "m0", p)
    tr.live, tr.liveness = ABC, live
    return tr


def test_unicasts_delivered_once_in_order_pass():
    assert _props(_unicasts([("m1", b"a"), ("m1", b"b")], live=True)) == set()


def test_unicast_integrity_duplication_order_and_termination():
    assert "U1" in _props(_unicasts([("m2", b"a")]))  # not its destination
    assert "U2" in _props(_unicasts([("m1", b"a"), ("m1", b"a")]))
    assert "U3" in _props(_unicasts([("m1", b"b")]))  # skipped "a"
    assert "U4" in _props(_unicasts([("m1", b"a")], live=True))
    assert "U4" not in _props(_unicasts([("m1", b"a")], live=False))


def _exclusion(fault: tuple | None, schedule: bool = True) -> Trace:
    """m2 is excluded from V by W, proposed by m0; `fault` (kind, member, *data) at 0.5."""
    tr = _group(schedule)
    if fault is not None:
        tr.add(0.5, fault[0], fault[1], *fault[2:])
    for m in ("m0", "m1"):
        tr.add(1.0, m, INSTALL, W, ("m0", "m1"), True, V, ("m0", "m1"))
    return tr


def test_an_exclusion_needs_a_cause():
    assert "M9" in _props(_exclusion(None))
    assert "M9" not in _props(_exclusion(None, schedule=False))  # faults not recorded: no verdict
    assert "M9" not in _props(_exclusion(("m2", check.CUT, "m0")))  # the proposer lost it
    assert "M9" not in _props(_exclusion(("m0", check.CUT, "m2")))
    assert "M9" not in _props(_exclusion(("m2", "pause")))
    # m1 ranks below the proposer: its word alone must not exclude m2 (VERIFY_SUSPECT)
    assert "M9" in _props(_exclusion(("m2", check.CUT, "m1")))


def _slow_repair(delay: float, fault_at: float | None = None) -> Trace:
    tr = _group(bound=0.25)
    if fault_at is not None:
        tr.add(fault_at, "m2", "pause")
        tr.add(fault_at + 0.1, "m2", "resume")
    tr.add(1.0, "m0", SEND, V, b"x")
    tr.add(1.0, "m0", DELIVER, V, "m0", b"x")
    tr.add(1.001, "m1", DELIVER, V, "m0", b"x")
    tr.add(1.0 + delay, "m2", DELIVER, V, "m0", b"x")
    tr.end_time = 3.0
    return tr


def test_a_cast_in_a_calm_stretch_is_repaired_within_the_bound():
    assert "L3" not in _props(_slow_repair(0.1))
    assert "L3" in _props(_slow_repair(0.4))
    assert "L3" not in _props(_slow_repair(0.4, fault_at=0.5))  # a fault explains the delay
