"""Virtual-synchrony checker over `stack.trace.Trace`.

Why: the simulator runs the real layer code, so verifying these properties on every trace it emits
(hundreds of seeded runs per `make test`) is how we know the stack, not a model of it, is correct.
A violation names the property, the members and payloads involved, and the seed and replay command
that reproduce the run. Only the stdlib and `stack.trace` are imported, so the checker also works
offline on traces of real processes (`Trace.loads`).

Properties (ids as in shared/reliability.md (a), adapted to our primary-partition design):

- M1 self inclusion · M2 local monotonicity of vids · M3 send/deliver/safe only after an install
  (a crash or leave ends the incarnation until its next install)
- M4 view agreement (same vid => same members, order and primary flag)
- M5 primary component: relevant primary views (those with an effect: a delivery in them, a move
  from them into another primary view, or a live member's final view) form a chain, each reached
  from its predecessor by some member, keeping a majority of the predecessor's members
- M7 previous-view coherence: a view is entered from different views only if those are disjoint
- M8 no minority progress: no deliver/safe in a non-primary view, and no delivery in a view after
  a primary successor that excludes the deliverer was installed (stale zombie)
- D1 integrity · D2 no duplication · D3 no foreign origin
- V1 sending-view delivery · V3 virtual synchrony · V4 self delivery · V5 uniform agreement of safe
  messages (set form; with `trace.total` also the order form) · S1 safe implies delivered
- O1 gap-free FIFO per origin and view
- O3/O5 total order (only with `trace.total`): members that move on to a primary view (plus, when
  liveness applies, live members still in the view) deliver prefixes of one sequence; members that
  move on to the same view deliver identical sequences. Members that crash in a view or move to a
  non-primary view are not constrained here: the stack's total order is uniform only for safe
  messages, which V5 checks through the safe records.
- L2 membership precision, L1 termination in the final view (only with `trace.liveness`)
- In `stack.check_faults` (over generator records, below): U1-U4 reliable unicast; with a complete
  fault schedule, M9 every exclusion has a cause and L3 prompt repair

Generator records (from a scenario generator, `stack.sim.run_scenario`): SCHEDULE (a repair bound
in seconds, or None) says every fault is recorded: CRASH/PAUSE/RESUME, CUT (member = sender, data
(receiver,)), HEAL (all links work again), JOINING/LEAVING (told to join/leave). USEND (vid, dest,
payload) and UDELIVER (vid, origin, payload) record unicasts. Without them those checks are skipped.

API: each property is a public `check_<name>(trace) -> list[Violation]` (written as a generator
over a shared index, see `_property`); `check()` runs all of them, `report()` formats the result
with the seed and replay command, `assert_ok()` raises with that report.

Performance: one indexing pass plus per-property passes over dict/set indexes; linear in the trace
except sorting (~0.2 s for 50k records). At most `CAP` violations are reported per property.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

from stack.trace import (
    CRASH,
    CUT,
    DELIVER,
    HEAL,
    INSTALL,
    JOINING,
    LEAVE,
    LEAVING,
    PAUSE,
    RESUME,
    SAFE,
    SCHEDULE,
    SEND,
    UDELIVER,
    USEND,
    Trace,
)

#: maximum number of violations reported per property check
CAP = 5
INF = float("inf")

Vid = tuple


@dataclass
class Violation:
    """One broken property: id (e.g. "V3"), what went wrong, who and which payloads."""

    prop: str
    detail: str
    members: tuple[str, ...] = ()
    messages: tuple[bytes, ...] = ()
    seed: int | None = None
    replay: str = ""

    def describe(self) -> str:
        """The violation without the reproduction info (report() prints that once)."""
        s = f"[{self.prop}] {self.detail}"
        if self.members:
            s += f"; members={', '.join(self.members)}"
        if self.messages:
            s += f"; messages=[{', '.join(_short(m) for m in self.messages[:CAP])}]"
            if len(self.messages) > CAP:
                s += f" (+{len(self.messages) - CAP} more)"
        return s

    def __str__(self) -> str:
        return f"{self.describe()}; seed={self.seed}; replay: {self.replay or '-'}"


def _short(m: bytes, n: int = 40) -> str:
    r = repr(m)
    return r if len(r) <= n else r[: n - 3] + "..."


def _fv(v: Vid | None) -> str:
    return "None" if v is None else f"({v[0]},{v[1]})"


def _v(prop: str, detail: str, members=(), messages=()) -> Violation:
    return Violation(prop, detail, tuple(members), tuple(messages))


@dataclass(slots=True)
class _Inst:
    step: int
    member: str
    vid: Vid
    members: tuple[str, ...]
    primary: bool
    prev: Vid | None
    ref: tuple[str, ...] | None = None  # confirmed members (acceptors) of a primary view
    time: float = 0.0


class _Index:
    """Everything the properties need, built in one pass over the records.

    `cur` in the send/deliver/safe tuples is the sender's/deliverer's current install (or None).
    """

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        recs = trace.records
        if any(recs[i].step > recs[i + 1].step for i in range(len(recs) - 1)):
            recs = sorted(recs, key=lambda r: r.step)
        self.installs: list[_Inst] = []
        self.by_member: dict[str, list[_Inst]] = defaultdict(list)
        self.views: dict[Vid, _Inst] = {}  # first install of each vid
        self.arrivals: dict[Vid, dict[Vid, list[str]]] = defaultdict(dict)  # W -> prev -> members
        # V -> primary W -> [step of first install, members of W, members that moved V -> W]
        self.succ: dict[Vid, dict[Vid, list]] = defaultdict(dict)
        self.pmove_step: dict[tuple[str, Vid], int] = {}  # (p, V) -> step p moved V -> primary
        self.sends: list[tuple] = []  # (step, p, cur, vid, payload)
        self.delivers: list[tuple] = []  # (step, p, cur, vid, origin, payload)
        self.safes: list[tuple] = []  # (step, p, cur, vid, payload)
        self.send_of: dict[bytes, list[tuple]] = defaultdict(list)
        self.seqs: dict[tuple[str, Vid], list[bytes]] = defaultdict(list)
        self._sets: dict[tuple[str, Vid], set[bytes]] = {}
        cur: dict[str, _Inst | None] = {}
        self.left: dict[Vid, set[str]] = defaultdict(set)  # view -> members that left it gracefully
        self.gone: dict[str, float] = {}  # member -> time of its first crash or leave
        self.usends: list[tuple] = []  # (step, p, vid, dest, payload, time)
        self.udelivers: list[tuple] = []  # (step, q, vid, origin, payload)
        self.schedule: tuple | None = None  # the SCHEDULE record's data, if any
        self.faults: list[tuple] = []  # (time, kind, member, data) of pause/resume/cut/heal/...
        self.sent_at: dict[bytes, float] = {}
        self.dlv_at: dict[tuple[str, bytes], float] = {}  # (p, m) -> when p first delivered m
        for r in recs:
            p, k, d = r.member, r.kind, r.data
            if k == INSTALL:
                prev = None if d[3] is None else tuple(d[3])
                ref = tuple(d[4]) if len(d) > 4 and d[4] is not None else None
                i = _Inst(r.step, p, tuple(d[0]), tuple(d[1]), bool(d[2]), prev, ref, r.time)
                self.installs.append(i)
                self.by_member[p].append(i)
                self.views.setdefault(i.vid, i)
                cur[p] = i
                if prev is not None:
                    self.arrivals[i.vid].setdefault(prev, []).append(p)
                    if i.primary:
                        s = self.succ[prev].setdefault(i.vid, [r.step, i.members, []])
                        s[2].append(p)
                        self.pmove_step.setdefault((p, prev), r.step)
            elif k == SEND:
                t = (r.step, p, cur.get(p), tuple(d[0]), d[1])
                self.sends.append(t)
                self.send_of[d[1]].append(t)
                self.sent_at.setdefault(d[1], r.time)
            elif k == DELIVER:
                c = cur.get(p)
                self.delivers.append((r.step, p, c, tuple(d[0]), d[1], d[2]))
                self.dlv_at.setdefault((p, d[2]), r.time)
                if c is not None:
                    self.seqs[(p, c.vid)].append(d[2])
            elif k == SAFE:
                self.safes.append((r.step, p, cur.get(p), tuple(d[0]), d[1]))
            elif k in (CRASH, LEAVE):
                if k == CRASH:
                    self.faults.append((r.time, k, p, d))
                if k == LEAVE and cur.get(p) is not None:
                    self.left[cur[p].vid].add(p)
                cur[p] = None
                self.gone.setdefault(p, r.time)
            elif k == USEND:
                self.usends.append((r.step, p, tuple(d[0]), d[1], d[2], r.time))
            elif k == UDELIVER:  # (its vid is the generator's: unicasts are recorded late)
                self.udelivers.append((r.step, p, tuple(d[0]), d[1], d[2]))
            elif k == SCHEDULE:
                self.schedule = d
            elif k in (PAUSE, RESUME, CUT, HEAL, JOINING, LEAVING):
                self.faults.append((r.time, k, p, d))

    def dset(self, p: str, v: Vid) -> set[bytes]:
        """Payloads p delivered while its current view was v."""
        s = self._sets.get((p, v))
        if s is None:
            s = self._sets[(p, v)] = set(self.seqs.get((p, v), ()))
        return s

    def seq(self, p: str, v: Vid) -> list[bytes]:
        return self.seqs.get((p, v), [])

    def intervals(self) -> dict[tuple, list[tuple[float, float]]]:
        """("pause", m) / ("cut", src, dst) -> [(start, end)] of the recorded faults."""
        out: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        open_: dict[tuple, float] = {}
        for t, k, m, d in sorted(self.faults, key=lambda f: f[0]):
            if k in (PAUSE, CUT):
                open_.setdefault(("pause", m) if k == PAUSE else ("cut", m, d[0]), t)
            elif k == RESUME and ("pause", m) in open_:
                out[("pause", m)].append((open_.pop(("pause", m)), t))
            elif k == HEAL:
                for key in [x for x in open_ if x[0] == "cut"]:
                    out[key].append((open_.pop(key), t))
        for key, t0 in open_.items():
            out[key].append((t0, INF))
        return out


_Gen = Callable[["_Index"], Iterator[Violation]]
_Check = Callable[..., list[Violation]]
_ALL: list[_Check] = []


def _property(gen: _Gen) -> _Check:
    """Make `gen` (violations from an index) the public `check_<name>(trace) -> list[Violation]`.

    The result is capped at CAP and stamped with the trace's seed and replay command; `check()`
    passes one shared index to all properties, a lone call builds its own.
    """

    def run(trace: Trace, ix: _Index | None = None) -> list[Violation]:
        out = list(islice(gen(ix or _Index(trace)), CAP))
        for v in out:
            v.seed, v.replay = trace.seed, trace.replay
        return out

    run.__name__ = run.__qualname__ = gen.__name__
    run.__doc__ = gen.__doc__
    _ALL.append(run)
    return run


def _first_diff(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# --- membership ---------------------------------------------------------------------------------


@_property
def check_self_inclusion(ix: _Index) -> Iterator[Violation]:
    """M1: a member only installs views that contain it."""
    for i in ix.installs:
        if i.member not in i.members:
            yield _v("M1", f"{i.member} installed {_fv(i.vid)} without itself", [i.member])


@_property
def check_monotonicity(ix: _Index) -> Iterator[Violation]:
    """M2: each member's installed vids strictly increase."""
    for p, insts in ix.by_member.items():
        for a, b in zip(insts, insts[1:]):
            if not a.vid < b.vid:
                yield _v("M2", f"{p} installed {_fv(b.vid)} after {_fv(a.vid)}", [p])


