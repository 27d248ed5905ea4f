"""Bounded exhaustive exploration of the real layers: clean code passes, seeded bugs are caught."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import explorer as ex
import pytest
from cohort.stack.layers import gms_coord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mutants"))
from mutant_catalog import by_name  # noqa: E402

STATES = 400


def bounds(scenario: str, states: int = STATES) -> ex.Bounds:
    return dataclasses.replace(ex.main_bounds(scenario), max_states=states)


@pytest.mark.parametrize("scenario", sorted(ex.SCENARIOS))
@pytest.mark.timeout(120)
def test_every_explored_schedule_passes_the_checker(scenario):
    b = bounds(scenario)
    r = ex.explore(b, scenario=scenario)
    assert r.violation is None, f"{r.violation}\npath: {r.path}"
    assert r.states == b.max_states and r.transitions > r.states  # it really branched


@pytest.mark.timeout(120)
def test_a_small_bound_is_explored_to_the_end():
    """`make test`'s exhaustive bound (TEST_BOUND): every schedule within it passes."""
    r = ex.explore(ex.TEST_BOUND)
    assert r.violation is None, f"{r.violation}\npath: {r.path}"
    assert r.exhaustive, r
    assert r.terminals > 1 and r.slept > 0 and r.persistent > 0, r


@pytest.mark.timeout(120)
def test_terminal_worlds_settle_into_one_view_of_the_live_members():
    """With `settle`, every terminal world runs on fault-free and liveness (L1, L2) is checked."""
    b = dataclasses.replace(ex.REDUCTION_BOUNDS[1], settle=8.0)
    r = ex.explore(b)
    assert r.violation is None, f"{r.violation}\npath: {r.path}"
    assert r.exhaustive and r.terminals > 1, r
    cut = ex.explore(dataclasses.replace(b, max_states=50))
    assert not cut.exhaustive and cut.status() == "state budget ran out", cut


@pytest.mark.parametrize("b", ex.REDUCTION_BOUNDS, ids=["2ticks", "crash"])
@pytest.mark.timeout(120)
def test_the_reduction_reaches_the_outcomes_of_the_full_search(b):
    """Sleep and persistent sets skip reorderings of independent moves, never an outcome.
    (Outcomes, not state keys: a pickled member is not a canonical form of its state, so one
    state reached by two histories may hash apart; that costs revisits, not coverage.)"""
    full_keys: set[tuple] = set()
    reduced_keys: set[tuple] = set()
    full = ex.explore(b, por=False, outcomes=full_keys)
    reduced = ex.explore(b, por=True, outcomes=reduced_keys)
    assert full.exhaustive and reduced.exhaustive, (full, reduced)
    assert reduced_keys == full_keys and len(full_keys) > 1
    assert reduced.states < full.states and reduced.transitions < full.transitions


def _cut_is_the_minimum(monkeypatch) -> None:
    """Seeded bug: the flush cut takes the minimum of the reports instead of the maximum."""
    src = open(gms_coord.__file__).read()
    right = "cut = tuple(max(col) for col in zip(*(r[0] for r in reports.values())))"
    assert right in src
    ns = dict(vars(gms_coord))
    exec(compile(src.replace(right, right.replace("max(", "min(")), gms_coord.__file__, "exec"), ns)
    monkeypatch.setattr(gms_coord.CoordinatorRole, "propose", ns["CoordinatorRole"].propose)


@pytest.mark.timeout(120)
def test_the_explorer_catches_a_flush_cut_that_drops_messages(monkeypatch):
    name = "coordinator-naps-mid-flush"
    _cut_is_the_minimum(monkeypatch)
    r = ex.explore(bounds(name, 2000), scenario=name)
    assert r.violation is not None and r.path, "the seeded bug went unnoticed"
    assert "cut_below_delivered" in r.violation, r.violation
    monkeypatch.undo()
    assert not ex.replay(r.path, bounds(name, 2000), scenario=name)


@pytest.mark.timeout(120)
def test_the_explorer_catches_stale_confirmations_beside_a_derived_view(monkeypatch):
    """`coord_trusts_stale_dones` (random scenarios never catch it): a coordinator that wakes up
    to stale DONEs installs its view while the others moved on to a view derived from it
    (`derive_successor_view`, its other half). The real code passes the same path. Its stale-DONE
    half alone is harmless now that views are re-proposed as they are: every explored schedule
    of the nap scenario passes."""
    name = "coordinator-naps-mid-flush"
    b = bounds(name, 1000)
    m = by_name("coord_trusts_stale_dones")
    with m.apply():
        r = ex.explore(b, scenario=name)
    assert r.violation is not None and r.path, r
    assert not ex.replay(r.path, b, scenario=name)
    monkeypatch.setattr(m.target, m.attr, m.build())  # the stale-DONE half alone
    alone = ex.explore(b, scenario=name)
    assert alone.violation is None, f"{alone.violation}\npath: {alone.path}"


@pytest.mark.timeout(120)
def test_the_explorer_catches_safe_marks_ahead_of_order_stability():
    """Random scenarios need ~870 runs for this one. m1 marks Safe what only it and the dead
    sequencer saw ordered; the survivors order the leftovers by rank (V5). The real code does
    not mark those casts Safe, and passes the same path."""
    name = "order-seen-by-two"
    b = bounds(name, 2000)
    with by_name("safe_ignores_order_stability").apply():
        r = ex.explore(b, scenario=name)
    assert r.violation is not None and "V5" in r.violation, r
    assert ex.replay(r.path, b, scenario=name) == ""


@pytest.mark.parametrize("name", ["flush_skips_crashed_origin", "done_before_cut_delivered"])
@pytest.mark.timeout(120)
def test_the_explorer_catches_a_flush_that_leaves_the_dead_origins_cast_behind(name):
    """m1's cast reached only m0 before m1 died: m0's flush must carry it to m2. A member that
    trusts what it holds of a dead origin, or confirms before delivering the cut, moves on
    without it (V3). The real code does not fail the same path."""
    scenario = "origin-dies-after-partial-cast"
    b = bounds(scenario, 2000)
    with by_name(name).apply():
        r = ex.explore(b, scenario=scenario)
    assert r.violation is not None and "V3" in r.violation, r
    assert not ex.replay(r.path, b, scenario=scenario)  # clean, or the real code goes elsewhere
