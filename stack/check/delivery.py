"""Delivery properties of a trace: integrity (D1-D3), view coupling (V1, V3-V5, S1) and
order (O1 FIFO, O3/O5 total order; docs/guarantees.md).

Why: these say what a member may deliver, in which view, and in what order relative to the others,
which is what the application sees of the stack.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from cohort.stack.check.index import Index, Vid, Violation, first_diff, fmt_vid, prop, violation


@prop
def check_integrity(ix: Index) -> Iterator[Violation]:
    """D1: every delivered message was sent earlier by its claimed origin."""
    for step, p, _c, _vid, origin, m in ix.delivers:
        if not any(s[1] == origin and s[0] < step for s in ix.send_of.get(m, ())):
            yield violation(
                "D1", f"{p} delivered from {origin}, who never sent it", [p, origin], [m]
            )


@prop
def check_no_duplication(ix: Index) -> Iterator[Violation]:
    """D2: a member delivers each message at most once."""
    seen: set[tuple[str, bytes]] = set()
    for step, p, _c, _vid, _o, m in ix.delivers:
        if (p, m) in seen:
            yield violation("D2", f"{p} delivered the same message again at step {step}", [p], [m])
        seen.add((p, m))


@prop
def check_no_foreign(ix: Index) -> Iterator[Violation]:
    """D3: the origin of a delivered message is a member of the deliverer's view."""
    for _s, p, c, _vid, origin, m in ix.delivers:
        if c is not None and origin not in c.members:
            why = f"{p} delivered from {origin}, not a member of {fmt_vid(c.vid)}"
            yield violation("D3", why, [p, origin], [m])


@prop
def check_sending_view(ix: Index) -> Iterator[Violation]:
    """V1: messages are delivered in the view they were sent in."""
    for _s, p, c, vid, origin, m in ix.delivers:
        if c is None:
            continue
        sv = next((s[3] for s in ix.send_of.get(m, ()) if s[1] == origin), None)
        if vid != c.vid or (sv is not None and sv != vid):
            why = f"{p} delivered in {fmt_vid(c.vid)} a message stamped {fmt_vid(vid)}, sent in {fmt_vid(sv)}"
            yield violation("V1", why, [p, origin], [m])


@prop
def check_virtual_synchrony(ix: Index) -> Iterator[Violation]:
    """V3: members moving together to a primary view delivered the same set before moving."""
    for v, ws in ix.succ.items():
        for w, (_step, _members, movers) in ws.items():
            groups: dict[frozenset, list[str]] = {}
            for p in movers:
                groups.setdefault(frozenset(ix.dset(p, v)), []).append(p)
            if len(groups) > 1:
                union = frozenset().union(*groups)
                diff = union - frozenset.intersection(*groups)
                who = "; ".join(f"{','.join(ms)} miss {len(union - s)}" for s, ms in groups.items())
                why = (
                    f"members moving {fmt_vid(v)} -> {fmt_vid(w)} delivered different sets ({who})"
                )
                yield violation("V3", why, movers, sorted(diff))


@prop
def check_self_delivery(ix: Index) -> Iterator[Violation]:
    """V4: a sender delivers its own message before moving on to a primary view."""
    for step, p, _c, vid, m in ix.sends:
        moved = ix.pmove_step.get((p, vid))
        if moved is not None and moved > step and m not in ix.dset(p, vid):
            yield violation(
                "V4", f"{p} sent in {fmt_vid(vid)} and moved on without delivering it", [p], [m]
            )


@prop
def check_uniform_agreement(ix: Index) -> Iterator[Violation]:
    """V5: safe messages reach every member moving on to a primary view (and in order if total)."""
    safe_by_view: dict[Vid, dict[bytes, str]] = defaultdict(dict)
    safe_pv: dict[tuple[str, Vid], set[bytes]] = defaultdict(set)
    for _s, p, _c, vid, m in ix.safes:
        safe_by_view[vid].setdefault(m, p)
        safe_pv[(p, vid)].add(m)
    movers = {v: [p for *_, ms in ws.values() for p in ms] for v, ws in ix.succ.items()}
    for v, pays in safe_by_view.items():
        for m, p in pays.items():
            for q in movers.get(v, ()):
                if m not in ix.dset(q, v):
                    why = f"{p} marked safe in {fmt_vid(v)} but {q} moved on without it"
                    yield violation("V5", why, [p, q], [m])
    if not ix.trace.total:
        return
    for (p, v), safe in safe_pv.items():
        seq = ix.seq(p, v)
        n = max((i + 1 for i, m in enumerate(seq) if m in safe), default=0)
        for q in movers.get(v, ()):
            other = ix.seq(q, v)
            if other[:n] != seq[:n]:
                i = first_diff(seq[:n], other)
                why = f"safe prefix of {p} in {fmt_vid(v)} differs from {q} at position {i}"
                yield violation("V5", why, [p, q], [seq[i], *other[i : i + 1]])


