"""Bounded exhaustive exploration of the real layers: clean code passes, seeded bugs are caught."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import explorer as ex
import pytest

from stack.layers import gms_coord

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
    assert r.states == b.max_states and r.terminals > 0  # it really branched


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
    _cut_is_the_minimum(monkeypatch)
    r = ex.explore(
        bounds("origin-dies-after-partial-cast"), scenario="origin-dies-after-partial-cast"
    )
    assert r.violation is not None and r.path, "the seeded bug went unnoticed"


@pytest.mark.timeout(120)
def test_the_explorer_catches_a_coordinator_trusting_stale_confirmations():
    """Random scenarios need ~1,400 runs for this one; the nap scenario's first deep path has it.
    The real code does not fail that path (it leaves it: the woken coordinator rejoins)."""
    name = "coordinator-naps-mid-flush"
    b = bounds(name, 1000)
    with by_name("coord_trusts_stale_dones").apply():
        r = ex.explore(b, scenario=name)
    assert r.violation is not None and "M8" in r.violation, r
    assert not ex.replay(r.path, b, scenario=name)
