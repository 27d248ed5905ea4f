"""Bounded exhaustive exploration of the real layers: clean code passes, a seeded bug is caught."""

from __future__ import annotations

import explorer as ex
import pytest

from stack.layers import gms_coord

BOUNDS = ex.Bounds(casts=1, crashes=1, joins=0, drops=1, ticks=12, depth=80, max_states=400)


@pytest.mark.parametrize("scenario", sorted(ex.SCENARIOS))
@pytest.mark.timeout(120)
def test_every_explored_schedule_passes_the_checker(scenario):
    bounds = BOUNDS if scenario != "join" else ex.Bounds(**{**BOUNDS.__dict__, "joins": 1})
    r = ex.explore(bounds, scenario=scenario)
    assert r.violation is None, f"{r.violation}\npath: {r.path}"
    assert r.states == bounds.max_states and r.terminals > 0  # it really branched


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
    r = ex.explore(BOUNDS, scenario="origin-dies-after-partial-cast")
    assert r.violation is not None and r.path, "the seeded bug went unnoticed"
