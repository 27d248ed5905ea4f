"""replication.engine.Engine driven by a fake group: total order, Safe, views and point-to-point sends.

The fake group (`Group`) keeps the casts of the current view as one sequence (the total order) and
lets each test decide when each engine delivers a prefix of it, when it hears `Safe(count)`, and
when the point-to-point queue (state transfer) is pumped. Installing a view drops both the
undelivered casts and the queued sends, as the real stack does at a view end.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgpack

from orb import errors as st
from replication import engine as eng
from replication.api import now, query, random, replicated
from replication.engine import Engine
from samples.bank import Bank
from samples.counter import Counter
from samples.kvstore import KVStore
from stack.view import View
from state import codec

CID = b"client-1"
KIND = {
    eng.INV: "INV",
    eng.QRY: "QRY",
    eng.PUPD: "PUPD",
    eng.CHUNK: "CHUNK",
    eng.HDR: "HDR",
    eng.REQ: "REQ",
    eng.NOTREADY: "NOTREADY",
    eng.ACK: "ACK",
}


def _kind(payload: bytes) -> str:
    return KIND[msgpack.unpackb(payload, raw=False)[0]]


# --- the fake group ------------------------------------------------------------------------------


class Group:
    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.view: View | None = None
        self.order: list[tuple[str, bytes]] = []  # casts of the current view, in total order
        self.next: dict[str, int] = {}  # per member: index of its next delivery
        self.sends: deque[tuple[str, str, bytes]] = deque()  # (src, dst, payload), FIFO
        self.sent: list[tuple[str, str, str]] = []  # every send of the test: (src, dst, kind)
        self.casts: list[tuple[str, str]] = []  # every cast of the test: (origin, kind)
        self.ltime = 0
        self.last_primary_vid: tuple = (0, "")

    def add(self, name: str, cls: type, *args: Any) -> Engine:
        def cast(payload: bytes) -> None:
            self.order.append((name, payload))
            self.casts.append((name, _kind(payload)))

        def send(dst: str, payload: bytes) -> None:
            self.sends.append((name, dst, payload))
            self.sent.append((name, dst, _kind(payload)))

        e = Engine(cls, name, cast, send, init_args=args)
        self.engines[name] = e
        return e

    def __getitem__(self, name: str) -> Engine:
        return self.engines[name]

    def members(self) -> tuple[str, ...]:
        assert self.view is not None
        return self.view.members

    def install(self, members: tuple[str, ...] | str, *, primary: bool = True) -> View:
        """A new view: undelivered casts and queued sends of the old one are gone. `prev` is the
        view the continuing members come from (a joiner's first view ignores it)."""
        self.ltime += 1
        vid = (self.ltime, members[0])
        view = View(
            vid=vid,
            members=tuple(members),
            primary=primary,
            last_primary=tuple(members),
            last_primary_vid=self.last_primary_vid,
            prev=self.view.vid if self.view is not None else None,
        )
        self.view = view
        self.order = []
        self.sends.clear()
        self.next = {m: 0 for m in view.members}
        for m in view.members:
            self.engines[m].on_view(view)
        if primary:
            self.last_primary_vid = vid
        return view

    def form(self, cls: type, names: str = "abc", *args: Any) -> Group:
        for n in names:
            self.add(n, cls, *args)
        self.install(tuple(names))
        return self

    def deliver(self, *names: str, upto: int | None = None) -> None:
        """Deliver the total order (up to index `upto`, or all of it, including casts made while
        delivering) to `names` (default: every member), one member after the other."""
        targets = names or self.members()
        progress = True
        while progress:
            progress = False
            for n in targets:
                end = len(self.order) if upto is None else min(upto, len(self.order))
                while self.next[n] < end:
                    origin, payload = self.order[self.next[n]]
                    self.next[n] += 1
                    self.engines[n].on_deliver(origin, payload)
                    progress = True
                    end = len(self.order) if upto is None else min(upto, len(self.order))

    def safe(self, *names: str, count: int | None = None) -> None:
        """Safe(count) at `names` (default: everyone; count defaults to what each delivered)."""
        for n in names or self.members():
            self.engines[n].on_safe(self.next[n] if count is None else count)

    def settle(self) -> None:
        self.deliver()
        self.safe()

    def pump(self, dst: str | None = None, limit: int | None = None) -> int:
        """Hand queued point-to-point messages to their destination, FIFO (only those to `dst`
        when given; others keep their place). Returns the number delivered."""
        done = 0
        while limit is None or done < limit:
            idx = next(
                (i for i, m in enumerate(self.sends) if dst is None or m[1] == dst),
                None,
            )
            if idx is None:
                break
            src, to, payload = self.sends[idx]
            del self.sends[idx]
            if to in self.members():
                self.engines[to].on_send(src, payload)
            done += 1
        return done

    def digests(self) -> set[str]:
        return {self.engines[m].state_digest() for m in self.members()}


class Rec:
    """A reply callback that remembers what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Any]] = []

    def __call__(self, status: int, body: Any) -> None:
        self.calls.append((status, body))

    @property
    def called(self) -> bool:
        return bool(self.calls)

    @property
    def status(self) -> int:
        assert len(self.calls) == 1, self.calls
        return self.calls[0][0]

    @property
    def value(self) -> Any:
        status, body = self.calls[-1]
        assert len(self.calls) == 1, self.calls
        assert status == st.OK, (status, body if status != st.ERROR else st.decode_exception(body))
        return codec.loads(body)

    @property
    def error(self) -> BaseException:
        status, body = self.calls[-1]
        assert status == st.ERROR, (status, body)
        return st.decode_exception(body)


def submit(
    e: Engine,
    method: str,
    *args: Any,
    rid: int,
    cid: bytes = CID,
    done: int = 0,
    local: bool = False,
    **kwargs: Any,
) -> Rec:
    r = Rec()
    e.submit(cid, rid, method, codec.dumps([list(args), kwargs]), done, local, r)
    return r


# --- classes under test --------------------------------------------------------------------------


class Overdrawn(Exception):
    pass


@replicated
class Strict:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n

    def fail(self) -> None:
        self.n += 100
        raise Overdrawn("not today")

    def opaque(self) -> object:
        return object()

    def stamp(self) -> list:
        return [now(), random(), random()]


@replicated
class Tracked:
    """get_state/set_state; `seen` (views) and `calls` are local and not part of the state."""

    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.calls = 0
        self.seen: list[tuple] = []

    def add(self, n: int) -> int:
        self.calls += 1
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value

    def get_state(self) -> dict:
        return {"value": self.value}

    def set_state(self, state: dict) -> None:
        self.value = state["value"]

    def on_view_change(self, view) -> None:
        self.seen.append((view.vid, view.members, view.coordinator, view.primary))


@replicated
class Blob:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def fill(self, prefix: str, n: int, size: int) -> int:
        for i in range(n):
            self.data[f"{prefix}{i}"] = (f"{prefix}{i}:" * size)[:size]
        return len(self.data)

    def put(self, k: str, v: str) -> None:
        self.data[k] = v


@replicated(style="passive")
class PassiveCounter:
    """Passive with full-state updates; `calls` counts local executions (not replicated)."""

    def __init__(self) -> None:
        self.value = 0
        self.calls = 0

    def add(self, n: int) -> int:
        self.calls += 1
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value

    def get_state(self) -> dict:
        return {"value": self.value}

    def set_state(self, state: dict) -> None:
        self.value = state["value"]


@replicated(style="passive")
class Journal:
    """Passive with deltas: backups get `get_update()` through `set_update()`."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.last: str | None = None
        self.applied_deltas = 0

    def append(self, x: str) -> int:
        self.items.append(x)
        self.last = x
        return len(self.items)

    def get_update(self) -> str | None:
        return self.last

    def set_update(self, u: str) -> None:
        self.applied_deltas += 1
        self.items.append(u)

    def get_state(self) -> dict:
        return {"items": self.items}

    def set_state(self, s: dict) -> None:
        self.items = list(s["items"])


@replicated
class BadHook:
    def __init__(self) -> None:
        self.v = 0

    def op(self) -> int:
        self.v += 1
        return self.v

    def on_view_change(self, view) -> None:
        raise RuntimeError("hook failed")


# --- forming a group -----------------------------------------------------------------------------


def test_forming_group_creates_fresh_state_everywhere() -> None:
    g = Group().form(Tracked, "abc", 7)
    for m in "abc":
        e = g[m]
        assert e.ready and isinstance(e.obj, Tracked) and e.obj.value == 7
        assert e.views == [g.view.vid]
        assert e.obj.seen == [(g.view.vid, ("a", "b", "c"), "a", True)]
    assert len(g.digests()) == 1
    assert g.casts == [] and g.sent == []


# --- replies held until Safe ---------------------------------------------------------------------


def test_reply_held_until_safe_covers_its_position() -> None:
    g = Group().form(Counter)
    r = submit(g["b"], "add", 5, rid=1)
    assert g.casts == [("b", "INV")]
    g.deliver()
    assert [g[m].obj.value for m in "abc"] == [5, 5, 5]
    assert not r.called  # executed everywhere but not yet uniform
    g.safe("b", count=0)
    assert not r.called
    g.safe("a", "c")  # Safe at other members does not answer b's client
    assert not r.called
    g.safe("b", count=1)
    assert r.value == 5
    assert len(r.calls) == 1


def test_safe_releases_replies_in_order_up_to_the_count() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 1, rid=1)
    r2 = submit(g["a"], "add", 2, rid=2)  # concurrent calls: the watermark stays at 0
    r3 = submit(g["a"], "add", 3, rid=3)
    g.deliver()
    g.safe("a", count=2)
    assert r1.value == 1 and r2.value == 3 and not r3.called
    g.safe("a", count=3)
    assert r3.value == 6


