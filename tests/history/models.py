"""Sequential specifications of the sample replicated objects, for lincheck.check.

Why separate from the checker: a model is the contract a replicated object must look like it meets when
its replicas are hidden behind one proxy. Each model says, for one op applied to one state, whether the
recorded result is legal and what the state becomes. States are immutable and hashable (ints, tuples,
frozensets of pairs) because the checker memoizes on them and shares them between search branches.

Conventions shared by all models:
- A result of UNKNOWN (outcome unknown) is always legal; the state still advances deterministically.
- An op that raised is recorded with ok=True and the exception class name as its result ("ValueError",
  "KeyError"): raising is an observed outcome, and these ops change nothing.
- An unknown method name raises ValueError: a history built wrongly should fail loudly, not "not linearize".
"""

from __future__ import annotations

from typing import Any

from .lincheck import UNKNOWN, Op


def _out(result: Any, expected: Any) -> bool:
    """Legal output? Bools only match bools: in Python 0 == False, and a transfer's False is not a balance."""
    if result is UNKNOWN:
        return True
    return result == expected and isinstance(result, bool) == isinstance(expected, bool)


def _no_such(model: object, name: str) -> ValueError:
    return ValueError(f"{type(model).__name__} has no method {name!r}")


class CounterModel:
    """add(n) -> the new value; get() -> the value. State: the int."""

    def __init__(self, initial: int = 0) -> None:
        self.initial = initial

    def init(self) -> int:
        return self.initial

    def step(self, state: int, name: str, args: tuple, result: Any) -> tuple[bool, int]:
        if name == "add":
            return _out(result, state + args[0]), state + args[0]
        if name == "get":
            return _out(result, state), state
        raise _no_such(self, name)


class RegisterModel:
    """read() -> value; write(v) -> None; cas(expected, new) -> bool (swapped iff value == expected)."""

    def __init__(self, initial: Any = None) -> None:
        self.initial = initial

    def init(self) -> Any:
        return self.initial

    def step(self, state: Any, name: str, args: tuple, result: Any) -> tuple[bool, Any]:
        if name == "read":
            return _out(result, state), state
        if name == "write":
            return _out(result, None), args[0]
        if name == "cas":
            hit = state == args[0]
            return _out(result, hit), args[1] if hit else state
        raise _no_such(self, name)


def _get(state: frozenset, key: Any, default: Any = None) -> Any:
    return next((v for k, v in state if k == key), default)


def _set(state: frozenset, key: Any, value: Any) -> frozenset:
    rest = frozenset(p for p in state if p[0] != key)
    return rest if value is None else rest | {(key, value)}


class KVModel:
    """Mirrors samples/kvstore.py: put(k, v) -> None; get(k) -> value or None if absent; delete(k) -> True
    iff a (non-None) value was there; cas(k, expected, new) -> bool, an absent key comparing equal to None.
    State: frozenset of (key, value) pairs, values hashable. A stored None is observably the same as absent
    (only the unordered, unmodelled size() query could tell), so it is kept as absent. Partitioned by key
    (P-compositionality): each key is an independent register, which keeps the search small."""

    def init(self) -> frozenset:
        return frozenset()

    def partition(self, ops: list[Op]) -> list[list[Op]]:
        by_key: dict[Any, list[Op]] = {}
        for op in ops:
            by_key.setdefault(op.args[0], []).append(op)
        return list(by_key.values())

    def step(self, state: frozenset, name: str, args: tuple, result: Any) -> tuple[bool, frozenset]:
        key, cur = args[0], _get(state, args[0])
        if name == "get":
            return _out(result, cur), state
        if name == "put":
            return _out(result, None), _set(state, key, args[1])
        if name == "delete":
            return _out(result, cur is not None), _set(state, key, None)
        if name == "cas":
            if cur != args[1]:
                return _out(result, False), state
            return _out(result, True), _set(state, key, args[2])
        raise _no_such(self, name)


class BankModel:
    """Mirrors samples/bank.py. State: frozenset of (account, balance); balances never go negative.
    - open(a, initial=0) -> initial; "KeyError" if a already exists.
    - deposit(a, n), withdraw(a, n) -> new balance; withdraw on overdraft -> "ValueError".
    - transfer(a, b, n) -> True, or False (nothing moves) if a's balance < n. Atomic: total() never sees
      half of it.
    - balance(a) -> balance, "KeyError" if missing; total() -> sum of balances.
    Validation in the sample's order: a missing account -> "KeyError", then n not an int >= 0 ->
    "ValueError"; transfer validates (a, n) before b. Not partitioned: transfer and total() span accounts."""

    def init(self) -> frozenset:
        return frozenset()

    def step(self, state: frozenset, name: str, args: tuple, result: Any) -> tuple[bool, frozenset]:
        accts = dict(state)
        if name == "total":
            return _out(result, sum(accts.values())), state
        if name == "balance":
            return _out(result, accts.get(args[0], "KeyError")), state
        if name == "open":
            if args[0] in accts:
                return _out(result, "KeyError"), state
            initial = args[1] if len(args) > 1 else 0
            return _out(result, initial), state | {(args[0], initial)}
        if name not in ("deposit", "withdraw", "transfer"):
            raise _no_such(self, name)
        src, n = args[0], args[-1]
        error = _invalid(accts, src, n)
        if error is None and name == "transfer" and args[1] not in accts:
            error = "KeyError"
        if error is None and name != "deposit" and accts[src] < n:
            if name == "transfer":
                return _out(result, False), state
            error = "ValueError"
        if error is not None:
            return _out(result, error), state
        accts[src] += n if name == "deposit" else -n
        if name == "transfer":
            accts[args[1]] += n
        return _out(result, True if name == "transfer" else accts[src]), frozenset(accts.items())


def _invalid(accts: dict, account: Any, n: Any) -> str | None:
    if account not in accts:
        return "KeyError"
    return None if isinstance(n, int) and n >= 0 else "ValueError"
