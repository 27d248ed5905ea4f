"""Linearizability checker for client histories of replicated objects (docs/guarantees.md: what the real-process tests add).

Why in-repo: no linearizability checker exists on PyPI, and the real-process tests of replicated objects need
one to turn "the clients saw these results" into a verdict. The algorithm is Wing & Gong's search with Lowe's
memoization, as in Knossos and Porcupine, plus Porcupine's P-compositionality (a model may split the history
into independent parts, e.g. one per key).

Theory of operation
-------------------
Each op becomes a call entry and a return entry, sorted by time into one doubly linked list. The search walks
the list from the front. At a call entry it tries to apply the op to the current state; if the model accepts
the result, and the pair (set of linearized ops, new state) was never seen, the op is linearized: both its
entries are lifted out of the list and the walk restarts at the front. At a return entry, the op returning
there had to take effect before this instant but could not, so the search backtracks: it pops the last
linearized op, unlifts it and tries the next candidate after it. The memo cache (bitset of linearized ops,
state) prunes every configuration already shown to be a dead end, which is what makes the search practical;
it is also why model states must be hashable (and immutable: they are shared between branches).

Ties: op A precedes op B only if A.ret < B.call strictly. On equal times the call entry sorts first, so ops
touching at one instant count as concurrent; this errs towards "linearizable" rather than false alarms.

Unknown outcomes (Jepsen's INFO: a timeout, a crashed replica): ret=None means "returned at +infinity", and
the model is given the UNKNOWN sentinel as the result, meaning "do not check the output". Such an op may
take effect anywhere after its call, or never: the search succeeds as soon as only unknown-outcome ops are
left, which is exactly when its walk reaches the first return entry at +infinity. Ops with ok=False failed
definitely and had no effect; they are dropped before the search.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Protocol


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""Result passed to Model.step for an op whose outcome is unknown: any output is legal."""


@dataclass(frozen=True, slots=True)
class Op:
    """One client call. ret=None: outcome unknown (may or may not have taken effect). ok=False: definitely
    failed with no effect (dropped before checking). result is ignored when ret is None."""

    client: int | str
    call: float
    ret: float | None
    name: str
    args: tuple = ()
    result: Any = None
    ok: bool = True


class Model(Protocol):
    """Sequential specification. States must be hashable and never mutated (the memo cache keys on them).
    step(state, name, args, result) -> (is result a legal output of the op in state?, state after the op);
    result may be UNKNOWN. Optional: partition(ops) -> list[list[Op]] of independent sub-histories."""

    def init(self) -> Hashable: ...

    def step(self, state: Any, name: str, args: tuple, result: Any) -> tuple[bool, Hashable]: ...


@dataclass(frozen=True, slots=True)
class Result:
    """ok is True, False, or None when the budget ran out (inconclusive: test `r.ok is False`, never
    `not r.ok`, when expecting a violation)."""

    ok: bool | None
    ops_checked: int
    states_explored: int
    explanation: str = ""


class _Entry:
    __slots__ = ("i", "is_call", "match", "prev", "next")

    def __init__(self, i: int, is_call: bool) -> None:
        self.i, self.is_call = i, is_call
        self.match = self.prev = self.next = None


def _entry_list(ops: list[Op]) -> _Entry:
    """Sentinel head of the sorted call/return list; key (time, call-before-return) encodes the tie rule."""
    events = []
    for i, op in enumerate(ops):
        call, ret = _Entry(i, True), _Entry(i, False)
        call.match = ret
        events.append((op.call, 0, i, call))
        events.append((math.inf if op.ret is None else op.ret, 1, i, ret))
    events.sort(key=lambda e: e[:3])
    head = prev = _Entry(-1, False)
    for *_, e in events:
        prev.next, e.prev, prev = e, prev, e
    return head


def _lift(e: _Entry) -> None:
    e.prev.next, e.next.prev = e.next, e.prev  # a call always has its return after it
    m = e.match
    m.prev.next = m.next
    if m.next is not None:
        m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    m.prev.next = m
    if m.next is not None:
        m.next.prev = m
    e.prev.next = e.next.prev = e


class _Budget:
    def __init__(self, max_states: int, timeout: float | None) -> None:
        self.left, self.used = max_states, 0
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def spend(self) -> bool:
        """Count one new state; False (and nothing counted) once the state or time budget is exhausted."""
        if self.left <= 0:
            return False
        if self.deadline is not None and self.used % 4096 == 0 and time.monotonic() > self.deadline:
            self.left = 0
            return False
        self.left -= 1
        self.used += 1
        return True


def _search(ops: list[Op], model: Model, budget: _Budget) -> tuple[bool | None, list[int], int]:
    """WGL search on one partition. Returns (verdict, longest linearizable prefix, op stuck after it)."""
    head, bits, step = _entry_list(ops), [1 << i for i in range(len(ops))], model.step
    state, lin, calls, cache = model.init(), 0, [], set()
    best: list[int] = []
    best_len, stuck = -1, -1
    entry = head.next
    while head.next is not None:
        if entry.is_call:
            op = ops[entry.i]
            ok, new = step(state, op.name, op.args, UNKNOWN if op.ret is None else op.result)
            if ok:
                key = (lin | bits[entry.i], new)
                if key not in cache:
                    if not budget.spend():
                        return None, best, stuck
                    cache.add(key)
                    calls.append((entry, state))
                    state, lin = new, key[0]
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
            continue
        if ops[entry.i].ret is None:
            return True, [], -1  # only unknown-outcome ops remain; they may never take effect
        if len(calls) > best_len:
            best, best_len, stuck = [e.i for e, _ in calls], len(calls), entry.i
        if not calls:
            return False, best, stuck
        entry, state = calls.pop()
        lin ^= bits[entry.i]
        _unlift(entry)
        entry = entry.next
    return True, [], -1


