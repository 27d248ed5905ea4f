"""The linearizability checker itself: it must accept every linearizable history and catch broken ones.

Why this matters: a checker that says "ok" too easily makes every real-process test of a replicated object
vacuous. So besides hand-written anomalies, hypothesis builds histories that are linearizable by construction
(each op takes effect at a known instant inside [call, ret]) and then breaks one result provably.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .lincheck import Op, check, check_counter_bounds
from .models import BankModel, CounterModel, KVModel, RegisterModel

NA = object()  # "no result recorded" marker for the helper below


def o(client, call, ret, name, *args, res=NA, ok=True) -> Op:
    return Op(client, call, ret, name, args, None if res is NA else res, ok)


def assert_ok(history, model):
    r = check(history, model)
    assert r.ok is True, r.explanation
    return r


def assert_bad(history, model):
    r = check(history, model)
    assert r.ok is False, f"accepted a non-linearizable history: {r}"
    return r


# ---------------------------------------------------------------- counter


def test_counter_sequential_and_concurrent_adds_in_the_only_possible_order():
    assert_ok(
        [o(1, 0, 1, "add", 1, res=1), o(1, 2, 3, "add", 2, res=3), o(2, 4, 5, "get", res=3)],
        CounterModel(),
    )
    # overlapping adds whose results fix the order: add(2) first, then add(1)
    h = [o(1, 0, 10, "add", 1, res=3), o(2, 1, 9, "add", 2, res=2), o(3, 11, 12, "get", res=3)]
    assert_ok(h, CounterModel())
    # each add claims to have gone first: no order explains both
    assert_bad([o(1, 0, 10, "add", 1, res=1), o(2, 1, 9, "add", 2, res=2)], CounterModel())


def test_counter_stale_read_after_completed_add_is_caught_and_explained():
    h = [o(1, 0, 1, "add", 1, res=1), o(2, 2, 3, "get", res=0)]
    r = assert_bad(h, CounterModel())
    assert "#0 client 1 [0, 1] add(1) -> 1   => 1" in r.explanation
    assert "#1 client 2 [2, 3] get() -> 0" in r.explanation
    assert "in state 1 no op can take effect" in r.explanation


def test_counter_unknown_add_counted_as_applied_or_not_as_needed():
    unknown = o(1, 0, None, "add", 5)
    assert_ok([unknown, o(2, 10, 11, "get", res=5)], CounterModel())  # must have been applied
    assert_ok([unknown, o(2, 10, 11, "get", res=0)], CounterModel())  # must not have been applied
    # applied between two reads: fine; "un-applied" between them: impossible
    assert_ok([unknown, o(2, 10, 11, "get", res=0), o(2, 12, 13, "get", res=5)], CounterModel())
    assert_bad([unknown, o(2, 10, 11, "get", res=5), o(2, 12, 13, "get", res=0)], CounterModel())
    # an unknown op may not take effect before it was invoked
    assert_bad([o(2, 0, 1, "get", res=5), o(1, 2, None, "add", 5)], CounterModel())


def test_failed_ops_are_dropped():
    failed = o(1, 0, 1, "add", 5, res="timeout", ok=False)
    r = assert_ok([failed, o(2, 2, 3, "get", res=0)], CounterModel())
    assert r.ops_checked == 1
    assert_bad([failed, o(2, 2, 3, "get", res=5)], CounterModel())


def test_counter_bounds_cheap_check():
    acked, unknown = o(1, 0, 1, "add", 2, res=2), o(2, 0, None, "add", 3)
    for final, ok in [(2, True), (5, True), (1, False), (6, False)]:
        r = check_counter_bounds([acked, unknown, o(3, 5, 6, "get", res=final)])
        assert r.ok is ok, (final, r)
    assert (
        "outside [2, 5]"
        in check_counter_bounds([acked, unknown, o(3, 5, 6, "get", res=9)]).explanation
    )
    # a read concurrent with an acked add may or may not see it
    assert check_counter_bounds([o(1, 0, 4, "add", 2, res=2), o(2, 1, 2, "get", res=0)]).ok is True
    assert check_counter_bounds([acked]).ok is None  # no read: nothing was checked


# ---------------------------------------------------------------- register


def test_register_classic_anomaly_read_of_old_value_after_newer_write_completed():
    h = [o(1, 0, 1, "write", 1), o(1, 2, 3, "write", 2), o(2, 4, 5, "read", res=1)]
    assert_bad(h, RegisterModel())
    assert_ok([*h[:2], o(2, 4, 5, "read", res=2)], RegisterModel())


def test_register_read_concurrent_with_write_sees_either_but_never_new_then_old():
    w = o(1, 0, 10, "write", 1)
    assert_ok([w, o(2, 1, 2, "read", res=None)], RegisterModel())
    assert_ok([w, o(2, 1, 2, "read", res=1)], RegisterModel())
    assert_bad([w, o(2, 1, 2, "read", res=1), o(2, 3, 4, "read", res=None)], RegisterModel())


def test_register_cas_only_one_of_two_concurrent_winners():
    assert_ok(
        [o(1, 0, 5, "cas", None, 1, res=True), o(2, 1, 6, "cas", None, 2, res=False)],
        RegisterModel(),
    )
    assert_bad(
        [o(1, 0, 5, "cas", None, 1, res=True), o(2, 1, 6, "cas", None, 2, res=True)],
        RegisterModel(),
    )


def test_tie_at_one_instant_counts_as_concurrent():
    w = o(1, 0, 1, "write", 1)
    assert_ok([w, o(2, 1, 2, "read", res=None)], RegisterModel())  # read.call == write.ret
    assert_bad([w, o(2, 1.001, 2, "read", res=None)], RegisterModel())


# ---------------------------------------------------------------- kv and bank


def test_kv_partitions_by_key_and_names_the_bad_one():
    h = [
        o(1, 0, 1, "put", "a", 1),
        o(2, 0, 1, "put", "b", 7),
        o(1, 2, 3, "cas", "a", 1, 2, res=True),
        o(2, 2, 3, "delete", "b", res=True),
        o(2, 4, 5, "delete", "b", res=False),
        o(3, 4, 5, "get", "a", res=2),
        o(3, 4, 5, "get", "b", res=None),
        o(3, 4, 5, "cas", "c", None, 3, res=True),
    ]
    assert_ok(h, KVModel())
    r = assert_bad([*h, o(3, 6, 7, "get", "b", res=7)], KVModel())
    assert "partition 2 of 3" in r.explanation and "get('b') -> 7" in r.explanation


def test_bank_overdraft_concurrent_withdrawals_and_atomic_transfer():
    bank = BankModel()
    opened = [o(1, 0, 1, "open", "x", res=0), o(1, 0, 1, "open", "y", res=0)]
    opened.append(o(1, 2, 3, "deposit", "x", 100, res=100))
    one_wins = [
        o(1, 4, 9, "withdraw", "x", 60, res=40),
        o(2, 5, 8, "withdraw", "x", 60, res="ValueError"),
    ]
    assert_ok([*opened, *one_wins, o(3, 10, 11, "total", res=40)], bank)
    both_win = [o(1, 4, 9, "withdraw", "x", 60, res=40), o(2, 5, 8, "withdraw", "x", 60, res=-20)]
    assert_bad([*opened, *both_win], bank)
    assert_bad([*opened, o(2, 4, 5, "withdraw", "x", 60, res="ValueError")], bank)  # had enough
    # total() concurrent with a transfer sees all or nothing of it, never half
    xfer = o(1, 4, 9, "transfer", "x", "y", 30, res=True)
    assert_ok(
        [*opened, xfer, o(2, 5, 6, "total", res=100), o(2, 5, 6, "balance", "y", res=30)], bank
    )
    assert_bad([*opened, xfer, o(2, 5, 6, "total", res=70)], bank)
    assert_ok([*opened, o(1, 4, 5, "transfer", "x", "y", 101, res=False)], bank)  # nothing moves
    assert_bad([*opened, o(1, 4, 5, "transfer", "x", "y", 100, res=False)], bank)
    assert_bad(
        [*opened, o(1, 4, 5, "transfer", "x", "y", 0, res=1)], bank
    )  # 1 == True, yet no bool
    # validation order as in samples/bank.py: account first, then amount, then the second account
    assert_ok([o(1, 0, 1, "open", "x", res=0), o(1, 2, 3, "open", "x", res="KeyError")], bank)
    assert_ok([o(1, 0, 1, "deposit", "z", -5, res="KeyError")], bank)
    assert_ok([*opened, o(1, 4, 5, "transfer", "x", "z", -1, res="ValueError")], bank)
    assert_ok([*opened, o(1, 4, 5, "transfer", "x", "z", 1, res="KeyError")], bank)
    assert_ok([o(1, 0, 1, "open", "z", 7, res=7), o(1, 2, 3, "total", res=7)], bank)


# ---------------------------------------------------------------- checker mechanics


def test_budget_exhaustion_is_inconclusive_not_a_hang():
    # many concurrent unknown writes of distinct values, then an impossible read: huge search space
    h = [o(i, 0, None, "write", i) for i in range(30)] + [o(99, 1, 2, "read", res=-1)]
    r = check(h, RegisterModel(), max_states=200)
    assert r.ok is None and r.states_explored == 200 and "budget" in r.explanation


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="bad times"):
        check([o(1, 2, 1, "get", res=0)], CounterModel())
    with pytest.raises(ValueError, match="no method 'inc'"):
        check([o(1, 0, 1, "inc", res=0)], CounterModel())
    with pytest.raises(TypeError, match="hashable"):
        check([], RegisterModel(initial=[]))


# ---------------------------------------------------------------- hypothesis: linearizable by construction


class Ref:
    """Plain sequential objects (the behaviour the replicated samples should have) that produce results."""

    class counter:
        def __init__(self):
            self.v = 0

        def add(self, n):
            self.v += n
            return self.v

        def get(self):
            return self.v

    class register:
        def __init__(self):
            self.v = None

        def read(self):
            return self.v

        def write(self, v):
            self.v = v

        def cas(self, expected, new):
            hit = self.v == expected
            self.v = new if hit else self.v
            return hit

    class kv:
        def __init__(self):
            self.d = {}

        def put(self, k, v):
            self.d[k] = v

        def get(self, k):
            return self.d.get(k)

        def delete(self, k):
            return self.d.pop(k, None) is not None

        def cas(self, k, expected, new):
            hit = self.d.get(k) == expected
            if hit:
                self.d[k] = new
            return hit

    class bank:  # samples/bank.py without the replication decorators
        def __init__(self):
            self.accounts = {}

        def open(self, account, initial=0):
            if account in self.accounts:
                raise KeyError(account)
            self.accounts[account] = initial
            return initial

        def deposit(self, account, amount):
            self._check(account, amount)
            self.accounts[account] += amount
            return self.accounts[account]

        def withdraw(self, account, amount):
            self._check(account, amount)
            if self.accounts[account] < amount:
                raise ValueError("overdraft")
            self.accounts[account] -= amount
            return self.accounts[account]

        def transfer(self, a, b, amount):
            self._check(a, amount)
            self._check(b, amount)
            if self.accounts[a] < amount:
                return False
            self.accounts[a] -= amount
            self.accounts[b] += amount
            return True

        def balance(self, account):
            return self.accounts[account]

        def total(self):
            return sum(self.accounts.values())

        def _check(self, account, amount):
            if account not in self.accounts:
                raise KeyError(account)
            if not isinstance(amount, int) or amount < 0:
                raise ValueError(amount)


V, K, A = st.integers(0, 4), st.sampled_from("ab"), st.sampled_from("xy")
N = st.integers(-1, 40)
OPS = {
    "counter": st.one_of(
        st.tuples(st.just("add"), st.tuples(st.integers(1, 5))), st.just(("get", ()))
    ),
    "register": st.one_of(
        st.just(("read", ())),
        st.tuples(st.just("write"), st.tuples(V)),
        st.tuples(st.just("cas"), st.tuples(st.none() | V, V)),
    ),
    "kv": st.one_of(
        st.tuples(st.sampled_from(["get", "delete"]), st.tuples(K)),
        st.tuples(st.just("put"), st.tuples(K, V)),
        st.tuples(st.just("cas"), st.tuples(K, st.none() | V, V)),
    ),
    "bank": st.one_of(
        st.tuples(st.sampled_from(["open", "balance"]), st.tuples(A)),
        st.tuples(st.sampled_from(["deposit", "withdraw"]), st.tuples(A, N)),
        st.tuples(st.just("transfer"), st.tuples(A, A, N)),
        st.just(("total", ())),
    ),
}
MODELS = {"counter": CounterModel, "register": RegisterModel, "kv": KVModel, "bank": BankModel}


@st.composite
def executions(draw):
    """A sequential run with op i taking effect at t=10*i, wrapped in a random [call, ret] around that point.
    Fates: 0 unknown outcome but applied, 1 unknown and never applied, 2 failed (not applied), else normal."""
    kind = draw(st.sampled_from(sorted(OPS)))
    obj, history = getattr(Ref, kind)(), []
    for i, (name, args) in enumerate(draw(st.lists(OPS[kind], min_size=1, max_size=24))):
        fate, point = draw(st.integers(0, 19)), 10.0 * i
        call, ret = point - draw(st.integers(0, 25)), point + draw(st.integers(0, 25))
        result = None
        if fate not in (1, 2):
            try:
                result = getattr(obj, name)(*args)
            except (KeyError, ValueError) as e:
                result = type(e).__name__
        history.append(Op(i % 3, call, None if fate < 2 else ret, name, args, result, fate != 2))
    return kind, history


def impossible(kind: str, history: list[Op]):
    """A result no op of this model can ever return in this history: counters stay within [0, sum of adds];
    register/kv values are drawn from 0..4 and write/put/delete/cas never return 99; bank results are
    non-negative balances, None or an exception name."""
    if kind == "counter":
        return sum(op.args[0] for op in history if op.name == "add") + 1
    return -1 if kind == "bank" else 99


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(executions(), st.data())
def test_generated_histories_pass_and_one_impossible_result_fails(run, data):
    kind, history = run
    r = check(history, MODELS[kind]())
    assert r.ok is True, r.explanation
    known = [i for i, op in enumerate(history) if op.ok and op.ret is not None]
    if known:
        i = data.draw(st.sampled_from(known))
        history[i] = replace(history[i], result=impossible(kind, history))
        r = check(history, MODELS[kind]())
        assert r.ok is False, f"mutated #{i} of {kind} not caught: {r}"
        assert r.explanation.startswith("not linearizable")


# ---------------------------------------------------------------- performance


def counter_history(n_ops: int, clients: int, seed: int) -> list[Op]:
    """Clients each run ops back to back; each op takes effect at a random instant inside its interval, and
    results come from applying the ops in order of those instants. About 1 % unknown outcomes."""
    rng, events = random.Random(seed), []
    clock = [0.0] * clients
    for i in range(n_ops):
        c = i % clients
        call = clock[c] + rng.uniform(0, 0.5)
        ret = call + rng.uniform(0.5, 3.0)
        clock[c] = ret
        events.append((rng.uniform(call, ret), c, call, ret, rng.random()))
    value, history = 0, []
    for _point, c, call, ret, u in sorted(events):
        if u < 0.5:
            n = 1 + int(u * 10)
            value += n
            history.append(Op(c, call, None if u < 0.01 else ret, "add", (n,), value))
        else:
            history.append(Op(c, call, ret, "get", (), value))
    return history


def test_2000_op_three_client_counter_history_checks_quickly():
    history = counter_history(2000, 3, seed=7)
    assert sum(op.ret is None for op in history) > 0
    t = time.perf_counter()
    r = check(history, CounterModel())
    took = time.perf_counter() - t
    assert r.ok is True and r.ops_checked == 2000, r.explanation
    assert took < 2.0, f"{took:.2f}s for 2000 ops ({r.states_explored} states)"
    assert check_counter_bounds(history).ok is True
    # one read made stale: it returns less than an add that completed before it was invoked
    i = next(i for i, op in enumerate(history) if op.name == "get" and op.call > 500)
    seen = max(
        a.result
        for a in history
        if a.name == "add" and a.ret is not None and a.ret < history[i].call
    )
    history[i] = replace(history[i], result=seen - 1)
    t = time.perf_counter()
    r = check(history, CounterModel())
    assert r.ok is False and time.perf_counter() - t < 2.0
    assert f"#{i} " in r.explanation