@_property
def check_initial_view(ix: _Index) -> Iterator[Violation]:
    """M3: sends, deliveries and safe marks happen only inside an installed view."""
    for kind, recs in (("send", ix.sends), ("deliver", ix.delivers), ("safe", ix.safes)):
        for t in recs:
            if t[2] is None:
                yield _v("M3", f"{kind} by {t[1]} at step {t[0]} outside any view", [t[1]], [t[-1]])


@_property
def check_view_agreement(ix: _Index) -> Iterator[Violation]:
    """M4: one vid, one membership (same order) and one primary flag."""
    seen: set[Vid] = set()
    for i in ix.installs:
        f = ix.views[i.vid]
        if (i.members != f.members or i.primary != f.primary) and i.vid not in seen:
            seen.add(i.vid)
            got = f"{f.members}/{f.primary} vs {i.members}/{i.primary}"
            yield _v("M4", f"view {_fv(i.vid)} installed as {got}", [f.member, i.member])


@_property
def check_primary_component(ix: _Index) -> Iterator[Violation]:
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
            froms = ", ".join(_fv(v) for v in sorted(ix.arrivals.get(b, {})))
            why = f"view fork: no member moves {_fv(a)} -> {_fv(b)} (entered from [{froms}])"
            yield _v("M5", why, sorted(set(va.members) | set(vb.members)))
        else:
            # with recorded references (the acceptors of each primary view), the successor's
            # acceptors must be its own members and hold a majority of the predecessor's;
            # without them, fall back to whole memberships
            ra = va.ref if va.ref is not None else va.members
            rb = vb.ref if vb.ref is not None else vb.members
            if not set(rb) <= set(vb.members):
                yield _v("M5", f"{_fv(b)} counts non-members {sorted(set(rb) - set(vb.members))}")
            # a graceful leaver takes part in the flush that lets it go: it votes for that view
            elif 2 * len(set(ra) & (set(rb) | ix.left.get(a, set()))) <= len(ra):
                why = f"primary without majority: {_fv(b)} {rb} after {_fv(a)} {ra}"
                yield _v("M5", why, vb.members)