def check(
    history: list[Op], model: Model, *, max_states: int = 5_000_000, timeout: float | None = None
) -> Result:
    """Is history linearizable w.r.t. model? max_states bounds the memo entries over all partitions and
    timeout (seconds) the wall time; running out of either yields Result(ok=None) instead of hanging."""
    for op in history:
        if not math.isfinite(op.call) or (op.ret is not None and op.ret < op.call):
            raise ValueError(f"op with bad times (call must be finite and <= ret): {op}")
    try:
        hash(model.init())
    except TypeError:
        raise TypeError(
            f"{type(model).__name__}.init() state must be hashable (memo cache)"
        ) from None
    index = {id(op): i for i, op in enumerate(history)}
    ops = [op for op in history if op.ok]
    parts = model.partition(ops) if hasattr(model, "partition") else [ops]
    budget, verdict, notes = _Budget(max_states, timeout), True, []
    for n, part in enumerate(parts):
        ok, prefix, stuck = _search(part, model, budget)
        where = f"partition {n + 1} of {len(parts)}" if len(parts) > 1 else "history"
        if ok is None:
            verdict = None
            notes.append(f"inconclusive: {where} exceeded the budget ({budget.used} states)")
            break
        if not ok:
            text = _explain(part, [index[id(op)] for op in part], model, prefix, stuck, where)
            return Result(False, len(ops), budget.used, text)
    return Result(verdict, len(ops), budget.used, "\n".join(notes))


def _fmt(op: Op, n: int) -> str:
    args = ", ".join(map(repr, op.args))
    ret, res = ("?", "?") if op.ret is None else (f"{op.ret:g}", repr(op.result))
    return f"#{n} client {op.client} [{op.call:g}, {ret}] {op.name}({args}) -> {res}"


def _explain(ops, ids, model, prefix, stuck, where, show=15) -> str:
    """The longest linearizable prefix (state after each op) and the op that could not follow it."""
    states, state = [], model.init()
    for i in prefix:
        state = model.step(state, ops[i].name, ops[i].args, ops[i].result)[1]
        states.append(state)
    lines = [f"not linearizable ({where}): at most {len(prefix)} of {len(ops)} ops linearize;"]
    lines.append("longest linearizable prefix (state after each op):")
    if len(prefix) > show:
        lines.append(f"  ... {len(prefix) - show} earlier ops")
    for i, s in list(zip(prefix, states))[-show:]:
        lines.append(f"  {_fmt(ops[i], ids[i])}   => {s!r}")
    s_op = ops[stuck]
    lines.append(
        f"then in state {state!r} no op can take effect, yet this one had to by t={s_op.ret:g}:"
    )
    lines.append(f"  {_fmt(s_op, ids[stuck])}")
    done = set(prefix)
    pending = [
        i for i, op in enumerate(ops) if i not in done and i != stuck and op.call <= s_op.ret
    ]
    if pending:
        lines.append("other ops pending then:")
    for i in pending[:show]:
        res = UNKNOWN if ops[i].ret is None else ops[i].result
        legal = model.step(state, ops[i].name, ops[i].args, res)[0]
        why = "legal here, but every continuation fails" if legal else "rejected here"
        lines.append(f"  {_fmt(ops[i], ids[i])}   ({why})")
    return "\n".join(lines)


def check_counter_bounds(history: list[Op], *, add: str = "add", read: str = "get") -> Result:
    """Jepsen's cheap counter check (R5), no search: every completed read must lie between the adds that
    certainly preceded it (acked, returned before the read's call) and those that possibly did (also acked
    or unknown adds invoked by the read's return). For the final read this is [sum of acked adds, sum of acked
    plus unknown adds] for non-negative adds and a counter starting at 0. No completed read: ok=None, as
    nothing was checked."""
    ops = [op for op in history if op.ok]
    acked = sorted((op for op in ops if op.name == add and op.ret is not None), key=lambda o: o.ret)
    begun = sorted((op for op in ops if op.name == add), key=lambda o: o.call)
    a_ret, a_call = [o.ret for o in acked], [o.call for o in begun]

    def sums(seq, f):
        return [0, *accumulate(f(o.args[0]) for o in seq)]

    a_all, a_neg, a_pos = (sums(acked, f) for f in (int, lambda n: min(n, 0), lambda n: max(n, 0)))
    b_neg, b_pos = sums(begun, lambda n: min(n, 0)), sums(begun, lambda n: max(n, 0))
    reads = [op for op in ops if op.name == read and op.ret is not None]
    for op in reads:
        d, p = bisect_left(a_ret, op.call), bisect_right(a_call, op.ret)
        lo, hi = a_all[d] + b_neg[p] - a_neg[d], a_all[d] + b_pos[p] - a_pos[d]
        if not (isinstance(op.result, int) and lo <= op.result <= hi):
            n = next(i for i, h in enumerate(history) if h is op)
            why = f"read {op.result!r} outside [{lo}, {hi}]: {_fmt(op, n)}"
            return Result(False, len(ops), 0, why)
    return Result(True if reads else None, len(ops), 0, "" if reads else f"no completed {read}()")
