"""Wire vocabulary of gms: message kinds, the view's wire form, header formatting.

Why apart: both roles of the membership protocol (`gms` for members, `gms_coord` for the
coordinator) speak it, and it has to parse untrusted input without raising.
"""

from __future__ import annotations

from typing import Any

from cohort.stack.view import View as ViewRec

START, REPORT, CUT, DONE, SUSPECT, LEAVE, FWD_JOIN, NACK = range(8)
OOB_JOIN, OOB_INSTALL, OOB_PROBE = "join", "install", "probe"
#: a member's answer to a join it cannot accept (a secure group's reply to an unauthenticated join)
OOB_REFUSED = "refused"


def view_to_wire(v: ViewRec) -> list:
    return [
        v.vid[0],
        v.vid[1],
        list(v.members),
        v.primary,
        list(v.last_primary),
        list(v.last_primary_vid),
        list(v.prev) if v.prev else None,
    ]


def view_from_wire(w: Any) -> ViewRec | None:
    try:
        lt, coord, members, primary, lp, lpv, prev = w
        members = tuple(members)
        if not (
            type(lt) is int
            and type(coord) is str
            and members
            and all(type(m) is str for m in members)
            and len(set(members)) == len(members)
            and type(primary) is bool
        ):
            return None
        return ViewRec(
            (lt, coord),
            members,
            primary,
            tuple(str(m) for m in lp),
            (int(lpv[0]), str(lpv[1])),
            (int(prev[0]), str(prev[1])) if prev else None,
        )
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return None


def every(now: float, period: float, tick: float) -> bool:
    """True on the first tick of each `period` (ticks come every `tick` seconds)."""
    return int(now / period) != int((now - tick) / period)


def fmt_header(h: Any) -> str:
    names = ["START", "REPORT", "CUT", "DONE", "SUSPECT", "LEAVE", "FWD_JOIN", "NACK"]
    return "-" if h is None else f"{names[h[0]] if 0 <= h[0] < 8 else '?'}{tuple(h[1:])}"
