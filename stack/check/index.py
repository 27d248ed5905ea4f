"""The checker's shared index: one pass over a trace's records, the `Violation` record, and
`prop`, which turns a generator over the index into a public `check_<name>(trace)`.

Why a module of its own: every property module (`membership`, `delivery`, `liveness`, `faults`)
builds on these names, and `cohort.stack.check` lists the properties explicitly, so no property
module imports another or registers itself as a side effect.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

from cohort.stack.trace import (
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
            s += f"; messages=[{', '.join(short(m) for m in self.messages[:CAP])}]"
            if len(self.messages) > CAP:
                s += f" (+{len(self.messages) - CAP} more)"
        return s

    def __str__(self) -> str:
        return f"{self.describe()}; seed={self.seed}; replay: {self.replay or '-'}"


def short(m: bytes, n: int = 40) -> str:
    r = repr(m)
    return r if len(r) <= n else r[: n - 3] + "..."


def fmt_vid(v: Vid | None) -> str:
    return "None" if v is None else f"({v[0]},{v[1]})"


def violation(prop: str, detail: str, members=(), messages=()) -> Violation:
    return Violation(prop, detail, tuple(members), tuple(messages))


@dataclass(slots=True)
class Install:
    step: int
    member: str
    vid: Vid
    members: tuple[str, ...]
    primary: bool
    prev: Vid | None
    ref: tuple[str, ...] | None = None  # confirmed members (acceptors) of a primary view
    time: float = 0.0


class Index:
    """Everything the properties need, built in one pass over the records.

    `cur` in the send/deliver/safe tuples is the sender's/deliverer's current install (or None).
    """

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        recs = trace.records
        if any(recs[i].step > recs[i + 1].step for i in range(len(recs) - 1)):
            recs = sorted(recs, key=lambda r: r.step)
        self.installs: list[Install] = []
        self.by_member: dict[str, list[Install]] = defaultdict(list)
        self.views: dict[Vid, Install] = {}  # first install of each vid
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
        cur: dict[str, Install | None] = {}
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
                i = Install(r.step, p, tuple(d[0]), tuple(d[1]), bool(d[2]), prev, ref, r.time)
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


_Gen = Callable[["Index"], Iterator[Violation]]
Check = Callable[..., list[Violation]]


def prop(gen: _Gen) -> Check:
    """Make `gen` (violations from an index) the public `check_<name>(trace) -> list[Violation]`.

    The result is capped at CAP and stamped with the trace's seed and replay command; `check()`
    passes one shared index to all properties, a lone call builds its own.
    """

    def run(trace: Trace, ix: Index | None = None) -> list[Violation]:
        out = list(islice(gen(ix or Index(trace)), CAP))
        for v in out:
            v.seed, v.replay = trace.seed, trace.replay
        return out

    run.__name__ = run.__qualname__ = gen.__name__
    run.__doc__ = gen.__doc__
    return run


def first_diff(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def final_view(ix: Index) -> tuple[Install | None, list[Violation]]:
    out: list[Violation] = []
    lasts = {p: (ix.by_member.get(p) or [None])[-1] for p in ix.trace.live}
    for p, i in lasts.items():
        if i is None:
            out.append(violation("L2", f"live member {p} never installed a view", [p]))
    vids = {i.vid for i in lasts.values() if i is not None}
    if out or len(vids) != 1:
        if len(vids) > 1:
            desc = ", ".join(f"{p}:{fmt_vid(i.vid)}" for p, i in lasts.items() if i)
            out.append(
                violation("L2", f"live members ended in different views ({desc})", list(lasts))
            )
        return None, out
    final = ix.views[vids.pop()]
    if not final.primary or set(final.members) != set(ix.trace.live):
        why = f"final view {fmt_vid(final.vid)} {final.members} primary={final.primary}"
        out.append(
            violation("L2", f"{why} is not a primary view of exactly the live members", lasts)
        )
    return final, out