@_property
def check_prev_view(ix: _Index) -> Iterator[Violation]:
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
            why = f"{_fv(w)} entered from {_fv(a)} and {_fv(b)}, which share {m}"
            yield _v("M7", why, froms[a] + froms[b])


@_property
def check_minority_progress(ix: _Index) -> Iterator[Violation]:
    """M8: no delivery in a non-primary view, nor in a view the primary already left."""
    for kind, recs in (("delivered", ix.delivers), ("marked safe", ix.safes)):
        for t in recs:
            if t[2] is not None and not t[2].primary:
                why = f"{t[1]} {kind} in non-primary view {_fv(t[2].vid)}"
                yield _v("M8", why, [t[1]], [t[-1]])
    last: dict[tuple[str, Vid], tuple] = {}
    for t in ix.delivers:
        if t[2] is not None:
            last[(t[1], t[2].vid)] = t
    for (p, v), t in last.items():
        for w, (step, members, movers) in ix.succ.get(v, {}).items():
            if step < t[0] and p not in members:
                why = f"{p} delivered in stale view {_fv(v)} after the primary moved on to {_fv(w)}"
                yield _v("M8", f"{why} (by {movers[0]} at step {step})", [p, movers[0]], [t[5]])
                break


# --- integrity and view coupling ----------------------------------------------------------------