def test_new_primary_view_releases_held_replies() -> None:
    g = Group().form(Counter)
    r = submit(g["a"], "add", 4, rid=1)
    g.deliver()
    assert not r.called
    g.install(("a", "b", "c"))  # the view ended and we moved on with the primary
    assert r.value == 4


def test_new_view_releases_held_replies_at_survivors_after_a_crash() -> None:
    g = Group().form(Counter)
    r = submit(g["b"], "add", 4, rid=1)
    g.deliver()
    g.install(("b", "c"))  # a crashed
    assert r.value == 4
    assert g["b"].obj.value == g["c"].obj.value == 4


def test_non_primary_view_does_not_release_replies() -> None:
    g = Group().form(Counter)
    r = submit(g["a"], "add", 4, rid=1)
    g.deliver()
    g.install(("a",), primary=False)
    assert not r.called  # property 11: no acknowledgement from a non-primary view
    r2 = submit(g["a"], "add", 1, rid=2)
    assert r2.status == st.NO_QUORUM


# --- exactly once --------------------------------------------------------------------------------


def test_retry_racing_its_original_is_executed_once() -> None:
    g = Group().form(Counter)
    original = submit(g["a"], "add", 5, rid=1)
    retry = submit(g["b"], "add", 5, rid=1)  # the client gave up on a and retried at b
    assert g.casts == [("a", "INV"), ("b", "INV")]
    g.settle()
    for m in "abc":
        e = g[m]
        assert e.obj.value == 5
        assert e.stats["executed"] == 1 and e.stats["duplicates"] == 1
    assert original.value == 5 and retry.value == 5
    assert original.calls == retry.calls  # byte-identical replies
    assert len(g.digests()) == 1


