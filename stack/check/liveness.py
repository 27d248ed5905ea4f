"""Liveness properties of a trace: L2 membership precision and L1 termination in the final view
(only when the trace declares `liveness`; docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Iterator

from cohort.stack.check.index import Index, Violation, final_view, fmt_vid, prop, violation


@prop
def check_membership_precision(ix: Index) -> Iterator[Violation]:
    """L2: after faults stop, the live members share one primary view of exactly themselves."""
    if ix.trace.liveness:
        yield from final_view(ix)[1]


@prop
def check_termination(ix: Index) -> Iterator[Violation]:
    """L1: every message a live member sent in the final view reached every live member."""
    if not ix.trace.liveness:
        return
    final = final_view(ix)[0]
    if final is None:
        return
    live = ix.trace.live
    for _s, p, c, _vid, m in ix.sends:
        if p in live and c is not None and c.vid == final.vid:
            missing = [q for q in live if m not in ix.dset(q, final.vid)]
            if missing:
                why = f"{p} sent in final view {fmt_vid(final.vid)}; not delivered by {missing}"
                yield violation("L1", why, [p, *missing], [m])


#: this module's properties, in the order `cohort.stack.check.check` runs them
PROPERTIES = (
    check_membership_precision,
    check_termination,
)

__all__ = ["check_membership_precision", "check_termination"]
