"""`cohort status`'s DIVERGED marks (`cohort.replication.cli.status.diverged`): like with like."""

from __future__ import annotations

from cohort.replication.cli.status import diverged


def row(addr: str, recent: list, **check) -> dict:
    return {"addr": addr, "ready": True, "check": {"recent": recent, **check}}


def test_the_minority_at_the_same_position_is_marked() -> None:
    rows = [
        row("a", [[10, "x"], [20, "y"]]),
        row("b", [[10, "x"], [20, "y"]]),
        row("c", [[10, "x"], [20, "z"]]),
    ]
    assert diverged(rows) == {"c": "  DIVERGED at update 20"}


def test_replicas_at_different_positions_are_not_compared() -> None:
    """c has not checked 20 yet, a has checked 30 alone: each is judged where a majority checked."""
    rows = [
        row("a", [[10, "x"], [20, "y"], [30, "w"]]),
        row("b", [[10, "x"], [20, "y"]]),
        row("c", [[10, "x"]]),
    ]
    assert diverged(rows) == {}


def test_a_replica_that_agrees_at_a_later_check_is_no_longer_marked() -> None:
    rows = [
        row("a", [[10, "x"], [20, "y"]]),
        row("b", [[10, "x"], [20, "y"]]),
        row("c", [[10, "bad"], [20, "y"]], resyncs=1),
    ]
    assert diverged(rows) == {}


def test_no_majority_and_resynced_and_stopped_replicas_say_so() -> None:
    rows = [row("a", [[5, "p"]]), row("b", [[5, "q"]]), row("c", [[5, "r"]])]
    assert set(diverged(rows).values()) == {"  DIVERGED at update 5 (no majority agrees)"}
    resynced = {"position": 5, "donor": "b"}
    rows = [row("a", [[5, "p"]]), row("b", [[5, "p"]]), row("c", [[5, "r"]], diverged=resynced)]
    assert diverged(rows) == {"c": "  DIVERGED at update 5 (resynced from b since)"}
    rows = [row("a", [[5, "p"]]), row("b", [[5, "p"]]), row("c", [], stopped="c left")]
    assert diverged(rows) == {"c": "  DIVERGED: c left"}
    assert diverged([{"addr": "a", "error": "down"}, row("b", [[5, "p"]])]) == {}
