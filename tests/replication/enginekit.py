"""Shared harness for the Engine tests: a fake group (total order per view, Safe, views,
point-to-point sends), a reply recorder, `submit`, and the classes under test."""

from __future__ import annotations

from collections import deque
from typing import Any

import msgpack
from cohort.orb import errors as st
from cohort.replication import engine as eng
from cohort.replication.api import now, query, random, replicated
from cohort.replication.divergence import Policy
from cohort.replication.engine import Engine
from cohort.stack.view import View
from cohort.state import codec

CID = b"client-1"
KIND = {
    eng.INV: "INV",
    eng.QRY: "QRY",
    eng.PUPD: "PUPD",
    eng.CHUNK: "CHUNK",
    eng.HDR: "HDR",
    eng.REQ: "REQ",
    eng.STATUS: "STATUS",
    eng.ACK: "ACK",
    eng.END: "END",
    eng.DIG: "DIG",
}


def _kind(payload: bytes) -> str:
    return KIND[msgpack.unpackb(payload, raw=False)[0]]


# --- the fake group ------------------------------------------------------------------------------


class Group:
    def __init__(self, policy: Policy | None = None) -> None:
        #: the engines' divergence checks: none unless a test asks (a check casts a DIG)
        self.policy = policy or Policy(every=None, interval=None)
        #: member -> the hasher its checks use (absent: hash at once)
        self.hashers: dict[str, Any] = {}
        self.left: list[tuple[str, str]] = []  # (member, reason): on_divergence="stop" left
        self.engines: dict[str, Engine] = {}
        self.view: View | None = None
        self.order: list[tuple[str, bytes]] = []  # casts of the current view, in total order
        self.next: dict[str, int] = {}  # per member: index of its next delivery
        self.sends: deque[tuple[str, str, bytes]] = deque()  # (src, dst, payload), FIFO
        self.sent: list[tuple[str, str, str]] = []  # every send of the test: (src, dst, kind)
        #: every cast of the test but the status rounds of view installs: (origin, kind)
        self.casts: list[tuple[str, str]] = []
        self.ltime = 0
        self.last_primary_vid: tuple = (0, "")
        #: positions of this view's status round: `deliver(upto=k)` and `safe(count=k)` count
        #: the test's own casts after it
        self.base = 0

    def add(self, name: str, cls: type, *args: Any) -> Engine:
        def cast(payload: bytes) -> None:
            self.order.append((name, payload))
            if _kind(payload) != "STATUS":
                self.casts.append((name, _kind(payload)))

        def send(dst: str, payload: bytes) -> None:
            self.sends.append((name, dst, payload))
            self.sent.append((name, dst, _kind(payload)))

        def leave(reason: str) -> None:
            self.left.append((name, reason))

        hasher = self.hashers.get(name)
        e = Engine(
            cls, name, cast, send, init_args=args, policy=self.policy, hasher=hasher, leave=leave
        )
        self.engines[name] = e
        return e

    def __getitem__(self, name: str) -> Engine:
        return self.engines[name]

    def members(self) -> tuple[str, ...]:
        assert self.view is not None
        return self.view.members

    def install(
        self, members: tuple[str, ...] | str, *, primary: bool = True, statuses: bool = True
    ) -> View:
        """A new view: undelivered casts and queued sends of the old one are gone. `prev` is the
        view the continuing members come from (a joiner's first view ignores it). With
        `statuses`, the view's status round (the members' STATUS casts, the first `n` positions)
        is delivered and Safe everywhere, so a test's own casts start at position `n`."""
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
        self.base = 0
        self.order = []
        self.sends.clear()
        self.next = {m: 0 for m in view.members}
        for m in view.members:
            self.engines[m].on_view(view)
        if primary:
            self.last_primary_vid = vid
            if statuses:
                self.deliver_statuses()
        return view

    def deliver_statuses(self) -> None:
        """Deliver the leading STATUS casts of this view to every member, and Safe up to them."""
        n = 0
        while n < len(self.order) and _kind(self.order[n][1]) == "STATUS":
            n += 1
        self.base = 0
        self.deliver(upto=n)
        self.base = n
        for m in self.members():
            if self.next[m] >= n:
                self.engines[m].on_safe(n)

    def form(self, cls: type, names: str = "abc", *args: Any) -> Group:
        for n in names:
            self.add(n, cls, *args)
        self.install(tuple(names))
        return self

    def deliver(self, *names: str, upto: int | None = None) -> None:
        """Deliver the total order (up to index `upto`, or all of it, including casts made while
        delivering) to `names` (default: every member), one member after the other."""
        targets = names or self.members()
        if upto is not None:
            upto += self.base
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
            self.engines[n].on_safe(self.next[n] if count is None else count + self.base)

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


def admit(g: Group, name: str, cls: type, *args: Any) -> View:
    g.add(name, cls, *args)
    return g.install((*g.members(), name))
