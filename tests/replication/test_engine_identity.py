"""The same class, or no join: a replica whose class differs from the group's (name, methods,
codecs, or `version=`) is refused in the status round, before any state is sent to it; a
constructor or a state install that raises stops the replica with the error instead of leaving
it up and never ready."""

from __future__ import annotations

from cohort.replication.api import class_info, query, replicated
from cohort.samples.counter import Counter
from enginekit import Group, submit


@replicated
class Other:
    def __init__(self) -> None:
        self.n = 0

    def add(self, n: int) -> int:
        self.n += n
        return self.n

    @query
    def get(self) -> int:
        return self.n


def fatal_log(e) -> list:
    seen: list = []
    e._on_fatal = lambda kind, why: seen.append((kind, why))
    return seen


def join(g: Group, name: str, cls: type, *args) -> None:
    g.add(name, cls, *args)
    g.install((*g.members(), name))


def test_a_joiner_with_another_class_is_refused_before_any_state():
    g = Group().form(Counter)
    submit(g["a"], "add", 5, rid=1)
    g.settle()
    g.add("d", Other)
    seen = fatal_log(g["d"])
    g.install((*g.members(), "d"))
    g.pump()
    assert [k for k, _ in seen] == ["class"]
    why = seen[0][1]
    assert "cohort.samples.counter.Counter" in why and "Other" in why and "fingerprint" in why
    assert not [s for s in g.sent if s[1] == "d"], "state was sent to a foreign replica"
    assert not g["d"].ready and g["d"].obj is None
    assert all(g[m].ready for m in "abc")  # the group goes on


def test_the_same_class_with_another_method_set_is_another_class_unless_versioned():
    @replicated
    class V1:
        def a(self) -> None:
            pass

    @replicated
    class V2:
        def a(self) -> None:
            pass

        def b(self) -> None:
            pass

    V2.__qualname__ = V1.__qualname__  # same name, another method set
    assert class_info(V1).fingerprint() != class_info(V2).fingerprint()

    @replicated(version="7")
    class W1:
        def a(self) -> None:
            pass

    @replicated(version="7")
    class W2:
        def a(self) -> None:
            pass

        def b(self) -> None:
            pass

    W2.__qualname__ = W1.__qualname__
    assert class_info(W1).fingerprint() == class_info(W2).fingerprint()


@replicated
class Fragile:
    def __init__(self, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("no database configured")
        self.n = 0

    def add(self, n: int) -> int:
        self.n += n
        return self.n

    def set_state(self, state) -> None:
        if state == "poison":
            raise ValueError("cannot read this state")
        self.n = state

    def get_state(self):
        return self.n


def test_a_constructor_that_raises_stops_the_founder_with_the_error():
    g = Group()
    for m in "abc":
        g.add(m, Fragile, True)
    seen = {m: fatal_log(g[m]) for m in "abc"}
    g.install(("a", "b", "c"))
    g.pump()
    for m in "abc":
        assert seen[m] and seen[m][0][0] == "user", seen
        assert "Fragile() raised RuntimeError: no database configured" in seen[m][0][1]
        assert not g[m].ready


def test_a_state_install_that_raises_stops_the_joiner_with_the_error():
    g = Group().form(Fragile)
    for m in "abc":
        g[m].obj.n = "poison"  # what get_state will hand the joiner
    g.add("d", Fragile)
    seen = fatal_log(g["d"])
    g.install((*g.members(), "d"))
    g.pump()
    assert seen and seen[0][0] == "user" and "cannot read this state" in seen[0][1], seen
    assert not g["d"].ready