@prop
def check_safe(ix: Index) -> Iterator[Violation]:
    """S1: a member marks a message safe only after delivering it in that view."""
    first: dict[tuple[str, bytes], tuple[int, Vid]] = {}
    for step, p, c, _vid, _o, m in ix.delivers:
        if c is not None:
            first.setdefault((p, m), (step, c.vid))
    for step, p, _c, vid, m in ix.safes:
        d = first.get((p, m))
        if d is None or d[0] > step or d[1] != vid:
            yield violation(
                "S1", f"{p} marked safe in {fmt_vid(vid)} before delivering it there", [p], [m]
            )


@prop
def check_fifo(ix: Index) -> Iterator[Violation]:
    """O1: per view and origin, deliveries follow send order without gaps."""
    lists: dict[tuple[str, Vid], list[bytes]] = defaultdict(list)
    pos: dict[bytes, tuple[str, Vid, int]] = {}
    for _s, p, _c, vid, m in ix.sends:
        if m not in pos:
            lists[(p, vid)].append(m)
            pos[m] = (p, vid, len(lists[(p, vid)]) - 1)
    state: dict[tuple, list] = {}  # (q, V, origin) -> [contiguous prefix length, set of indexes]
    for _s, q, c, _vid, origin, m in ix.delivers:
        sp = pos.get(m)
        if c is None or sp is None or sp[0] != origin or sp[1] != c.vid:
            continue
        st = state.setdefault((q, c.vid, origin), [0, set()])
        k = sp[2]
        if k > st[0] and k not in st[1]:
            why = f"{q} delivered {origin}'s messages out of order in {fmt_vid(c.vid)}"
            yield violation("O1", why, [q, origin], [lists[(origin, c.vid)][st[0]], m])
        st[1].add(k)
        while st[0] in st[1]:
            st[0] += 1


@prop
def check_total_order(ix: Index) -> Iterator[Violation]:
    """O3/O5: members moving on to primary views agree on the delivery order (total traces)."""
    if not ix.trace.total:
        return
    checked: dict[Vid, list[str]] = defaultdict(list)
    for v, ws in ix.succ.items():
        checked[v] += [p for *_, ms in ws.values() for p in ms]
    if ix.trace.liveness:
        for p in ix.trace.live:
            if ix.by_member.get(p):
                checked[ix.by_member[p][-1].vid].append(p)
    for v, members in checked.items():
        groups: dict[tuple, list[str]] = {}
        for p in dict.fromkeys(members):
            groups.setdefault(tuple(ix.seq(p, v)), []).append(p)
        longest = max(groups, key=len)
        for s, ms in groups.items():
            if s != longest[: len(s)]:
                i, q = first_diff(s, longest), groups[longest][0]
                why = f"delivery orders in {fmt_vid(v)} diverge at position {i}"
                yield violation("O3", why, [ms[0], q], [s[i], longest[i]])
        for w, (*_, movers) in ix.succ.get(v, {}).items():
            seqs = {tuple(ix.seq(p, v)): p for p in movers}
            if len(seqs) > 1:
                (a, p), (b, q) = list(seqs.items())[:2]
                i = first_diff(a, b)
                why = f"moved {fmt_vid(v)} -> {fmt_vid(w)} with sequences differing at position {i}"
                yield violation("O5", why, [p, q], a[i : i + 1] + b[i : i + 1])


#: this module's properties, in the order `cohort.stack.check.check` runs them
PROPERTIES = (
    check_integrity,
    check_no_duplication,
    check_no_foreign,
    check_sending_view,
    check_virtual_synchrony,
    check_self_delivery,
    check_uniform_agreement,
    check_safe,
    check_fifo,
    check_total_order,
)

__all__ = [
    "check_integrity",
    "check_no_duplication",
    "check_no_foreign",
    "check_sending_view",
    "check_virtual_synchrony",
    "check_self_delivery",
    "check_uniform_agreement",
    "check_safe",
    "check_fifo",
    "check_total_order",
]