def test_second_submission_at_the_same_replica_needs_no_second_cast() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    r2 = submit(g["a"], "add", 5, rid=1)
    assert g.casts == [("a", "INV")]
    g.settle()
    assert r1.value == r2.value == 5
    assert g["a"].stats["executed"] == 1


def test_retry_after_completion_answers_from_the_cache_without_a_cast() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    g.settle()
    assert r1.value == 5
    submit(g["b"], "add", 1, rid=1, cid=b"other")  # another client moves the state on
    g.settle()
    casts = len(g.casts)
    retry = submit(g["c"], "add", 5, rid=1)
    assert retry.value == 5  # the original result, not 11
    assert len(g.casts) == casts
    assert g["c"].stats["executed"] == 2 and g["c"].obj.value == 6


def test_retry_of_executed_but_unsafe_request_waits_without_a_cast() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 5, rid=1)
    g.deliver()
    retry = submit(g["b"], "add", 5, rid=1)
    assert not retry.called and len(g.casts) == 1
    g.safe("b")
    assert retry.value == 5
    assert g["b"].stats["executed"] == 1


def test_done_watermark_prunes_and_later_retry_is_stale() -> None:
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    g.settle()
    r2 = submit(g["a"], "add", 2, rid=2, done=1)
    g.settle()
    assert r1.value == 5 and r2.value == 7
    for m in "abc":
        assert g[m].cache.get(CID, 1) is None
        assert g[m].cache.get(CID, 2) is not None
        assert g[m].cache.done[CID] == 1
    casts = len(g.casts)
    late = submit(g["b"], "add", 5, rid=1)
    assert late.status == st.STALE
    assert "already completed" in late.calls[0][1]
    assert len(g.casts) == casts
    assert g["b"].obj.value == 7


def test_ordered_retry_behind_the_prune_is_stale_everywhere() -> None:
    """The original was answered at a, the client went on (rid 2 prunes rid 1), and a retry that
    b cast before it delivered anything is ordered after the prune: STALE, never re-executed."""
    g = Group().form(Counter)
    r1 = submit(g["a"], "add", 5, rid=1)
    g.deliver("a")
    g.safe("a")
    assert r1.value == 5
    r2 = submit(g["a"], "add", 2, rid=2, done=1)
    late = submit(g["b"], "add", 5, rid=1)  # b has delivered nothing yet: casts
    assert [k for _, k in g.casts] == ["INV", "INV", "INV"]
    g.settle()
    assert late.status == st.STALE
    assert r2.value == 7
    for m in "abc":
        e = g[m]
        assert e.obj.value == 7
        assert e.stats["executed"] == 2 and e.stats["stale"] == 1
    assert len(g.digests()) == 1


def test_waiter_is_answered_even_if_its_entry_was_pruned_before_safe() -> None:
    """Client calls rid 1 at a (slow), retries at b, b answers; the client's rid 2 (done=1) is
    ordered and delivered at a before a hears Safe for rid 1."""
    g = Group().form(Counter)
    at_a = submit(g["a"], "add", 5, rid=1)
    g.deliver("b")
    g.safe("b")
    retry = submit(g["b"], "add", 5, rid=1)
    assert retry.value == 5
    submit(g["b"], "add", 1, rid=2, done=1)
    g.deliver()
    g.safe("a")
    assert at_a.called  # OK with 5 or STALE: anything but silence


# --- errors --------------------------------------------------------------------------------------


def test_builtin_exception_is_reraised_as_itself() -> None:
    g = Group().form(Bank)
    submit(g["a"], "open", "x", 10, rid=1)
    r = submit(g["b"], "withdraw", "x", 50, rid=2, done=1)
    g.settle()
    e = r.error
    assert type(e) is ValueError and "overdraft" in str(e)
    r2 = submit(g["c"], "deposit", "nope", 1, rid=3, done=2)
    g.settle()
    assert type(r2.error) is KeyError
    for m in "abc":
        assert g[m].obj.accounts == {"x": 10}
    # the error is cached like a result: a retry gets the same bytes without re-executing
    again = submit(g["a"], "deposit", "nope", 1, rid=3, done=2)
    assert again.calls == r2.calls
    assert len(g.digests()) == 1


def test_custom_exception_becomes_remote_error() -> None:
    g = Group().form(Strict)
    r = submit(g["a"], "fail", rid=1)
    g.settle()
    e = r.error
    assert isinstance(e, st.RemoteError)
    assert e.remote_type.endswith("Overdrawn")
    assert e.remote_message == "not today"
    assert "raise Overdrawn" in e.remote_traceback
    # the partial mutation before the raise happened on every replica alike
    assert {g[m].obj.n for m in "abc"} == {100}
    assert len(g.digests()) == 1


