"""The status round's rule: which member sends the state to which, decided alike everywhere.

Why a pure function: every member of a primary view applies it to the same delivered statuses (in
total order) and must reach the same decision; kept apart from the engine's bookkeeping, the rule
is small enough to read against its argument (docs/replication.md, "State custody") and is what
the seeded bugs of the replica simulator edit.

A status is (held, seen, applied, ready): the last primary view the member was ready in (None:
no state), the last primary view it knows had a ready member, the updates its state applied, and
NOT_READY, READY or FORMING (a founder of a group still forming).
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_READY, READY, FORMING = 0, 1, 2

Status = tuple  # (held: tuple | None, seen: tuple | None, applied: int, ready: int)


@dataclass(frozen=True, slots=True)
class Decision:
    """`kind`: "serve" (a ready member sends its state), "form" (founders start fresh, the first
    sends to the others), "resume" (nobody was ready: `donor` resumes from its own state, the
    latest, held in view `latest`) or "unavailable" (no member holds the latest state)."""

    kind: str
    donor: str | None = None
    recipients: tuple[str, ...] = ()
    formers: tuple[str, ...] = ()
    latest: tuple | None = None


def resolve(members: tuple[str, ...], statuses: dict[str, Status]) -> Decision:
    """The youngest ready member (the last by rank: the coordinator, which clients call and which
    sequences, keeps serving) sends its state to every member that was not ready. When nobody
    was ready, the group resumes from the state of the last primary view known to have had a
    ready member: a member that held it there has every update acknowledged in it (a reply
    leaves only once its replica's status in the view is Safe, i.e. delivered at every member, so
    every member learns that the view had a ready member). Among its holders the one that applied
    most donates, ties to the oldest. Founders start fresh only when nobody holds or knows of any
    state. Otherwise nothing is invented."""
    ready = [m for m in members if statuses[m][3] == READY]
    if ready:
        rest = tuple(m for m in members if statuses[m][3] != READY)
        return Decision("serve", ready[-1], rest)
    known = any(s[0] is not None or s[1] is not None for s in statuses.values())
    formers = tuple(m for m in members if statuses[m][3] == FORMING)
    if not known and formers:
        rest = tuple(m for m in members if m not in formers)
        return Decision("form", formers[0], rest, formers)
    latest = max((s[1] for s in statuses.values() if s[1] is not None), default=None)
    holders = [m for m in members if latest is not None and statuses[m][0] == latest]
    if not holders:
        return Decision("unavailable", latest=latest)
    donor = max(holders, key=lambda m: (statuses[m][2], -members.index(m)))
    return Decision("resume", donor, tuple(m for m in members if m != donor), latest=latest)