@_property
def check_integrity(ix: _Index) -> Iterator[Violation]:
    """D1: every delivered message was sent earlier by its claimed origin."""
    for step, p, _c, _vid, origin, m in ix.delivers:
        if not any(s[1] == origin and s[0] < step for s in ix.send_of.get(m, ())):
            yield _v("D1", f"{p} delivered from {origin}, who never sent it", [p, origin], [m])


@_property
def check_no_duplication(ix: _Index) -> Iterator[Violation]:
    """D2: a member delivers each message at most once."""
    seen: set[tuple[str, bytes]] = set()
    for step, p, _c, _vid, _o, m in ix.delivers:
        if (p, m) in seen:
            yield _v("D2", f"{p} delivered the same message again at step {step}", [p], [m])
        seen.add((p, m))


@_property
def check_no_foreign(ix: _Index) -> Iterator[Violation]:
    """D3: the origin of a delivered message is a member of the deliverer's view."""
    for _s, p, c, _vid, origin, m in ix.delivers:
        if c is not None and origin not in c.members:
            why = f"{p} delivered from {origin}, not a member of {_fv(c.vid)}"
            yield _v("D3", why, [p, origin], [m])


@_property
def check_sending_view(ix: _Index) -> Iterator[Violation]:
    """V1: messages are delivered in the view they were sent in."""
    for _s, p, c, vid, origin, m in ix.delivers:
        if c is None:
            continue
        sv = next((s[3] for s in ix.send_of.get(m, ()) if s[1] == origin), None)
        if vid != c.vid or (sv is not None and sv != vid):
            why = f"{p} delivered in {_fv(c.vid)} a message stamped {_fv(vid)}, sent in {_fv(sv)}"
            yield _v("V1", why, [p, origin], [m])


