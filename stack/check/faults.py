"""Checker properties over the records a scenario generator adds: unicasts and the fault schedule.

Why apart from `cohort.stack.check`: these need facts an endpoint's recorder does not have (which unicasts
the application sent, which faults were injected and when), so they apply only to traces whose
generator wrote them (`cohort.stack.sim.run_scenario`; see the record kinds in `cohort.stack.check`). They are
listed in `PROPERTIES` like the others, so `cohort.stack.check.check()` runs them too.

- U1-U4 reliable unicast (pt2pt): integrity and sending view, no duplicate, gap-free FIFO per
  sender, receiver and view, and termination between live members of the final view.
- M9 no exclusion without a cause: a member leaves a primary view only by crashing, leaving or
  pausing, or after a member that may have run the change lost contact with it. Catches a
  coordinator adopting a suspicion it does not share (JGroups' VERIFY_SUSPECT off), and flush
  timeouts that evict healthy members.
- L3 prompt repair: in a calm stretch a cast reaches its whole view within the generator's
  declared bound, however many holes a burst left on a lossy network.

M9 and L3 need the SCHEDULE record (every fault recorded); the unicast checks need USEND/UDELIVER.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from cohort.stack.check.index import (
    INF,
    LEAVING,
    Index,
    Violation,
    final_view,
    fmt_vid,
    prop,
    violation,
)

# --- reliable unicast ---------------------------------------------------------------------------


@prop
def check_unicast(ix: Index) -> Iterator[Violation]:
    """U1-U4: a unicast is delivered only by its destination, in the view it was sent in, once,
    in send order without gaps per sender, receiver and view; and, when liveness applies, if sent
    between live members in the final view."""
    sent = {t[4]: t for t in ix.usends}
    order: dict[tuple, list[bytes]] = defaultdict(list)  # (origin, dest, vid) -> payloads
    for _s, p, vid, dest, m, _t in ix.usends:
        order[(p, dest, vid)].append(m)
    got: dict[tuple, int] = defaultdict(int)
    seen: set[tuple[str, bytes]] = set()
    for step, q, vid, origin, m in ix.udelivers:
        s = sent.get(m)
        if s is None or s[0] > step or (s[1], s[3], s[2]) != (origin, q, vid):
            why = f"{q} delivered in {fmt_vid(vid)} a unicast that {origin} did not send it there"
            yield violation("U1", why, [q, origin], [m])
        elif (q, m) in seen:
            yield violation("U2", f"{q} delivered a unicast again at step {step}", [q], [m])
        else:
            seen.add((q, m))
            key = (origin, q, vid)
            want, got[key] = order[key][got[key]], order[key].index(m) + 1
            if want != m:
                why = f"{q} skipped or reordered {origin}'s unicasts in {fmt_vid(vid)}"
                yield violation("U3", why, [q, origin], [want, m])
    final = final_view(ix)[0] if ix.trace.liveness and ix.usends else None
    live = set(ix.trace.live)
    for _s, p, vid, dest, m, _t in ix.usends if final is not None else ():
        if vid == final.vid and p in live and dest in live and (dest, m) not in seen:
            why = f"{p} sent a unicast in final view {fmt_vid(vid)}; {dest} never delivered it"
            yield violation("U4", why, [p, dest], [m])


# --- properties that need the fault schedule ----------------------------------------------------

#: seconds before a view's first install from which a fault may still explain its changes; and
#: after it, when a member installing it counts as late (its INSTALL was lost)
SLACK, LATE = 0.5, 0.1
#: a fault explains an exclusion only if it was on this recently (suspicion, flush, lease wait;
#: the real stack excludes within 0.8 s of the last fault in thousands of random scenarios)
RECENT = 1.5


@prop
def check_exclusion_cause(ix: Index) -> Iterator[Violation]:
    """M9: a member leaves a primary view only by crashing, leaving, or being paused, or after a
    member that may have run the change (ranked at or above the next view's proposer, whose
    suspicions a proposer adopts) lost contact with it: a link between them cut, or it paused.

    So no exclusion on the word of a member that may not decide it (a suspicion a coordinator
    adopts without checking it hears the accused itself, JGroups' VERIFY_SUSPECT)."""
    if ix.schedule is None:
        return
    spans = ix.intervals()

    def hit(key: tuple, lo: float, hi: float) -> bool:
        return any(a <= hi and b >= lo for a, b in spans.get(key, ()))

    leaving = {m: t for t, k, m, _d in reversed(ix.faults) if k == LEAVING}
    for v, ws in ix.succ.items():
        vv = ix.views.get(v)
        if vv is None or not vv.primary:
            continue
        for w, (step, members, _movers) in ws.items():
            ww, proposer = ix.views[w], w[1]
            if proposer not in vv.members:
                continue
            deciders = vv.members[: vv.members.index(proposer) + 1]
            lo, hi = max(vv.time - SLACK, ww.time - RECENT), ww.time
            for a in vv.members:
                insts = ix.by_member.get(a, [])
                mine = next((i for i in insts if i.vid == v), None)
                if a in members or mine is None or mine.time > vv.time + LATE:
                    continue  # (never got into v, or late: its INSTALL lost, it missed a flush)
                if any(mine.step < i.step < step for i in insts):
                    continue  # it had moved on from v already
                if min(ix.gone.get(a, INF), leaving.get(a, INF)) <= hi or hit(("pause", a), lo, hi):
                    continue
                keys = [
                    k
                    for q in deciders
                    if q != a
                    for k in (("pause", q), ("cut", a, q), ("cut", q, a))
                ]
                if not any(hit(k, lo, hi) for k in keys):
                    why = f"{a} excluded from {fmt_vid(v)} by {fmt_vid(w)} (proposer {proposer})"
                    why += ", though no member ranked up to the proposer lost contact with it"
                    yield violation("M9", why, [a, proposer])


#: a fault may disturb delivery until this long after it (suspicion timeout, then a flush); an
#: install until this long after it (the joiners' confirmation flush, the first lease)
AFTER_FAULT, AFTER_INSTALL = 1.0, 0.3


@prop
def check_prompt_repair(ix: Index) -> Iterator[Violation]:
    """L3: with a repair bound B in the SCHEDULE record, a cast sent at t in a calm stretch (no
    fault from t - AFTER_FAULT, no install from t - AFTER_INSTALL, to t + B) reaches every member
    of its view that had installed it by t + B: loss is repaired within a few NAK rounds, however
    many messages a burst lost (the pace of repair must not depend on how many holes there are)."""
    bound = ix.schedule[0] if ix.schedule else None
    if bound is None:
        return
    spans = [s for ss in ix.intervals().values() for s in ss]
    marks = sorted([(f[0] + AFTER_FAULT, f[0]) for f in ix.faults])
    marks += [(i.time + AFTER_INSTALL, i.time) for i in ix.installs]
    end = ix.trace.end_time or max((r.time for r in ix.trace.records), default=0.0)
    for _s, p, c, vid, m in ix.sends:
        t = ix.sent_at[m]
        lo, hi = t, t + bound
        if c is None or hi > end or any(a <= hi and b + AFTER_FAULT >= lo for a, b in spans):
            continue
        if any(until >= lo and at <= hi for until, at in marks):
            continue
        for q in c.members:
            i = next((i for i in ix.by_member.get(q, ()) if i.vid == vid), None)
            if i is not None and i.time <= t and ix.dlv_at.get((q, m), INF) > hi:
                why = (
                    f"{q} had not delivered {p}'s cast {bound}s after it was sent in {fmt_vid(vid)}"
                )
                yield violation("L3", f"{why} (nothing else was happening)", [p, q], [m])
                break


#: this module's properties, in the order `cohort.stack.check.check` runs them
PROPERTIES = (
    check_unicast,
    check_exclusion_cause,
    check_prompt_repair,
)

__all__ = ["check_unicast", "check_exclusion_cause", "check_prompt_repair"]
