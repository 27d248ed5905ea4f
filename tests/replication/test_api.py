"""cohort.replication.api: what @replicated / @query accept and reject, and deterministic now()/random()."""

from __future__ import annotations

import threading

import pytest
from cohort.replication.api import (
    ClassInfo,
    ReplicationError,
    class_info,
    now,
    query,
    random,
    replicated,
    run_in_context,
)

from cohort import replication

# --- @replicated: which methods become what ---------------------------------------------------


def test_public_methods_become_updates_and_queries_are_tagged() -> None:
    @replicated
    class Account:
        limit = 10  # a plain class attribute: not a method
        tags: list = []

        def __init__(self) -> None:
            self.balance = 0

        def deposit(self, n: int) -> int:
            self.balance += n
            return self.balance

        @query
        def read(self) -> int:
            return self.balance

        @query(local=True)
        def peek(self) -> int:
            return self.balance

        @query()
        def audited(self) -> int:
            return self.balance

        def _helper(self) -> None:
            pass

        def __len__(self) -> int:
            return 0

    info = class_info(Account)
    assert isinstance(info, ClassInfo)
    assert info.cls is Account and info.style == "active"
    assert info.describe() == {
        "deposit": "update",
        "read": "query",
        "peek": "local",
        "audited": "query",
    }
    # the class stays a plain class, usable without a group
    a = Account()
    assert a.deposit(3) == 3 and a.read() == 3 and a.peek() == 3


def test_state_hooks_view_hook_and_descriptors_are_not_remote_methods() -> None:
    @replicated(style="passive")
    class Reg:
        def __init__(self) -> None:
            self.v = 0

        def set(self, v: int) -> None:
            self.v = v

        def get_state(self) -> dict:
            return {"v": self.v}

        def set_state(self, s: dict) -> None:
            self.v = s["v"]

        def get_update(self) -> int:
            return self.v

        def set_update(self, u: int) -> None:
            self.v = u

        def on_view_change(self, view) -> None:
            pass

        @staticmethod
        def helper() -> int:
            return 1

        @classmethod
        def make(cls) -> Reg:
            return cls()

        @property
        def double(self) -> int:
            return 2 * self.v

    info = class_info(Reg)
    assert info.style == "passive"
    assert info.describe() == {"set": "update"}


def test_a_mixin_s_public_methods_are_exposed_only_when_named() -> None:
    class Base:  # a plain helper class: its public API is not a remote one unless named
        def ping(self) -> str:
            return "pong"

        @query
        def who(self) -> str:
            return "base"

        def helper(self) -> None:
            pass

    @replicated
    class Child(Base):
        def extra(self) -> None:
            pass

    assert class_info(Child).describe() == {"extra": "update"}

    @replicated(expose=("ping", "who"))
    class Named(Base):
        def extra(self) -> None:
            pass

    assert class_info(Named).describe() == {"ping": "update", "who": "query", "extra": "update"}
    with pytest.raises(ReplicationError, match="expose='nope' names no public method"):

        @replicated(expose=("nope",))
        class Wrong(Base):
            pass


def test_methods_of_a_replicated_base_are_inherited() -> None:
    @replicated
    class Base:
        def ping(self) -> str:
            return "pong"

        @query
        def who(self) -> str:
            return "base"

    @replicated
    class Child(Base):
        def extra(self) -> None:
            pass

    assert class_info(Child).describe() == {"ping": "update", "who": "query", "extra": "update"}


def test_async_method_rejected() -> None:
    with pytest.raises(ReplicationError, match=r"Bad\.fetch is async"):

        @replicated
        class Bad:
            async def fetch(self) -> int:
                return 1


def test_async_query_and_async_generator_rejected() -> None:
    with pytest.raises(ReplicationError, match="async"):

        @replicated
        class BadQuery:
            @query
            async def read(self) -> int:
                return 1

    with pytest.raises(ReplicationError, match="async"):

        @replicated
        class BadGen:
            async def stream(self):
                yield 1


def test_replication_error_is_a_type_error() -> None:
    # callers that catch TypeError for "wrong kind of class" keep working
    assert issubclass(ReplicationError, TypeError)
    assert replication.ReplicationError is ReplicationError


def test_get_state_without_set_state_rejected() -> None:
    with pytest.raises(ReplicationError, match=r"both get_state\(\) and set_state"):

        @replicated
        class Half:
            def op(self) -> None:
                pass

            def get_state(self) -> dict:
                return {}

    with pytest.raises(ReplicationError, match="get_state"):

        @replicated
        class OtherHalf:
            def op(self) -> None:
                pass

            def set_state(self, s) -> None:
                pass


def test_passive_get_update_without_set_update_rejected() -> None:
    with pytest.raises(ReplicationError, match=r"get_update\(\) and set_update"):

        @replicated(style="passive")
        class Half:
            def op(self) -> None:
                pass

            def get_update(self) -> int:
                return 0