def test_unserializable_result_is_an_error_naming_the_type() -> None:
    g = Group().form(Strict)
    r = submit(g["a"], "opaque", rid=1)
    g.settle()
    e = r.error
    assert isinstance(e, st.RemoteError)
    assert "SerializationError" in e.remote_type
    assert "'object'" in str(e) and "opaque()" in str(e)


def test_unknown_method_is_an_attribute_error_without_a_cast() -> None:
    g = Group().form(Counter)
    r = submit(g["a"], "sub", 1, rid=1)
    e = r.error
    assert type(e) is AttributeError and "'sub'" in str(e) and "Counter" in str(e)
    for private in ("_check", "__init__", "get_state"):
        assert type(submit(g["a"], private, rid=2).error) is AttributeError
    assert g.casts == []


def test_undecodable_arguments_are_an_error() -> None:
    g = Group().form(Counter)
    r = Rec()
    g["a"].submit(CID, 1, "add", b"\xc1not msgpack", 0, False, r)
    g.settle()
    assert isinstance(r.error, Exception)
    assert {g[m].obj.value for m in "abc"} == {0}


# --- queries -------------------------------------------------------------------------------------


def test_linearizable_query_runs_only_at_its_origin_and_is_not_cached() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 3, rid=1)
    q = submit(g["b"], "get", rid=2, done=1)  # ordered after the update
    assert [k for _, k in g.casts] == ["INV", "QRY"]
    g.deliver()
    assert not q.called  # held until Safe like an update
    g.safe()
    assert q.value == 3
    assert [g[m].stats["queries"] for m in "abc"] == [0, 1, 0]
    for m in "abc":
        assert g[m].cache.get(CID, 2) is None
        assert len(g[m].cache) == 1
    assert len(g.digests()) == 1


def test_query_is_released_by_a_new_primary_view() -> None:
    g = Group().form(Counter)
    q = submit(g["b"], "get", rid=1)
    g.deliver()
    g.install(("a", "b", "c"))
    assert q.value == 0


def test_repeated_query_is_executed_again() -> None:
    g = Group().form(Counter)
    q1 = submit(g["a"], "get", rid=1)
    g.settle()
    submit(g["a"], "add", 2, rid=2, done=1)
    q2 = submit(g["a"], "get", rid=1)  # same ids, but queries are never cached
    g.settle()
    assert q1.value == 0 and q2.value == 2
    assert g["a"].stats["queries"] == 2


def test_local_query_answered_at_once_without_a_cast() -> None:
    g = Group().form(KVStore)
    submit(g["a"], "put", "k", "v", rid=1)
    g.deliver("a")
    r = submit(g["a"], "size", rid=2, local=True)
    assert r.value == 1
    r_b = submit(g["b"], "size", rid=2, local=True)  # b lags: sequentially consistent only
    assert r_b.value == 0
    assert [k for _, k in g.casts] == ["INV"]
    assert g["a"].stats["queries"] == 1


def test_local_flag_for_a_non_local_method_is_rejected() -> None:
    g = Group().form(KVStore)
    r = submit(g["a"], "get", "k", rid=1, local=True)
    assert type(r.error) is AttributeError
    r2 = submit(g["a"], "put", "k", "v", rid=2, local=True)
    assert type(r2.error) is AttributeError
    assert g.casts == []


def test_local_method_called_without_the_flag_is_still_answered_locally() -> None:
    g = Group().form(KVStore)
    r = submit(g["a"], "size", rid=1)
    assert r.value == 0 and g.casts == []


# --- no quorum -----------------------------------------------------------------------------------


def test_submit_before_any_view_or_in_a_non_primary_view_is_no_quorum() -> None:
    g = Group()
    e = g.add("a", Counter)
    r = submit(e, "add", 1, rid=1)
    assert r.status == st.NO_QUORUM and "a is not in a primary view" in r.calls[0][1]
    g.add("b", Counter)
    g.install(("a", "b"), primary=False)
    assert submit(e, "add", 1, rid=2).status == st.NO_QUORUM
    assert submit(e, "get", rid=3).status == st.NO_QUORUM
    assert g.casts == []


# --- exit and failing waiters ----------------------------------------------------------------------


def test_on_exit_fails_every_waiter_with_no_quorum() -> None:
    g = Group().form(Counter)
    held = submit(g["a"], "add", 2, rid=1, cid=b"c2")  # delivered, not Safe
    q = submit(g["a"], "get", rid=1, cid=b"c3")  # query run, reply held until Safe
    pending = submit(g["a"], "add", 1, rid=1)  # cast, not delivered
    g.deliver("a", upto=2)
    assert not held.called and not q.called and not pending.called
    e = g["a"]
    e.on_exit("excluded")
    for r in (pending, held, q):
        assert r.status == st.NO_QUORUM
        assert "left the group (excluded)" in r.calls[0][1]
    assert e.excluded and not e.ready and not e.unsafe and not e.unsafe_keys and not e.waiters
    assert submit(e, "add", 1, rid=4).status == st.NO_QUORUM
    g.deliver("a")
    g.safe("a")  # late deliveries and Safe: nobody is answered twice
    assert all(len(r.calls) == 1 for r in (pending, held, q))


