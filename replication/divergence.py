"""Divergence detection: the replicas compare state digests at agreed positions of the total order.

Why: active replication needs deterministic methods. A method that reads `time.time()` or
`random.random()` directly (instead of `replication.now()` / `random()`), iterates a set of
strings (hash randomization differs per process), or a `@query` that changes the state makes the
replicas differ, silently: every later answer depends on which replica the client reached.

Positions. A check is due after the update that makes the applied count P a multiple of `every`,
or after the first update whose agreed time (the `now` an INV carries, chosen by the replica that
ordered it) falls in a later `interval`-second bucket than the previous update's. Both depend only
on the ordered updates, so replicas that applied the same prefix check at the same positions. A
replica that installed a snapshot does not know the previous update's time and skips the time
trigger once: it checks a subset of the agreed positions, never another position.

The cut and the hash. At a due position the engine freezes the state at once
(`cohort.state.stream.freeze`: containers copied, immutable leaves shared, so it costs per entry,
not per byte) together with the reply cache and P: exactly the state at P, whatever is applied
next. The driver hashes the copy off the core and off the loop (`Replica`: a thread of its own,
at the core's lower priority; the simulator: later in virtual time) with `stream.LeafDigests`, in
which a bytes value of 64 KiB or more that did not change since the last check is not hashed
again: a 100 MiB state of large values costs its small parts per check.

Reports, in total order:  DIG [5, P, digest, epoch, resync]
`epoch` [first view id..., n]: the reporter's first view (which names this incarnation of it: a
restarted process starts again from 0) and the resyncs it started since (a report made before one
is not acted on again);
`resync` says whether it will wait for a fresh state (on_divergence="resync") or leave ("stop").
Every member records the reports of its view's members. Once a majority of the view reports the
same digest for P, that digest is P's, and every member whose report for P differs (then or
later) diverged at P. Reports are ordered, so every member decides alike at the same point; a
replica compares only reports for the same P (never digests of different positions).

On a mismatch every member logs an ERROR naming P, both sides, and the methods applied since the
diverged replica's last agreeing check. Then the diverged replica's policy:
  resync (default): it serves nothing, fails its waiting calls with RETRY (clients retry
    elsewhere with the same ids and are answered from the reply cache there), buffers what is
    delivered next, and asks the youngest member of the majority (REQ [12, vid, P], point to
    point). That member sends it a snapshot through the state-transfer path joiners use
    (`Engine._on_request`) once it holds both the request and its own verdict: the cut is then
    after the deciding report, and the snapshot never reaches a replica that still serves.
  stop: it fails its calls, serves nothing and leaves the group (`leave(reason)`; `cohort serve`
    exits with status 3).
With no majority (all members reported, no digest held by more than half) the ERROR says so and
nothing is resynced: there is no side to trust.

Queries. `guard()` wraps `@query` methods (ordered and local): by default ("shallow") it compares
the object's attribute bindings and the sizes of its container attributes before and after, which
costs about a microsecond per attribute and catches `self.x = ...`, `self.n += 1`, appends,
inserts and deletes, but not in-place changes deeper down (`self.d[k] = v` for an existing key);
"digest" hashes the whole state before and after (catches every change, costs the state's size
per query: for debugging); "off" trusts the class. A mutation raises `ReplicationError` naming
the method; the change has happened at that replica, and its next check repairs it (resync).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgpack
from cohort.orb import errors as st
from cohort.replication.api import ReplicationError
from cohort.state import stream

log = logging.getLogger("cohort.replica")

DIG = 5
#: the engine's REQ; with a third element, a diverged replica asks its donor (see `_resync`)
REQ = 12
POLICIES = ("resync", "stop")
GUARDS = ("shallow", "digest", "off")
#: own checks kept for `cohort status` (it compares replicas at the same position)
RECENT = 8
#: positions whose reports (and method windows) are kept
KEEP = 64
#: cuts handed to the hasher and not yet back, at most: past it a due position is skipped here
#: (each cut holds a copy of the state's containers; a hasher that falls behind must not pile
#: them up). A skipped position is not reported by this replica: never a false alarm.
PENDING = 2
_pack = msgpack.Packer(use_bin_type=True).pack
#: hasher(frozen, done): hash `frozen` (off the core if it can), then call done(digest) on the
#: core, or done(None) if hashing failed
Hasher = Callable[[Any, Callable[[str | None], None]], None]

__all__ = ["DIG", "Policy", "Checker", "OffCoreHasher", "POLICIES", "GUARDS"]


@dataclass(frozen=True)
class Policy:
    """When to check (`every` updates and/or `interval` seconds of agreed time; None: never),
    what a diverged replica does (`on_divergence`), and how queries are guarded."""

    every: int | None = 1000
    interval: float | None = 10.0
    on_divergence: str = "resync"
    query_guard: str = "shallow"

    def __post_init__(self) -> None:
        if self.on_divergence not in POLICIES:
            raise ValueError(f"on_divergence must be one of {POLICIES}, not {self.on_divergence!r}")
        if self.query_guard not in GUARDS:
            raise ValueError(f"query_guard must be one of {GUARDS}, not {self.query_guard!r}")
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise ValueError(f"check_every must be a positive count of updates, not {self.every!r}")
        if self.interval is not None and not self.interval > 0:
            raise ValueError(f"check_interval must be positive seconds, not {self.interval!r}")


class Checker:
    """One engine's divergence checks (see the module docstring); the engine calls `on_update`
    after each executed update, `on_report` for each delivered DIG, `on_install` when it installs
    a snapshot, and `guard` around queries."""

    def __init__(
        self,
        engine: Any,
        policy: Policy,
        hasher: Hasher | None = None,
        leave: Callable[[str], None] | None = None,
    ) -> None:
        self.e = engine
        self.policy = policy
        self.enabled = engine.info.style == "active" and bool(policy.every or policy.interval)
        self.hasher: Hasher = hasher or _inline(stream.LeafDigests())
        self.leave = leave
        self.prev_now: float | None = None  # agreed time of the previous update (None: unknown)
        self.methods: Counter = Counter()  # methods applied since the last cut
        self.windows: dict[int, Counter] = {}  # P -> methods applied since the cut before P
        self.reports: dict[int, dict[str, tuple]] = {}  # P -> member -> (digest, epoch, resync)
        self.agreed: dict[int, str] = {}  # P -> the majority's digest
        self.undecided: dict[int, bool] = {}  # positions reported by everyone, no majority
        self.last_ok: dict[str, int] = {}  # member -> the last position it agreed at
        #: member -> (incarnation, resyncs) of its last report found diverged
        self.acted: dict[str, tuple] = {}
        #: donor side, per member: the view in which it was found diverged (owed) or asked (REQ)
        self.owed: dict[str, tuple] = {}
        self.asked: dict[str, tuple] = {}
        self.epoch = 0  # resyncs this replica started
        self.pending = 0  # cuts at the hasher
        self.skipped = 0  # due positions skipped because the hasher was behind
        self.mine: deque = deque(maxlen=RECENT)  # this replica's own (P, digest), oldest first
        #: (P, member) found diverged, in order (member None: no majority at P); the last ones
        self.events: list[tuple[int, str | None]] = []
        self.diverged: dict | None = None  # this replica's last divergence
        self.stopped: str | None = None
        self.summary: dict = {}
        self._summarize()

    # --- positions and cuts ------------------------------------------------------------------

    def on_update(self, method: str, now: float) -> None:
        """After an executed update (the engine's `applied` is its position)."""
        if not self.enabled:
            return
        self.methods[method] += 1
        p, pos = self.policy, self.e.applied
        prev, self.prev_now = self.prev_now, now
        due = bool(p.every) and pos % p.every == 0
        if not due and p.interval and prev is not None:
            due = now // p.interval > prev // p.interval
        if due:
            self._cut(pos)

    def _cut(self, pos: int) -> None:
        e = self.e
        if self.pending >= PENDING:
            self.skipped += 1
            return
        obj = e.obj
        try:
            state = obj.get_state() if hasattr(obj, "get_state") else obj.__dict__
            frozen = stream.freeze([state, e.cache.dump(), e.applied])
        except Exception as ex:  # a state that cannot be carried: the transfer path says so too
            log.error("%s: cannot cut the state for the check at update %d: %s", e.me, pos, ex)
            return
        self.windows[pos], self.methods = self.methods, Counter()
        _trim(self.windows)
        epoch = self.epoch
        self.pending += 1
        self.hasher(frozen, lambda digest: self.on_digest(pos, epoch, digest))

    def on_digest(self, pos: int, epoch: int, digest: str | None) -> None:
        """The digest of the cut at `pos` (on the core; None: hashing failed): record it and
        report it in order."""
        e = self.e
        self.pending -= 1
        if digest is None or epoch != self.epoch or not e.ready or not (e.view and e.view.primary):
            return  # cut before a resync, or nothing to report to: the position goes unchecked
        self.mine.append((pos, digest))
        self._summarize()
        resync = self.policy.on_divergence == "resync"
        e._cast(_pack([DIG, pos, digest, [*e.views[0], epoch], resync]))

    def on_install(self) -> None:
        """A snapshot replaced the state: the previous update's time is not known here."""
        self.prev_now = None
        self.methods = Counter()

    # --- reports -----------------------------------------------------------------------------

    def on_report(self, origin: str, msg: list) -> None:
        view = self.e.view
        if not self.enabled or view is None or origin not in view.members:
            return
        try:
            _, pos, digest, epoch, resync = msg
            epoch = (tuple(epoch[:-1]), int(epoch[-1]))
            reports = self.reports.setdefault(int(pos), {})
        except (TypeError, ValueError):
            log.error("%s: malformed divergence report from %s dropped", self.e.me, origin)
            return
        if origin in reports:
            return
        reports[origin] = (digest, epoch, resync)
        _trim(self.reports)
        members = view.members
        agreed = self.agreed.get(pos)
        if agreed is None:
            counts = Counter(r[0] for m, r in reports.items() if m in members)
            top, n = counts.most_common(1)[0]
            if 2 * n <= len(members):
                if sum(counts.values()) == len(members) and pos not in self.undecided:
                    self._no_majority(pos, reports, members)
                return
            self.agreed[pos] = agreed = top
            _trim(self.agreed)
            late = [m for m, r in reports.items() if m in members and r[0] != top]
        else:
            late = [origin] if digest != agreed else []
        for m, r in reports.items():
            if r[0] == agreed and m in members:
                self.last_ok[m] = max(self.last_ok.get(m, pos), pos)
        for m in late:
            self._diverged(pos, m, reports, members)
        self._summarize()

    def _since(self, member: str | None, pos: int) -> tuple[int | None, Counter]:
        since = self.last_ok.get(member) if member else None
        methods: Counter = Counter()
        for q, window in self.windows.items():
            if (since is None or q > since) and q <= pos:
                methods.update(window)
        return since, methods

    def _diverged(self, pos: int, member: str, reports: dict, members: tuple) -> None:
        digest, (incarnation, epoch), resync = reports[member]
        last = self.acted.get(member)
        if last is not None and last[0] == incarnation and epoch <= last[1]:
            return  # a report made before the resync it is already getting
        self.acted[member] = (incarnation, epoch)
        self._event(pos, member)
        agreed = self.agreed[pos]
        majority = [m for m in members if m in reports and reports[m][0] == agreed]
        donor = majority[-1]  # the youngest: the coordinator keeps its time for calls
        since, methods = self._since(member, pos)
        action = f"{member} takes a fresh state from {donor}" if resync else f"{member} leaves"
        me = self.e.me
        log.error(
            "%s: DIVERGENCE at update %d: %s holds state digest %s, the majority (%s) holds %s; "
            "methods applied since %s: %s. A method is not deterministic (time.time(), "
            "random.random(), set iteration, ... instead of replication.now()/random()) or a "
            "@query changed the state; on_divergence=%s: %s",
            me,
            pos,
            member,
            str(digest)[:16],
            ", ".join(majority),
            agreed[:16],
            f"the last agreeing check (update {since})"
            if since is not None
            else "this replica's first record (no earlier agreeing check)",
            _methods(methods),
            "resync" if resync else "stop",
            action,
        )
        if member == me:
            self.diverged = {
                "position": pos,
                "since": since,
                "methods": dict(methods),
                "majority": majority,
                "donor": donor if resync else None,
                "policy": self.policy.on_divergence,
            }
            if self.policy.on_divergence == "stop":
                self._leave(pos)
            else:
                self._resync(pos, donor)
        elif donor == me and resync:
            self._serve_when_asked(member)

    def _event(self, pos: int, member: str | None) -> None:
        self.events.append((pos, member))
        if len(self.events) > 2 * KEEP:
            del self.events[:KEEP]

    def _no_majority(self, pos: int, reports: dict, members: tuple) -> None:
        self.undecided[pos] = True
        _trim(self.undecided)
        self._event(pos, None)
        sides: dict[str, list[str]] = {}
        for m in members:
            sides.setdefault(str(reports[m][0])[:16], []).append(m)
        _since, methods = self._since(None, pos)
        log.error(
            "%s: DIVERGENCE at update %d and no majority agrees (digest: replicas %s); methods "
            "applied in the checks kept: %s. Nothing to resync from",
            self.e.me,
            pos,
            sides,
            _methods(methods),
        )
        if self.e.me in members:
            self.diverged = {"position": pos, "since": None, "methods": dict(methods)}
            self.diverged.update(majority=[], donor=None, policy=self.policy.on_divergence)

    def _resync(self, pos: int, donor: str) -> None:
        """Serve nothing until the donor's snapshot is installed (`Engine._install`). The donor
        sends it only once both sides have decided (its REQ and the donor's own verdict): a
        snapshot that arrived while this replica still served would be ignored, and one cut
        before the donor's verdict could miss what this replica applied before its own."""
        e = self.e
        self.epoch += 1
        if not e.ready:
            return  # already waiting for a fresh state (custody): keep that transfer going
        e.ready = False
        e.buffer, e.incoming, e.complete = [], None, None
        e.fail_waiters(st.RETRY, f"{e.me} diverged at update {pos}; it is receiving a fresh state")
        e.unsafe.clear()
        e.unsafe_keys.clear()
        e._send(donor, _pack([REQ, list(e.view.vid), pos]))

    def _serve_when_asked(self, member: str) -> None:
        vid = tuple(self.e.view.vid)
        if self.asked.pop(member, None) == vid:
            self._serve(member)
        else:
            self.owed[member] = vid

    def on_request(self, origin: str, msg: list) -> None:
        """REQ [12, vid, applied] from a replica that found itself diverged (point-to-point);
        a plain REQ [12, vid] goes on to `Engine._on_request`."""
        if len(msg) < 3:
            return self.e._on_request(origin, msg)
        vid = tuple(msg[1])
        if self.e.view is None or vid != tuple(self.e.view.vid):
            return  # asked in an earlier view: the status round of this one serves it
        if self.owed.pop(origin, None) == vid:
            self._serve(origin)
        else:
            self.asked[origin] = vid

    def _serve(self, member: str) -> None:
        """The state-transfer path joiners use (a snapshot cut at the end of this tick)."""
        if self.e.ready:
            self.e._on_request(member, [REQ, list(self.e.view.vid)])

    def _leave(self, pos: int) -> None:
        e = self.e
        self.epoch += 1
        self.stopped = (
            f"{e.me} diverged from the majority at update {pos} and left the group "
            "(on_divergence='stop'); restart it to rejoin with a fresh state"
        )
        log.error("%s: %s", e.me, self.stopped)
        e.ready = False
        e.unavailable = self.stopped
        e.fail_waiters(st.NO_QUORUM, self.stopped)
        e.unsafe.clear()
        e.unsafe_keys.clear()
        if self.leave is not None:
            self.leave(self.stopped)

    def _summarize(self) -> None:
        """What `cohort status` shows, replaced whole (the loop thread reads it as it is)."""
        p = self.policy
        self.summary = {
            "every": p.every,
            "interval": p.interval,
            "on_divergence": p.on_divergence,
            "query_guard": p.query_guard,
            "recent": [list(x) for x in self.mine],
            "diverged": self.diverged,
            "resyncs": self.epoch,
            "skipped": self.skipped,
            "peers_diverged": sorted({m for _p, m in self.events[-RECENT:] if m}),
            "stopped": self.stopped,
        }

    # --- queries -----------------------------------------------------------------------------

    def guard(self, method: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` (a bound method), raising ReplicationError if it is a query and changed the
        state; updates are returned as they are."""
        if self.e.info.methods[method].kind == "update":
            return fn
        mode = self.policy.query_guard
        obj = self.e.obj
        if mode == "off" or (mode == "shallow" and not hasattr(obj, "__dict__")):
            return fn

        def guarded(*args: Any, **kwargs: Any) -> Any:
            before = _fingerprint(obj, mode)
            out = fn(*args, **kwargs)
            after = _fingerprint(obj, mode)
            if after != before:
                raise ReplicationError(
                    f"@query {type(obj).__name__}.{method} changed the replicated state "
                    f"({_changed(before, after, mode)}): a query runs at one replica only, so that "
                    f"replica now differs from the others (its next divergence check finds it). "
                    f"Make {method} an update (drop @query) or leave the state alone in it"
                )
            return out

        return guarded


_SIZED = (dict, list, set, bytearray)


def _fingerprint(obj: Any, mode: str) -> Any:
    if mode == "digest":
        return stream.digest(obj.get_state() if hasattr(obj, "get_state") else obj.__dict__)
    return {k: (id(v), len(v) if type(v) in _SIZED else -1) for k, v in obj.__dict__.items()}


def _changed(before: Any, after: Any, mode: str) -> str:
    if mode == "digest":
        return "its digest changed"
    names = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return "attribute " + ", ".join(repr(n) for n in names) + " changed"


def _methods(methods: Counter) -> str:
    if not methods:
        return "none recorded"
    return ", ".join(f"{m} x{n}" for m, n in methods.most_common(12))


def _trim(d: dict) -> None:
    while len(d) > KEEP:
        del d[next(iter(d))]


def _inline(memo: stream.LeafDigests) -> Hasher:
    """Hash on the spot (engine tests; a driver without threads)."""
    return lambda frozen, done: done(memo.digest(frozen))


class OffCoreHasher:
    """`Replica`'s hasher: one thread of its own, in order, at the core's lower priority; each
    digest is handed back to the core with `post(done, digest)`."""

    def __init__(self, name: str, post: Callable[..., None], nice: int = 0) -> None:
        self.memo = stream.LeafDigests()
        self.post = post
        self._pool = ThreadPoolExecutor(1, name, initializer=_lower, initargs=(nice,))

    def __call__(self, frozen: Any, done: Callable[[str | None], None]) -> None:
        def finished(fut: Any) -> None:
            if fut.cancelled():
                return  # the replica is shutting down
            if fut.exception() is not None:
                log.error("divergence check: hashing failed: %r", fut.exception())
            self.post(done, None if fut.exception() is not None else fut.result())

        self._pool.submit(self.memo.digest, frozen).add_done_callback(finished)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _lower(nice: int) -> None:
    if nice and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass
