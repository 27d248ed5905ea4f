"""Tests for cohort.stack.check: a correct hand-written trace passes, and each broken variant of it
trips exactly the property it breaks (the checker guards every simulator run, so a silent
checker would hide real stack bugs)."""

from __future__ import annotations

import time

import pytest
from cohort.stack import check as chk
from cohort.stack.trace import Trace

V1, V2 = (1, "a"), (2, "a")
ABC, AB = ("a", "b", "c"), ("a", "b")
REPLAY = "python -m cohort.stack.sim --seed 42"


def make(ops: list[tuple], live: tuple[str, ...] = AB, liveness: bool = True, total: bool = True):
    """Build a Trace from (kind, member, *data) tuples; steps and times follow list order."""
    t = Trace(seed=42, replay=REPLAY, live=live, liveness=liveness, total=total)
    for kind, member, *data in ops:
        t.add(float(len(t.records)), member, kind, *data)
    return t


def inst(m, vid, members, primary=True, prev=None):
    return ("install", m, vid, members, primary, prev)


def dlv(m, vid, origin, payload):
    return ("deliver", m, vid, origin, payload)


def good() -> list[tuple]:
    """a, b, c in V1; c crashes after delivering m1; a and b flush and move to V2 = {a, b}."""
    return [
        inst("a", V1, ABC),
        inst("b", V1, ABC),
        inst("c", V1, ABC),
        ("send", "a", V1, b"m1"),
        ("send", "c", V1, b"m2"),
        ("send", "a", V1, b"m3"),
        *[dlv(p, V1, "a", b"m1") for p in "abc"],
        ("safe", "a", V1, b"m1"),
        ("safe", "b", V1, b"m1"),
        ("crash", "c"),
        *[dlv(p, V1, o, m) for p in "ab" for o, m in (("c", b"m2"), ("a", b"m3"))],
        inst("a", V2, AB, True, V1),
        inst("b", V2, AB, True, V1),
        ("send", "b", V2, b"m4"),
        dlv("a", V2, "b", b"m4"),
        dlv("b", V2, "b", b"m4"),
    ]


def props(ops: list[tuple], **kw) -> set[str]:
    return {v.prop for v in chk.check(make(ops, **kw))}


def drop(ops: list[tuple], *recs: tuple) -> list[tuple]:
    for r in recs:
        ops.remove(r)
    return ops


def test_correct_trace_passes():
    t = make(good())
    assert chk.check(t) == []
    chk.assert_ok(t)
    assert "trace ok" in chk.report(t, [])


def test_dropped_delivery_breaks_virtual_synchrony():
    ops = drop(good(), dlv("b", V1, "a", b"m3"))
    found = chk.check_virtual_synchrony(make(ops))
    assert [v.prop for v in found] == ["V3"]
    assert found[0].messages == (b"m3",)
    assert "O5" in props(ops)  # a and b moved together with different sequences


def test_swapped_deliveries_break_total_order():
    ops = good()
    i, j = ops.index(dlv("b", V1, "c", b"m2")), ops.index(dlv("b", V1, "a", b"m3"))
    ops[i], ops[j] = ops[j], ops[i]
    assert {"O3", "O5"} <= props(ops)
    assert chk.check_total_order(make(ops, total=False)) == []  # only checked for total traces


def test_delivery_in_wrong_view():
    ops = drop(good(), dlv("b", V1, "a", b"m3"))
    ops.insert(ops.index(inst("b", V2, AB, True, V1)) + 1, dlv("b", V2, "a", b"m3"))
    assert "V1" in props(ops)
    ops2 = good()
    ops2[ops2.index(dlv("b", V2, "b", b"m4"))] = dlv("b", V1, "b", b"m4")  # stamp vs current
    assert [v.prop for v in chk.check_sending_view(make(ops2))] == ["V1"]


def test_delivery_in_non_primary_view():
    ops = good()
    k = ops.index(("crash", "c"))
    v2c = (2, "c")
    ops[k : k + 1] = [
        inst("c", v2c, ("c",), False, V1),
        ("send", "c", v2c, b"m9"),
        dlv("c", v2c, "c", b"m9"),
    ]
    found = chk.check_minority_progress(make(ops))
    assert [v.prop for v in found] == ["M8"] and "non-primary" in found[0].detail


def test_zombie_delivery_after_primary_moved_on():
    ops = drop(good(), ("crash", "c"))
    ops.remove(dlv("c", V1, "a", b"m1"))
    ops.append(dlv("c", V1, "a", b"m1"))  # c was paused; wakes up after a and b left V1
    found = chk.check_minority_progress(make(ops))
    assert [v.prop for v in found] == ["M8"] and "stale" in found[0].detail
    assert chk.check_minority_progress(make(good())) == []


def test_view_fork():
    ops = drop(good(), ("crash", "c"))
    ops.append(inst("c", (2, "c"), ("c",), True, V1))  # c also claims a primary successor of V1
    found = chk.check_primary_component(make(ops, live=ABC))
    assert [v.prop for v in found] == ["M5"] and "fork" in found[0].detail


def test_primary_without_majority():
    ops = [
        *[inst(p, V1, ABC) for p in "abc"],
        ("crash", "b"),
        ("crash", "c"),
        inst("a", V2, ("a",), True, V1),
    ]
    found = chk.check_primary_component(make(ops, live=("a",)))
    assert [v.prop for v in found] == ["M5"] and "majority" in found[0].detail


def test_duplicate_delivery():
    ops = good()
    ops.insert(ops.index(("crash", "c")), dlv("a", V1, "a", b"m1"))
    assert [v.prop for v in chk.check_no_duplication(make(ops))] == ["D2"]
    assert "D2" in props(ops)