def test_fail_waiters_answers_waiters_and_held_queries_once() -> None:
    g = Group().form(Counter)
    first = submit(g["a"], "add", 1, rid=1)
    g.settle()
    assert first.value == 1
    w2 = submit(g["a"], "add", 1, rid=2, done=1)
    q = submit(g["a"], "get", rid=3, done=1)
    w4 = submit(g["a"], "add", 1, rid=4, done=1)
    g.deliver("a", upto=3)  # rid 2 executed (held), the query ran (held), rid 4 not delivered
    g["a"].fail_waiters(st.RETRY, "try elsewhere")
    for r in (w2, q, w4):
        assert r.calls == [(st.RETRY, "try elsewhere")]
    # the client retries here: rid 2 waits for its held result without a second cast...
    casts = len(g.casts)
    retry2 = submit(g["a"], "add", 1, rid=2, done=1)
    assert len(g.casts) == casts and not retry2.called
    # ...and rid 4, whose waiter was failed, is cast again and still executed once
    retry4 = submit(g["a"], "add", 1, rid=4, done=1)
    assert len(g.casts) == casts + 1
    g.settle()
    assert retry2.value == 2 and retry4.value == 3
    for m in "abc":
        assert g[m].obj.value == 3 and g[m].stats["executed"] == 3
        assert g[m].stats["duplicates"] == 1
    assert all(len(r.calls) == 1 for r in (w2, q, w4))
    assert len(g.digests()) == 1


# --- deterministic now() / random() ---------------------------------------------------------------


def test_now_and_random_are_the_same_on_every_replica() -> None:
    g = Group().form(Strict)
    r1 = submit(g["b"], "stamp", rid=1)
    r2 = submit(g["b"], "stamp", rid=2, done=0)
    g.settle()
    v1, v2 = r1.value, r2.value
    assert v1 != v2  # a fresh seed per invocation
    assert isinstance(v1[0], float) and all(0 <= x < 1 for x in v1[1:])
    entries = {g[m].cache.get(CID, 1) for m in "abc"}
    assert len(entries) == 1
    assert len(g.digests()) == 1


# --- view upcalls ----------------------------------------------------------------------------------


def test_on_view_change_upcall_and_a_failing_hook() -> None:
    g = Group().form(Tracked)
    v2 = g.install(("b", "c"))
    assert g["b"].obj.seen[-1] == (v2.vid, ("b", "c"), "b", True)
    assert len(g["b"].obj.seen) == 2
    h = Group().form(BadHook)
    h.install(("a", "b"))  # the hook raises: logged, the replica carries on
    r = submit(h["a"], "op", rid=1)
    h.settle()
    assert r.value == 1


def test_undecodable_messages_are_dropped() -> None:
    g = Group().form(Counter)
    e = g["a"]
    e.on_deliver("b", b"\xc1garbage")
    e.on_send("b", b"\xc1garbage")
    e.on_send("b", b"")
    assert e.pos == 1  # the slot is consumed: positions stay aligned with the others
    r = submit(e, "add", 1, rid=1)
    g.deliver("a")
    e.on_safe(2)
    assert r.value == 1


# --- state transfer --------------------------------------------------------------------------------


def admit(g: Group, name: str, cls: type, *args: Any) -> View:
    g.add(name, cls, *args)
    return g.install((*g.members(), name))


def test_joiner_receives_the_snapshot_and_buffers_deliveries_meanwhile() -> None:
    g = Group().form(Tracked)
    for i in range(1, 6):
        submit(g["a"], "add", i, rid=i, done=i - 1)
    g.settle()
    v2 = admit(g, "d", Tracked)
    d = g["d"]
    assert not d.ready and d.obj is None
    assert [(s, t, k) for s, t, k in g.sent] == [("a", "d", "HDR"), ("a", "d", "CHUNK")]
    # updates go on while the snapshot travels; d buffers them
    r = submit(g["b"], "add", 100, rid=6, done=5)
    submit(g["d"], "add", 1000, rid=1, cid=b"joiner-client")  # a client of the joiner
    g.deliver()
    assert not d.ready and len(d.buffer) == 2
    g.pump()
    assert d.ready
    assert ("d", "a", "ACK") in g.sent
    assert d.obj.value == 1115 == g["a"].obj.value
    assert len(g.digests()) == 1
    assert d.views == [v2.vid]
    assert d.xfer_log and d.xfer_log[0]["donor"] == "a"
    assert tuple(d.xfer_log[0]["vid"]) == v2.vid and d.xfer_log[0]["pos"] == 0
    assert d.obj.seen and d.obj.seen[-1][0] == v2.vid
    g.safe()
    assert r.value == 1115 - 1000
    # the joiner has the reply cache too: a retry there is answered without a cast
    casts = len(g.casts)
    retry = submit(d, "add", 100, rid=6, done=5)
    assert retry.value == 115 and len(g.casts) == casts
    assert submit(d, "add", 5, rid=5, done=4).status == st.STALE  # pruned by rid 6's watermark
    assert not g["a"].outgoing  # the donor forgot the finished transfer


def test_joiner_waits_for_the_donor_push_and_only_the_oldest_member_donates() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    senders = {s for s, _, k in g.sent if k in ("HDR", "CHUNK")}
    assert senders == {"a"}
    assert not any(k == "REQ" for _, _, k in g.sent)  # first view of a joiner: no request
    g.pump()
    assert g["d"].ready and len(g.digests()) == 1