@_property
def check_virtual_synchrony(ix: _Index) -> Iterator[Violation]:
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
                why = f"members moving {_fv(v)} -> {_fv(w)} delivered different sets ({who})"
                yield _v("V3", why, movers, sorted(diff))


@_property
def check_self_delivery(ix: _Index) -> Iterator[Violation]:
    """V4: a sender delivers its own message before moving on to a primary view."""
    for step, p, _c, vid, m in ix.sends:
        moved = ix.pmove_step.get((p, vid))
        if moved is not None and moved > step and m not in ix.dset(p, vid):
            yield _v("V4", f"{p} sent in {_fv(vid)} and moved on without delivering it", [p], [m])


@_property
def check_uniform_agreement(ix: _Index) -> Iterator[Violation]:
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
                    why = f"{p} marked safe in {_fv(v)} but {q} moved on without it"
                    yield _v("V5", why, [p, q], [m])
    if not ix.trace.total:
        return
    for (p, v), safe in safe_pv.items():
        seq = ix.seq(p, v)
        n = max((i + 1 for i, m in enumerate(seq) if m in safe), default=0)
        for q in movers.get(v, ()):
            other = ix.seq(q, v)
            if other[:n] != seq[:n]:
                i = _first_diff(seq[:n], other)
                why = f"safe prefix of {p} in {_fv(v)} differs from {q} at position {i}"
                yield _v("V5", why, [p, q], [seq[i], *other[i : i + 1]])


@_property
def check_safe(ix: _Index) -> Iterator[Violation]:
    """S1: a member marks a message safe only after delivering it in that view."""
    first: dict[tuple[str, bytes], tuple[int, Vid]] = {}
    for step, p, c, _vid, _o, m in ix.delivers:
        if c is not None:
            first.setdefault((p, m), (step, c.vid))
    for step, p, _c, vid, m in ix.safes:
        d = first.get((p, m))
        if d is None or d[0] > step or d[1] != vid:
            yield _v("S1", f"{p} marked safe in {_fv(vid)} before delivering it there", [p], [m])


# --- ordering -----------------------------------------------------------------------------------


@_property
def check_fifo(ix: _Index) -> Iterator[Violation]:
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
            why = f"{q} delivered {origin}'s messages out of order in {_fv(c.vid)}"
            yield _v("O1", why, [q, origin], [lists[(origin, c.vid)][st[0]], m])
        st[1].add(k)
        while st[0] in st[1]:
            st[0] += 1