def test_unknown_style_rejected_with_the_choices() -> None:
    with pytest.raises(ReplicationError) as ei:
        replicated(style="semi-active")
    assert "semi-active" in str(ei.value) and "passive" in str(ei.value)

    class C:
        def op(self) -> None:
            pass

    with pytest.raises(ReplicationError):
        replicated(C, style="Active")
    assert not hasattr(C, "__cohort__")


def test_private_query_rejected() -> None:
    with pytest.raises(ReplicationError, match="private methods cannot be called remotely"):

        @replicated
        class Hidden:
            def op(self) -> None:
                pass

            @query
            def _secret(self) -> int:
                return 1


def test_class_without_public_methods_rejected() -> None:
    with pytest.raises(ReplicationError, match="no public methods"):

        @replicated
        class Empty:
            def _private(self) -> None:
                pass


def test_replicated_on_a_function_rejected() -> None:
    def f() -> None:
        pass

    with pytest.raises(ReplicationError, match="goes on a class"):
        replicated(f)


def test_query_on_non_methods_rejected() -> None:
    with pytest.raises(ReplicationError, match="@query goes on a plain method"):
        query(property(lambda self: 1))
    with pytest.raises(ReplicationError):
        query(staticmethod(lambda: 1))
    with pytest.raises(ReplicationError):
        query(classmethod(lambda cls: 1))
    with pytest.raises(ReplicationError):
        query(local=True)(42)


def test_query_marks_kinds() -> None:
    def a(self) -> None:
        pass

    def b(self) -> None:
        pass

    def c(self) -> None:
        pass

    assert query(a) is a and a.__cohort_query__ == "query"
    assert query(local=True)(b) is b and b.__cohort_query__ == "local"
    assert query(local=False)(c) is c and c.__cohort_query__ == "query"


def test_class_info_requires_decoration_of_that_exact_class() -> None:
    class Plain:
        def op(self) -> None:
            pass

    with pytest.raises(ReplicationError, match="is not @replicated"):
        class_info(Plain)

    @replicated
    class Parent:
        def op(self) -> None:
            pass

    class Sub(Parent):  # inherits __cohort__ but was not decorated itself
        def more(self) -> None:
            pass

    with pytest.raises(ReplicationError, match="Sub is not @replicated"):
        class_info(Sub)


def test_samples_describe() -> None:
    from cohort.samples.bank import Bank
    from cohort.samples.counter import Counter
    from cohort.samples.kvstore import KVStore

    assert class_info(Counter).describe() == {"add": "update", "get": "query"}
    assert class_info(KVStore).describe() == {
        "cas": "update",
        "delete": "update",
        "get": "query",
        "put": "update",
        "size": "local",
    }
    bank = class_info(Bank).describe()
    assert bank["transfer"] == "update" and bank["balance"] == "query"
    assert "_check" not in bank


# --- now() and random() ---------------------------------------------------------------------------


def test_now_and_random_refuse_outside_a_replicated_call() -> None:
    with pytest.raises(RuntimeError, match=r"replication\.now\(\) is only meaningful inside"):
        now()
    with pytest.raises(RuntimeError, match=r"replication\.random\(\)"):
        random()
    # the façade re-exports the same functions
    assert replication.now is now and replication.random is random


def test_run_in_context_is_deterministic_in_now_and_seed() -> None:
    def sample(k: int) -> tuple[float, list[float]]:
        return now(), [random() for _ in range(k)]

    a = run_in_context(1234.5, 42, sample, 5)
    b = run_in_context(1234.5, 42, sample, k=5)
    assert a == b
    assert a[0] == 1234.5
    assert all(0.0 <= x < 1.0 for x in a[1])
    assert len(set(a[1])) == 5
    c = run_in_context(1234.5, 43, sample, 5)
    assert c[1] != a[1]
    d = run_in_context(99.0, 42, sample, 5)
    assert d == (99.0, a[1])  # the seed alone fixes the random sequence


def test_context_is_reset_after_the_call_even_on_error() -> None:
    def boom() -> None:
        assert now() == 7.0
        raise ValueError("x")

    with pytest.raises(ValueError):
        run_in_context(7.0, 1, boom)
    with pytest.raises(RuntimeError):
        now()


def test_nested_contexts_restore_the_outer_one() -> None:
    def inner() -> float:
        return now()

    def outer() -> tuple[float, float, float]:
        before = now()
        mid = run_in_context(2.0, 2, inner)
        return before, mid, now()

    assert run_in_context(1.0, 1, outer) == (1.0, 2.0, 1.0)


def test_context_does_not_leak_into_other_threads() -> None:
    seen: list[str] = []

    def other() -> None:
        try:
            now()
            seen.append("value")
        except RuntimeError:
            seen.append("refused")

    def method() -> float:
        t = threading.Thread(target=other)
        t.start()
        t.join(5)
        return now()

    assert run_in_context(5.0, 0, method) == 5.0
    assert seen == ["refused"]