def test_joiner_client_waiter_before_the_cut_is_answered_after_install() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    r = submit(g["d"], "add", 9, rid=1)  # cast by a replica that is not ready yet
    g.deliver()
    g.pump()
    assert g["d"].ready
    assert not r.called
    g.safe("d")
    assert r.value == 9
    assert {g[m].obj.value for m in "abcd"} == {9}


def test_state_with_get_state_set_state_transfers() -> None:
    g = Group().form(Tracked, "abc", 3)
    submit(g["c"], "add", 4, rid=1)
    g.settle()
    admit(g, "d", Tracked, 3)
    g.pump()
    d = g["d"]
    assert d.ready and d.obj.value == 7
    assert d.obj.calls == 0  # set_state only: the joiner did not re-run the update
    assert len(g.digests()) == 1


def test_interrupted_transfer_is_requested_again_and_completes() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)  # ~200 kB: several chunks
    g.settle()
    admit(g, "d", Blob)
    assert sum(k == "CHUNK" for _, _, k in g.sent) > 2
    g.pump(limit=3)  # HDR and two chunks arrive, then the view changes
    d = g["d"]
    assert d.incoming is not None and not d.ready
    v3 = g.install(g.members())  # drops the rest of the transfer
    assert ("d", "a", "REQ") in g.sent  # asks the oldest member of the new view
    assert d.incoming is None
    g.pump()
    assert d.ready
    assert len(g.digests()) == 1
    assert len(d.xfer_log) == 1 and tuple(d.xfer_log[0]["vid"]) == v3.vid


def test_transfer_restarts_from_another_member_when_the_donor_crashes() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 2, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.install(("b", "c", "d"))  # donor a crashed before any chunk arrived
    assert ("d", "b", "REQ") in g.sent
    g.pump()
    d = g["d"]
    assert d.ready and d.xfer_log[0]["donor"] == "b"
    assert d.obj.value == 2 and len(g.digests()) == 1


def test_request_in_a_view_not_reached_yet_gets_notready_and_the_joiner_asks_the_next() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    g.install(g.members())
    g.sends.clear()  # forget d's REQ to a; replay one with a wrong view id
    a, d = g["a"], g["d"]
    a.on_send("d", msgpack.packb([eng.REQ, [99, "zz"]]))
    assert g.sent[-1] == ("a", "d", "NOTREADY")
    g.pump()  # NOTREADY reaches d, which asks b
    assert ("d", "b", "REQ") in g.sent
    g.pump()
    assert d.ready and len(g.digests()) == 1
    assert d.xfer_log[0]["donor"] == "b"


def test_snapshot_cut_ahead_of_the_joiner_waits_for_its_deliveries() -> None:
    """Re-requested transfer: the donor already delivered two casts of the new view when the
    request reaches it, so the cut is at pos 2. The joiner installs the snapshot only once it
    delivered up to the cut, then applies just what follows; its own query before the cut gets
    RETRY (nobody answers it)."""
    g = Group().form(Counter)
    submit(g["b"], "add", 1, rid=1)
    g.settle()
    admit(g, "d", Counter)
    g.install(g.members())  # interrupted before anything arrived: d asks a
    d = g["d"]
    submit(g["b"], "add", 10, rid=2, done=1)
    q = submit(d, "get", rid=1, cid=b"dq")
    g.deliver("a", "b", "c")  # a is at pos 2 when the request arrives
    g.pump("a")  # the REQ: cut at pos 2
    g.pump("d")  # HDR and chunks: complete, but d delivered nothing yet
    assert not d.ready and d.complete is not None
    submit(g["c"], "add", 100, rid=3, done=2)
    g.deliver("d", upto=1)
    assert not d.ready
    g.deliver("d", upto=2)  # reaches the cut: install
    assert d.ready and d.obj.value == 11
    assert q.calls == [(st.RETRY, "d was receiving its state")]
    g.deliver()
    g.safe()
    assert d.obj.value == 111
    assert len(g.digests()) == 1
    assert d.stats["executed"] == 1  # only the update after the cut ran here


def test_joiner_does_not_answer_from_an_unsafe_snapshot_entry() -> None:
    g = Group().form(Counter)
    admit(g, "d", Counter)
    g.install(g.members())  # interrupted: d asks a
    at_a = submit(g["a"], "add", 5, rid=1)
    g.deliver()  # a (and d, buffered) deliver the update; nobody heard Safe
    g.pump()  # the cut is at pos 1 and includes the update
    d = g["d"]
    assert d.ready and d.obj.value == 5
    assert not at_a.called  # a holds its reply: the update is not uniform yet
    retry = submit(d, "add", 5, rid=1)
    assert not retry.called  # ... and so must d


def test_member_that_missed_views_drops_its_state_and_gets_a_fresh_one() -> None:
    g = Group().form(Counter)
    q = submit(g["c"], "get", rid=1, cid=b"cq")
    g.deliver()  # c ran its query; the reply waits for Safe
    assert not q.called
    g.install(("a", "b"))  # c is cut off and does not see this view
    submit(g["a"], "add", 7, rid=1)
    g.settle()
    g.install(("a", "b", "c"))  # c comes back: the view's prev is not c's last view
    c = g["c"]
    assert not c.ready and c.obj is None
    assert q.calls == [(st.RETRY, "c is receiving a fresh state")]
    g.pump()
    assert c.ready and c.obj.value == 7
    assert len(g.digests()) == 1
    r = submit(c, "add", 1, rid=2, done=1)
    g.settle()
    assert r.value == 8


