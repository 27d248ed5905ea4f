"""Membership properties of a trace: M1-M5, M7, M8 (docs/guarantees.md).

Why: every survivor must install the same views in the same order, and only a primary component
(a majority chain) may make progress; these are the facts the rest of virtual synchrony builds on.
"""

from __future__ import annotations

from collections.abc import Iterator

from cohort.stack.check.index import Index, Vid, Violation, fmt_vid, prop, violation


@prop
def check_self_inclusion(ix: Index) -> Iterator[Violation]:
    """M1: a member only installs views that contain it."""
    for i in ix.installs:
        if i.member not in i.members:
            yield violation(
                "M1", f"{i.member} installed {fmt_vid(i.vid)} without itself", [i.member]
            )


@prop
def check_monotonicity(ix: Index) -> Iterator[Violation]:
    """M2: each member's installed vids strictly increase."""
    for p, insts in ix.by_member.items():
        for a, b in zip(insts, insts[1:]):
            if not a.vid < b.vid:
                yield violation("M2", f"{p} installed {fmt_vid(b.vid)} after {fmt_vid(a.vid)}", [p])


@prop
def check_initial_view(ix: Index) -> Iterator[Violation]:
    """M3: sends, deliveries and safe marks happen only inside an installed view."""
    for kind, recs in (("send", ix.sends), ("deliver", ix.delivers), ("safe", ix.safes)):
        for t in recs:
            if t[2] is None:
                yield violation(
                    "M3", f"{kind} by {t[1]} at step {t[0]} outside any view", [t[1]], [t[-1]]
                )


@prop
def check_view_agreement(ix: Index) -> Iterator[Violation]:
    """M4: one vid, one membership (same order) and one primary flag."""
    seen: set[Vid] = set()
    for i in ix.installs:
        f = ix.views[i.vid]
        if (i.members != f.members or i.primary != f.primary) and i.vid not in seen:
            seen.add(i.vid)
            got = f"{f.members}/{f.primary} vs {i.members}/{i.primary}"
            yield violation("M4", f"view {fmt_vid(i.vid)} installed as {got}", [f.member, i.member])


@prop
def check_primary_component(ix: Index) -> Iterator[Violation]:
    """M5: relevant primary views form a single majority-preserving chain (no split brain)."""
    # A primary view matters if it had an effect: someone delivered in it, someone moved on from
    # it into another primary view, or it is where a live member ends. A view installed only by
    # members cut off right away (no lease, so no delivery) and then gone non-primary is inert.
    live = set(ix.trace.live)
    rel: set[Vid] = {t[2].vid for t in ix.delivers if t[2] is not None and t[2].primary}
    for p, insts in ix.by_member.items():
        for n, i in enumerate(insts):
            if not i.primary:
                continue
            nxt = insts[n + 1] if n + 1 < len(insts) else None
            if (nxt is None and p in live) or (nxt is not None and nxt.primary):
                rel.add(i.vid)
    order = sorted(rel)
    for a, b in zip(order, order[1:]):
        va, vb = ix.views[a], ix.views[b]
        if a not in ix.arrivals.get(b, {}):
            froms = ", ".join(fmt_vid(v) for v in sorted(ix.arrivals.get(b, {})))
            why = (
                f"view fork: no member moves {fmt_vid(a)} -> {fmt_vid(b)} (entered from [{froms}])"
            )
            yield violation("M5", why, sorted(set(va.members) | set(vb.members)))
        else:
            # with recorded references (the acceptors of each primary view), the successor's
            # acceptors must be its own members and hold a majority of the predecessor's;
            # without them, fall back to whole memberships
            ra = va.ref if va.ref is not None else va.members
            rb = vb.ref if vb.ref is not None else vb.members
            if not set(rb) <= set(vb.members):
                yield violation(
                    "M5", f"{fmt_vid(b)} counts non-members {sorted(set(rb) - set(vb.members))}"
                )
            # a graceful leaver takes part in the flush that lets it go: it votes for that view
            elif 2 * len(set(ra) & (set(rb) | ix.left.get(a, set()))) <= len(ra):
                why = f"primary without majority: {fmt_vid(b)} {rb} after {fmt_vid(a)} {ra}"
                yield violation("M5", why, vb.members)


@prop
def check_prev_view(ix: Index) -> Iterator[Violation]:
    """M7: members entering one view from different views came from disjoint components."""
    for w, froms in ix.arrivals.items():
        owner: dict[str, Vid] = {}
        clash = None
        for v in froms if len(froms) > 1 else ():
            for m in ix.views[v].members if v in ix.views else ():
                if owner.setdefault(m, v) != v and clash is None:
                    clash = (owner[m], v, m)
        if clash:
            a, b, m = clash
            why = f"{fmt_vid(w)} entered from {fmt_vid(a)} and {fmt_vid(b)}, which share {m}"
            yield violation("M7", why, froms[a] + froms[b])


@prop
def check_minority_progress(ix: Index) -> Iterator[Violation]:
    """M8: no delivery in a non-primary view, nor in a view the primary already left."""
    for kind, recs in (("delivered", ix.delivers), ("marked safe", ix.safes)):
        for t in recs:
            if t[2] is not None and not t[2].primary:
                why = f"{t[1]} {kind} in non-primary view {fmt_vid(t[2].vid)}"
                yield violation("M8", why, [t[1]], [t[-1]])
    last: dict[tuple[str, Vid], tuple] = {}
    for t in ix.delivers:
        if t[2] is not None:
            last[(t[1], t[2].vid)] = t
    for (p, v), t in last.items():
        for w, (step, members, movers) in ix.succ.get(v, {}).items():
            if step < t[0] and p not in members:
                why = f"{p} delivered in stale view {fmt_vid(v)} after the primary moved on to {fmt_vid(w)}"
                yield violation(
                    "M8", f"{why} (by {movers[0]} at step {step})", [p, movers[0]], [t[5]]
                )
                break


#: this module's properties, in the order `cohort.stack.check.check` runs them
PROPERTIES = (
    check_self_inclusion,
    check_monotonicity,
    check_initial_view,
    check_view_agreement,
    check_primary_component,
    check_prev_view,
    check_minority_progress,
)

__all__ = [
    "check_self_inclusion",
    "check_monotonicity",
    "check_initial_view",
    "check_view_agreement",
    "check_primary_component",
    "check_prev_view",
    "check_minority_progress",
]