@_property
def check_total_order(ix: _Index) -> Iterator[Violation]:
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
                i, q = _first_diff(s, longest), groups[longest][0]
                why = f"delivery orders in {_fv(v)} diverge at position {i}"
                yield _v("O3", why, [ms[0], q], [s[i], longest[i]])
        for w, (*_, movers) in ix.succ.get(v, {}).items():
            seqs = {tuple(ix.seq(p, v)): p for p in movers}
            if len(seqs) > 1:
                (a, p), (b, q) = list(seqs.items())[:2]
                i = _first_diff(a, b)
                why = f"moved {_fv(v)} -> {_fv(w)} with sequences differing at position {i}"
                yield _v("O5", why, [p, q], a[i : i + 1] + b[i : i + 1])


# --- liveness -----------------------------------------------------------------------------------


def _final_view(ix: _Index) -> tuple[_Inst | None, list[Violation]]:
    out: list[Violation] = []
    lasts = {p: (ix.by_member.get(p) or [None])[-1] for p in ix.trace.live}
    for p, i in lasts.items():
        if i is None:
            out.append(_v("L2", f"live member {p} never installed a view", [p]))
    vids = {i.vid for i in lasts.values() if i is not None}
    if out or len(vids) != 1:
        if len(vids) > 1:
            desc = ", ".join(f"{p}:{_fv(i.vid)}" for p, i in lasts.items() if i)
            out.append(_v("L2", f"live members ended in different views ({desc})", list(lasts)))
        return None, out
    final = ix.views[vids.pop()]
    if not final.primary or set(final.members) != set(ix.trace.live):
        why = f"final view {_fv(final.vid)} {final.members} primary={final.primary}"
        out.append(_v("L2", f"{why} is not a primary view of exactly the live members", lasts))
    return final, out


@_property
def check_membership_precision(ix: _Index) -> Iterator[Violation]:
    """L2: after faults stop, the live members share one primary view of exactly themselves."""
    if ix.trace.liveness:
        yield from _final_view(ix)[1]


@_property
def check_termination(ix: _Index) -> Iterator[Violation]:
    """L1: every message a live member sent in the final view reached every live member."""
    if not ix.trace.liveness:
        return
    final = _final_view(ix)[0]
    if final is None:
        return
    live = ix.trace.live
    for _s, p, c, _vid, m in ix.sends:
        if p in live and c is not None and c.vid == final.vid:
            missing = [q for q in live if m not in ix.dset(q, final.vid)]
            if missing:
                why = f"{p} sent in final view {_fv(final.vid)}; not delivered by {missing}"
                yield _v("L1", why, [p, *missing], [m])


# --- public API ---------------------------------------------------------------------------------


def check(trace: Trace) -> list[Violation]:
    """Run every property on `trace` (one shared index); at most CAP violations per property."""
    ix = _Index(trace)
    return [v for run in _ALL for v in run(trace, ix)]


def report(trace: Trace, violations: list[Violation]) -> str:
    """Human-readable report: one line per violation, then how to reproduce the run."""
    if not violations:
        return f"trace ok ({len(trace.records)} records, seed={trace.seed})"
    props = sorted({v.prop for v in violations})
    head = f"{len(violations)} violation(s) of {', '.join(props)} in {len(trace.records)} records"
    lines = [head, *(f"  {v.describe()}" for v in violations), f"seed={trace.seed}"]
    lines.append(f"replay: {trace.replay or '(no replay command recorded)'}")
    return "\n".join(lines)


def assert_ok(trace: Trace) -> None:
    """Raise AssertionError carrying the report if any property is violated."""
    violations = check(trace)
    if violations:
        raise AssertionError(report(trace, violations))


# the properties over generator records (unicasts, the fault schedule) register themselves here
from stack import check_faults  # noqa: E402, F401