def test_forged_and_never_sent_payloads():
    ops = good()
    ops.insert(ops.index(("crash", "c")), dlv("b", V1, "a", b"forged"))
    ops.insert(ops.index(("crash", "c")), dlv("b", V1, "c", b"m1"))  # m1 is a's, not c's
    found = chk.check_integrity(make(ops))
    assert [v.prop for v in found] == ["D1", "D1"]
    assert {v.messages for v in found} == {(b"forged",), (b"m1",)}


def test_foreign_origin():
    ops = good()
    ops.insert(ops.index(("crash", "c")), ("send", "c", V1, b"m9"))
    ops += [dlv("a", V2, "c", b"m9"), dlv("b", V2, "c", b"m9")]
    found = chk.check_no_foreign(make(ops))
    assert {v.prop for v in found} == {"D3"} and len(found) == 2


def test_fifo_inversion():
    ops = good()
    for p in "ab":
        i, j = ops.index(dlv(p, V1, "a", b"m1")), ops.index(dlv(p, V1, "a", b"m3"))
        ops[i], ops[j] = ops[j], ops[i]
    found = chk.check_fifo(make(ops))
    assert {v.prop for v in found} == {"O1"} and found[0].messages == (b"m1", b"m3")


def test_safe_message_missing_at_survivor():
    ops = drop(good(), dlv("a", V1, "c", b"m2"), dlv("b", V1, "c", b"m2"))
    ops.insert(ops.index(("crash", "c")), dlv("c", V1, "c", b"m2"))
    ops.insert(ops.index(("crash", "c")), ("safe", "c", V1, b"m2"))
    found = chk.check_uniform_agreement(make(ops))
    assert found and {v.prop for v in found} == {"V5"}
    assert all(b"m2" in v.messages for v in found)
    assert "V3" not in props(ops)  # plain virtual synchrony cannot see this


def test_self_delivery_missing():
    ops = good()
    ops.insert(ops.index(("crash", "c")), ("send", "a", V1, b"m5"))
    found = chk.check_self_delivery(make(ops))
    assert [v.prop for v in found] == ["V4"] and found[0].messages == (b"m5",)


def test_same_vid_different_members():
    ops = good()
    ops[ops.index(inst("b", V2, AB, True, V1))] = inst("b", V2, ("b", "a"), True, V1)
    assert [v.prop for v in chk.check_view_agreement(make(ops))] == ["M4"]


def test_non_monotonic_vids():
    ops = good() + [inst("a", (1, "z"), AB, True, V2)]
    found = chk.check_monotonicity(make(ops))
    assert [v.prop for v in found] == ["M2"] and found[0].members == ("a",)


def test_liveness_not_converged():
    found = chk.check_membership_precision(make(good(), live=ABC))
    assert [v.prop for v in found] == ["L2"]
    assert chk.check_membership_precision(make(good(), live=ABC, liveness=False)) == []


def test_undelivered_final_view_message():
    ops = drop(good(), dlv("b", V2, "b", b"m4"))
    found = chk.check_termination(make(ops))
    assert [v.prop for v in found] == ["L1"] and found[0].messages == (b"m4",)
    assert "L1" not in props(ops, liveness=False)


def test_self_inclusion_initial_view_and_safe():
    ops = [("send", "d", V1, b"x")] + good()
    ops.insert(ops.index(("crash", "c")), ("safe", "c", V1, b"m3"))  # c never delivered m3
    ops.append(inst("d", (3, "a"), AB, True, None))
    assert {"M1", "M3", "S1"} <= props(ops)


def test_prev_view_coherence():
    ops = good()
    ops.insert(ops.index(inst("b", V2, AB, True, V1)), inst("b", (1, "b"), ABC, True, V1))
    ops[ops.index(inst("b", V2, AB, True, V1))] = inst("b", V2, AB, True, (1, "b"))
    assert [v.prop for v in chk.check_prev_view(make(ops))] == ["M7"]


def test_report_names_seed_and_replay():
    t = make(drop(good(), dlv("b", V1, "a", b"m3")))
    violations = chk.check(t)
    text = chk.report(t, violations)
    assert "seed=42" in text and REPLAY in text and "V3" in text and "b'm3'" in text
    assert "seed=42" in str(violations[0]) and REPLAY in str(violations[0])
    with pytest.raises(AssertionError, match="V3"):
        chk.assert_ok(t)


def test_cap_per_property():
    ops = good()
    ops += [dlv("a", V2, "z", b"x%d" % i) for i in range(20)]
    found = chk.check_integrity(make(ops))
    assert len(found) == chk.CAP


@pytest.mark.parametrize("broken", [False, True])
def test_dumps_loads_round_trip(broken: bool):
    ops = good()
    if broken:
        ops = drop(ops, dlv("b", V1, "a", b"m3"))
    t = make(ops)
    t2 = Trace.loads(t.dumps())
    assert [str(v) for v in chk.check(t2)] == [str(v) for v in chk.check(t)]
    assert bool(chk.check(t2)) == broken


def test_large_trace_is_fast():
    members = tuple("abcde")
    ops = [inst(p, V1, members) for p in members]
    for n in range(4500):  # 11 records per message: ~50k records, the largest traces we expect
        m, o = b"p%d" % n, members[n % 5]
        ops.append(("send", o, V1, m))
        ops += [dlv(p, V1, o, m) for p in members]
        ops += [("safe", p, V1, m) for p in members]
    ops += [inst(p, V2, members, True, V1) for p in members]
    t = make(ops, live=members)
    assert len(t.records) > 49000
    start = time.perf_counter()
    assert chk.check(t) == []
    assert time.perf_counter() - start < 3.0  # typically well under a second