def test_large_state_uses_many_chunks_and_the_window_bounds_chunks_in_flight() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "big", 2000, 1024, rid=1)  # 2000 strings of 1 KiB: ~2 MB
    g.settle()
    admit(g, "d", Blob)
    donor_chunks = lambda: sum(1 for s, t, k in g.sent if (s, t, k) == ("a", "d", "CHUNK"))  # noqa: E731
    assert donor_chunks() == eng.WINDOW  # the initial burst is exactly one window
    acks_to_donor = 0
    most_in_flight = 0
    while g.sends:
        src, dst, payload = g.sends[0]
        if _kind(payload) == "ACK" and dst == "a":
            acks_to_donor += 1
        g.pump(limit=1)
        in_flight = donor_chunks() - acks_to_donor
        assert in_flight <= eng.WINDOW
        most_in_flight = max(most_in_flight, in_flight)
    d = g["d"]
    assert d.ready
    total = donor_chunks()
    assert total >= 2_000_000 // eng.CHUNK_SIZE > 4 * eng.WINDOW
    assert acks_to_donor == total
    assert most_in_flight == eng.WINDOW
    assert d.xfer_log[0]["bytes"] > 2_000_000
    assert len(g.digests()) == 1
    assert not g["a"].outgoing


def test_donor_ignores_acks_of_another_transfer() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)
    g.settle()
    admit(g, "d", Blob)
    a = g["a"]
    xid, chunks, nxt, acked = a.outgoing["d"]
    a.on_send("d", msgpack.packb([eng.ACK, xid + 1, 5]))
    assert a.outgoing["d"][3] == 0  # unchanged
    a.on_send("x", msgpack.packb([eng.ACK, xid, 0]))  # from a non-joiner
    assert a.outgoing["d"][3] == 0
    g.pump()
    assert g["d"].ready and len(g.digests()) == 1


def test_stale_chunk_of_an_old_transfer_is_ignored() -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "k", 40, 5000, rid=1)
    g.settle()
    admit(g, "d", Blob)
    old = [p for s, t, p in g.sends if _kind(p) == "CHUNK"]
    g.install(g.members())
    g.pump("a")  # REQ: a new transfer with a new xid
    g.pump("d", limit=1)  # its HDR
    d = g["d"]
    for p in old:  # delayed chunks of the first transfer
        d.on_send("a", p)
    assert not d.ready and d.incoming is not None and d.incoming[5].received == 0
    g.pump()
    assert d.ready and len(g.digests()) == 1


# --- passive style ---------------------------------------------------------------------------------


def test_passive_only_the_coordinator_executes_and_backups_apply_updates() -> None:
    g = Group().form(PassiveCounter)
    r = submit(g["b"], "add", 5, rid=1)
    g.deliver(upto=1)  # the INV only
    assert g.casts == [("b", "INV"), ("a", "PUPD")]
    assert [g[m].obj.calls for m in "abc"] == [1, 0, 0]
    assert [g[m].obj.value for m in "abc"] == [5, 0, 0]
    g.deliver()  # the PUPD
    assert [g[m].obj.value for m in "abc"] == [5, 5, 5]
    assert [g[m].obj.calls for m in "abc"] == [1, 0, 0]
    assert [g[m].applied for m in "abc"] == [1, 1, 1]
    assert not any(g[m].passive_pending for m in "abc")
    g.safe("b", count=1)
    assert not r.called  # the INV alone being Safe is not enough: the update must be
    g.safe("b", count=2)
    assert r.value == 5
    assert len(g.digests()) == 1


def test_passive_delta_updates_use_set_update() -> None:
    g = Group().form(Journal)
    r1 = submit(g["c"], "append", "x", rid=1)
    r2 = submit(g["c"], "append", "y", rid=2, done=0)
    g.settle()
    assert r1.value == 1 and r2.value == 2
    assert [g[m].obj.items for m in "abc"] == [["x", "y"]] * 3
    assert [g[m].obj.applied_deltas for m in "abc"] == [0, 2, 2]
    assert len(g.digests()) == 1


def test_passive_new_coordinator_executes_the_pending_invocation_once() -> None:
    g = Group().form(PassiveCounter)
    r = submit(g["b"], "add", 5, rid=1)
    g.deliver(upto=1)  # everyone delivers the INV; a executes and casts a PUPD...
    assert g["a"].obj.calls == 1
    assert all(g[m].passive_pending for m in "bc")
    g.install(("b", "c"))  # ...and crashes before anyone delivers the PUPD
    assert g["b"].obj.calls == 1 and g["c"].obj.calls == 0
    assert g.casts[-1] == ("b", "PUPD")
    g.deliver()
    assert not r.called
    g.safe()
    assert r.value == 5
    assert g["b"].obj.value == g["c"].obj.value == 5  # once, not twice
    assert g["b"].applied == g["c"].applied == 1
    assert len(g.digests()) == 1
    # a retry at c is answered from the cache, no new execution
    retry = submit(g["c"], "add", 5, rid=1)
    assert retry.value == 5 and g["b"].obj.calls == 1


def test_passive_pending_invocation_travels_with_the_snapshot() -> None:
    g = Group().form(PassiveCounter)
    admit(g, "d", PassiveCounter)
    g.pump()
    r = submit(g["d"], "add", 3, rid=1)
    g.deliver(upto=1)
    g.install(("b", "c", "d"))  # a (the coordinator) dies before its PUPD is delivered
    g.settle()
    assert r.value == 3
    assert {g[m].obj.value for m in "bcd"} == {3}
    assert len(g.digests()) == 1


def test_passive_racing_retry_executes_once() -> None:
    g = Group().form(PassiveCounter)
    r1 = submit(g["b"], "add", 5, rid=1)
    r2 = submit(g["c"], "add", 5, rid=1)
    g.settle()
    assert r1.value == r2.value == 5
    assert g["a"].obj.calls == 1
    assert {g[m].obj.value for m in "abc"} == {5}
    assert len(g.digests()) == 1


def test_passive_retry_at_the_coordinator_waits_for_the_update_to_be_safe() -> None:
    g = Group().form(PassiveCounter)
    submit(g["a"], "add", 5, rid=1)
    g.deliver("a", upto=1)  # only the coordinator delivered the INV; its PUPD is not delivered
    assert g["a"].obj.calls == 1
    retry = submit(g["a"], "add", 5, rid=1)
    assert not retry.called


def test_passive_duplicate_inv_does_not_release_before_the_update_is_safe() -> None:
    g = Group().form(PassiveCounter)
    at_a = submit(g["a"], "add", 5, rid=1)
    submit(g["b"], "add", 5, rid=1)  # racing retry: the order is INV, INV, PUPD
    g.deliver("a", upto=2)
    assert [k for _, k in g.casts] == ["INV", "INV", "PUPD"]
    g.safe("a", count=2)  # both INVs are Safe; the PUPD (pos 2) is not even delivered
    assert not at_a.called


# --- misc ----------------------------------------------------------------------------------------


def test_snapshot_and_digest_do_not_depend_on_local_bookkeeping() -> None:
    g = Group().form(Counter)
    submit(g["a"], "add", 1, rid=1)
    submit(g["a"], "get", rid=2)
    g.settle()
    before = g["a"].state_digest()
    submit(g["a"], "get", rid=3)  # queries change stats only
    g.settle()
    assert g["a"].state_digest() == before
    assert g["a"].stats["queries"] == 2 and g["b"].stats["queries"] == 0
    assert len(g.digests()) == 1


def test_view_info_repr_and_fields() -> None:
    view = View((4, "b"), ("b", "c"), True)
    info = eng.ViewInfo(view)
    assert info.vid == (4, "b") and info.members == ("b", "c") and info.coordinator == "b"
    assert "primary=True" in repr(info)


# --- batching: the calls of one loop tick leave as one cast --------------------------------------


def test_calls_of_one_tick_leave_as_one_batch_cast_and_share_its_position():
    g = Group()
    ticks: list = []
    for n in "abc":
        g.add(n, Counter)
        g[n]._schedule = ticks.append  # the driver's call_soon
    g.install(("a", "b", "c"))
    KIND[eng.BATCH] = "BATCH"
    rs = [submit(g["b"], "add", 1, rid=i, cid=b"c%d" % i) for i in range(1, 4)]
    q = submit(g["b"], "get", rid=9, cid=b"q")
    assert g.casts == [] and len(ticks) == 1  # nothing cast until the end of the tick
    ticks.pop()()
    assert g.casts == [("b", "BATCH")]
    g.deliver()
    assert all(e.stats["executed"] == 3 for e in g.engines.values())
    assert not any(r.called for r in rs) and not q.called  # held until Safe covers the batch
    g.safe()
    assert sorted(r.value for r in rs) == [1, 2, 3] and q.value == 3
    assert len(g.digests()) == 1


def test_a_batch_buffered_by_a_joiner_is_applied_after_the_cut():
    g = Group()
    ticks: list = []
    for n in "abc":
        g.add(n, Counter)
    g.install(("a", "b", "c"))
    g.add("d", Counter)
    g["a"]._schedule = ticks.append
    g.install(("a", "b", "c", "d"))  # d's first view: a pushes the snapshot (queued)
    KIND[eng.BATCH] = "BATCH"
    rs = [submit(g["a"], "add", 2, rid=i, cid=b"x%d" % i) for i in (1, 2)]
    ticks.pop()()
    g.deliver()  # d buffers the batch: its snapshot has not arrived yet
    assert g["d"].ready is False
    while g.pump():
        pass
    assert g["d"].ready and g["d"].obj.value == 4
    g.safe()
    assert sorted(r.value for r in rs) == [2, 4]
    assert len(g.digests()) == 1


def test_a_large_transfer_logs_its_progress(caplog) -> None:
    g = Group().form(Blob)
    submit(g["a"], "fill", "big", 3000, 1024, rid=1)  # ~3 MB: more than one progress step
    g.settle()
    with caplog.at_level("INFO", logger="cohort.replica"):
        admit(g, "d", Blob)
        while g.sends:
            g.pump()
    lines = [r.getMessage() for r in caplog.records]
    assert any("sending state to d" in m for m in lines)
    steps = [m for m in lines if "state transfer from a:" in m]
    assert steps and "%)" in steps[0]
    assert any("state received from a" in m for m in lines)
