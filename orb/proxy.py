"""The client side: a thread-safe proxy for a replicated object, with failover and exactly-once retries.

Why the proxy numbers requests: a call that times out or loses its connection is retried at another
replica under the same (client id, request id), and the replicas' reply cache makes the retry return
the original result instead of executing twice. The proxy also reports the highest request id below
which everything has completed, so replicas can drop old cache entries.

Why it learns views: every reply can carry the current membership, so a reference that still names
one live replica heals itself; updates go to the coordinator (the sequencer) first, which saves a
hop, and `@query(local=True)` calls are spread over all replicas.

Why it probes while a call waits: a replica that is paused (SIGSTOP, a long GC, a swapped-out
host) or cut off from the group keeps its TCP connections open, so nothing tells the proxy to leave
it before the attempt timeout (seconds). The group itself excludes such a member after its
heartbeat timeout (about 1 s). So while an attempt has waited longer than `probe_interval`, a
watcher thread asks another replica for its view (`describe`, on that replica's pooled connection)
once per interval; when the proxy learns a newer primary view that no longer has the replica it
waits on (or, for an update, no longer has it as coordinator), it abandons that attempt (shuts its
connection down) and retries at the new coordinator under the same client id and request id, which
the reply cache answers if the call already ran. A call that is merely slow is never re-sent: the
probes keep reporting the same view, and one probe per interval serves every waiting call of the
proxy.

Unlike a Pyro5 proxy, one `GroupProxy` may be shared by threads: each call borrows a connection
from a small per-replica pool.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from cohort.orb import errors
from cohort.orb.connection import Connection
from cohort.orb.pool import Pool
from cohort.orb.refs import DESCRIBE, INVOKE, GroupRef, object_id, parse_ref
from cohort.state.codec import SerializationError, dumps, loads
from Pyro5 import errors as pyro_errors

_CONNECTION_ERRORS = (
    OSError,
    EOFError,
    pyro_errors.ProtocolError,
    pyro_errors.CommunicationError,
    errors.GroupNotServed,  # that replica cannot serve the call: try the others
)
#: answers that will not change by retrying the same replica soon: nothing listens at the address,
#: it serves no such group, or it speaks TLS and we do not (or the other way round)
_DEFINITIVE = {
    ConnectionRefusedError: "refused",
    errors.GroupNotServed: "not served",
    errors.TLSMismatch: "tls",
}
#: how long every replica must give definitive answers before a call fails with them: covers a
#: replica restarting on its port, and still answers well within 2 s
DEFINITIVE_GRACE = 0.5


class _Wait:
    """One attempt in progress at one replica, as the watcher sees it."""

    __slots__ = ("addr", "conn", "vid", "was_coord", "local", "since", "abandoned", "why")

    def __init__(self, addr: str, conn: Connection, vid, was_coord: bool, local: bool) -> None:
        self.addr = addr
        self.conn = conn
        self.vid = vid  # the view the proxy knew when the attempt started
        self.was_coord = was_coord
        self.local = local
        self.since = time.monotonic()
        self.abandoned = False
        self.why = ""


class GroupProxy:
    """Call methods of a replicated object: `proxy.add(5)`.

    `timeout` bounds a whole call including failover; `attempt_timeout` bounds one try at one
    replica (then the proxy moves on, keeping the request id). `probe_interval` (default 0.1 s):
    while an attempt has waited that long, ask another replica for its view once per interval and
    leave the replica as soon as the group has excluded it, instead of waiting out the attempt
    timeout; 0 turns probing off. A paused or cut-off replica then stalls a call for about the
    group's exclusion time plus one interval.
    """

    def __init__(
        self,
        ref: str | GroupRef,
        *,
        timeout: float = 30.0,
        attempt_timeout: float = 3.0,
        pool_size: int = 8,
        probe_interval: float = 0.1,
        ns_host: str | None = None,
        ns_port: int | None = None,
        ssl_context: Any = None,
    ) -> None:
        ref = parse_ref(ref, ns_host, ns_port)
        self._group = ref.group
        self._members: list[str] = list(ref.members)
        self._coord: str | None = None
        self._vid: list | None = None
        self._timeout = timeout
        self._attempt_timeout = attempt_timeout
        self._pool = Pool(object_id(ref.group), pool_size, min(attempt_timeout, 2.0), ssl_context)
        self._client_id = os.urandom(8)
        self._lock = threading.Lock()
        self._next_rid = 1
        self._outstanding: set[int] = set()
        self._methods: dict[str, str] | None = None
        self._max_message: int | None = None  # the group's, from `describe`
        self._rr = itertools.count()
        self._probe_interval = probe_interval
        # a probe that gets no answer in this long tells nothing (the replica may be busy too)
        self._probe_timeout = min(attempt_timeout, max(0.5, 5 * probe_interval))
        self._probe_rr = itertools.count()
        self._waits: set[_Wait] = set()
        self._watcher: threading.Thread | None = None
        self._closed = False
        # counters for `cohort.proxy_info`; every attribute of a proxy is `_`-prefixed, so none
        # can shadow a replicated method (`proxy.close()` calls the object's own `close`)
        self._cohort_failovers = 0  # calls that had to move to another replica
        self._cohort_abandoned = 0  # attempts left because a newer view excluded their replica
        self._cohort_probes = 0  # views asked for by the watcher (answered)

    # --- Pyro5-like surface -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def __enter__(self) -> GroupProxy:
        return self

    def __exit__(self, *exc) -> None:
        self._cohort_close()

    def _cohort_close(self) -> None:
        """Close the proxy's connections (a `with` block does it; like Pyro5's `_pyroRelease`)."""
        with self._lock:
            self._closed = True
        self._pool.close()

    def __repr__(self) -> str:
        return f"<GroupProxy {GroupRef(self._group, tuple(self._members))}>"

    # --- calls -----------------------------------------------------------------------------------

    def _invoke(self, method: str, args: tuple, kwargs: dict) -> Any:
        try:
            payload = dumps([list(args), kwargs], root=f"{method}()")
        except SerializationError as e:
            raise SerializationError(f"argument of {method}() cannot be sent: {e}") from None
        kinds = self._methods or self._describe()
        limit = self._max_message
        if limit is not None and len(payload) + errors.MESSAGE_OVERHEAD > limit:
            raise errors.too_large(f"the arguments of {method}()", len(payload), limit)
        kind = kinds.get(method)
        if kind is None:
            raise AttributeError(
                f"replicated object {self._group!r} has no method {method!r} "
                f"(it has: {', '.join(sorted(kinds))})"
            )
        local = kind == "local"
        with self._lock:
            rid = self._next_rid
            self._next_rid += 1
            self._outstanding.add(rid)
            done = min(self._outstanding) - 1
        try:
            status, body = self._call_any(
                INVOKE,
                [self._client_id, rid, method, payload, done, int(local), self._vid],
                local,
            )
        finally:
            with self._lock:
                self._outstanding.discard(rid)
        if status == errors.OK:
            return loads(body, records=True)  # it ran: never fail on our own codec registry
        if status == errors.ERROR:
            raise errors.decode_exception(body)
        raise errors.RemoteError("Cohort", f"unexpected reply status {status}: {body!r}")

    def _describe(self) -> dict[str, str]:
        _status, body = self._call_any(DESCRIBE, [], True)
        self._methods = body
        return body

    def _candidates(self, local: bool) -> list[str]:
        members = list(self._members)
        if local and members:
            k = next(self._rr) % len(members)
            return members[k:] + members[:k]
        if self._coord in members:
            members.remove(self._coord)
            members.insert(0, self._coord)
        return members

    def _call_any(self, method: str, args: list, local: bool) -> tuple[int, Any]:
        deadline = time.monotonic() + self._timeout
        failures: dict[str, str] = {}
        kinds: dict[str, str] = {}  # addr -> its last answer: a _DEFINITIVE kind, "no quorum", ...
        backoff = 0.02
        first = True
        refusals = 0  # rounds in a row in which no replica could serve and one said "no quorum"
        definitive_since: float | None = None
        while True:
            candidates = self._candidates(local)
            moved = False  # an attempt was abandoned: start over at the new view's coordinator
            for addr in candidates:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not first:
                    with self._lock:
                        self._cohort_failovers += 1
                first = False
                try:
                    conn = self._pool.get(addr)
                except _CONNECTION_ERRORS as e:
                    failures[addr] = f"connect failed: {e}"
                    kinds[addr] = _DEFINITIVE.get(type(e), "unreachable")
                    continue
                wait = self._watch(addr, conn, local)
                try:
                    reply = conn.call(method, args, min(left, self._attempt_timeout))
                except Exception as e:
                    abandoned = self._unwatch(wait)
                    if not abandoned and not isinstance(e, _CONNECTION_ERRORS):
                        raise
                    self._pool.drop(addr)
                    if abandoned:
                        failures[addr] = f"abandoned: {wait.why}"
                        moved = True
                        break
                    failures[addr] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                    kinds[addr] = "lost"
                    continue
                if self._unwatch(wait):
                    conn.close()  # shut down by the watcher just as the reply came in
                else:
                    self._pool.put(conn)
                if method == DESCRIBE:
                    self._learn(reply.get("view"))
                    self._max_message = reply.get("max_message")
                    return errors.OK, reply["methods"]
                status, body, view = reply
                self._learn(view)
                if status == errors.NO_QUORUM:
                    failures[addr] = f"no quorum: {body}"
                    kinds[addr] = "no quorum"
                    continue
                if status == errors.RETRY:
                    failures[addr] = f"not serving: {body}"
                    kinds[addr] = "not serving"
                    continue
                if status == errors.STALE:
                    raise self._stale(args[1], body)
                return status, body
            if moved:
                continue
            now = time.monotonic()
            round_kinds = [kinds.get(a, "") for a in candidates]
            if round_kinds and all(k in _DEFINITIVE.values() for k in round_kinds):
                definitive_since = definitive_since if definitive_since is not None else now
                if now - definitive_since >= DEFINITIVE_GRACE:
                    raise self._definitive(failures, kinds)
            else:
                definitive_since = None
            stranded = all(k == "no quorum" or k in _DEFINITIVE.values() for k in round_kinds)
            refusals = refusals + 1 if stranded and "no quorum" in round_kinds else 0
            if now >= deadline or refusals >= 5:
                raise self._give_up(failures)
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, 0.5)

    def _learn(self, view: list | None) -> None:
        """Adopt the membership a replica reported (only newer views replace older ones)."""
        if not view:
            return
        vid, members = view[0], view[1]
        with self._lock:
            if self._vid is None or tuple(vid) > tuple(self._vid):
                self._vid = vid
                self._members = list(members)
                self._coord = members[0] if members else None
                if self._waits:
                    self._abandon_excluded()

    # --- the watcher: leave a replica the group has excluded -------------------------------------

    def _watch(self, addr: str, conn: Connection, local: bool) -> _Wait | None:
        if self._probe_interval <= 0:
            return None
        with self._lock:
            wait = _Wait(addr, conn, self._vid, addr == self._coord, local)
            self._waits.add(wait)
            if self._watcher is None and not self._closed:
                self._watcher = threading.Thread(
                    target=self._watch_loop, name=f"cohort-watch-{self._group}", daemon=True
                )
                self._watcher.start()
        return wait

    def _unwatch(self, wait: _Wait | None) -> bool:
        """Stop watching; True if the watcher abandoned the attempt (its connection is dead)."""
        if wait is None:
            return False
        with self._lock:
            self._waits.discard(wait)
        return wait.abandoned

    def _watch_loop(self) -> None:
        """While attempts wait longer than `probe_interval`, probe once per interval; exit after a
        second without any attempt in progress (the next attempt starts a new watcher)."""
        interval = self._probe_interval
        idle = 0.0
        while True:
            time.sleep(interval)
            with self._lock:
                if self._closed or (not self._waits and idle >= 1.0):
                    self._watcher = None
                    return
                idle = 0.0 if self._waits else idle + interval
                now = time.monotonic()
                busy = {w.addr for w in self._waits if now - w.since >= interval}
            if busy:
                self._probe(busy)

    def _probe(self, busy: set[str]) -> None:
        """Ask one replica we are not waiting on for its view (a different one each time)."""
        with self._lock:
            others = [m for m in self._members if m not in busy]
        if not others:
            return
        addr = others[next(self._probe_rr) % len(others)]
        try:
            conn = self._pool.get(addr)
        except _CONNECTION_ERRORS:
            return
        try:
            reply = conn.call(DESCRIBE, [], self._probe_timeout)
        except Exception:  # no answer in time tells nothing; the call closed the connection
            conn.close()
            return
        self._pool.put(conn)
        with self._lock:
            self._cohort_probes += 1
        if isinstance(reply, dict) and reply.get("primary", True):
            self._learn(reply.get("view"))

    def _abandon_excluded(self) -> None:
        """With `_lock` held: shut down the attempts at replicas the known view no longer has
        (or no longer has as coordinator, for an update sent to the coordinator)."""
        vid, members, coord = self._vid, self._members, self._coord
        if vid is None:
            return
        for w in self._waits:
            if w.abandoned or (w.vid is not None and tuple(vid) <= tuple(w.vid)):
                continue
            if w.addr in members and (w.local or not w.was_coord or coord == w.addr):
                continue
            w.abandoned = True
            w.why = (
                f"view {list(vid)} excludes it"
                if w.addr not in members
                else f"view {list(vid)} has coordinator {coord}"
            )
            self._cohort_abandoned += 1
            try:  # the socket's own shutdown (not SSLSocket's): wakes the blocked reader
                socket.socket.shutdown(w.conn.sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def _stale(self, rid: Any, body: Any) -> errors.StaleRequest:
        return errors.StaleRequest(
            f"group {self._group!r}: request {rid} of this proxy is no longer in the replicas' "
            f"reply cache ({body}). Either it completed and the proxy had reported it done, or the "
            "cache's per-client cap (1,000 replies or 1 MiB of results, oldest evicted first) "
            "dropped it because this client kept too many calls outstanding. It will not run "
            "again, but it may have run once: check the object's state before repeating it, and "
            "keep fewer calls outstanding per proxy.",
            rid if isinstance(rid, int) else None,
        )

    def _definitive(self, failures: dict[str, str], kinds: dict[str, str]) -> Exception:
        """Every replica gave an answer that retrying will not change: fail now, saying which."""
        tried = "; ".join(f"{a}: {why}" for a, why in failures.items())
        found = {kinds[a] for a in failures if a in kinds}
        if found == {"not served"}:
            return errors.GroupNotServed(
                f"no replica serves group {self._group!r}: {tried}. Check the group name in the "
                "reference (`cohort status` of an address lists the groups served there)."
            )
        if found == {"tls"}:
            return errors.TLSMismatch(f"group {self._group!r}: {tried}")
        return errors.GroupUnavailable(
            f"group {self._group!r}: no replica is running at the addresses known ({tried}). "
            "Start the replicas (cohort serve ...) or correct the addresses in the reference."
        )

    def _give_up(self, failures: dict[str, str]) -> Exception:
        tried = "; ".join(f"{a}: {why}" for a, why in failures.items()) or "no replica addresses"
        answered = [a for a, why in failures.items() if why.startswith("no quorum")]
        if answered:
            return errors.NoQuorum(
                f"group {self._group!r} has no majority: {len(answered)} replica(s) answered that "
                f"they are cut off from a majority of the group ({tried}). Restart the missing "
                "replicas or heal the network; the call may be retried safely (it did not run)."
            )
        return errors.GroupUnavailable(
            f"group {self._group!r}: no replica answered within {self._timeout:g}s. Tried {tried}. "
            f"Check that the replicas run (`cohort status {GroupRef(self._group, tuple(self._members))}`)"
            " and that these addresses are reachable from here."
        )


class _Method:
    __slots__ = ("_proxy", "_name")

    def __init__(self, proxy: GroupProxy, name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._proxy._invoke(self._name, args, kwargs)


def connect(ref: str | GroupRef, **options: Any) -> GroupProxy:
    """A proxy for the group `ref` (`PYROGROUP:name@host:port,...` or `PYROGROUPNAME:name`).

    Options: `timeout` (whole call, with failover; default 30 s), `attempt_timeout` (one replica;
    default 3 s), `probe_interval` (while a call waits, ask another replica for its view this
    often and leave a replica the group excluded; default 0.1 s, 0 turns it off), `pool_size`,
    `ns_host`/`ns_port` (name server), `ssl_context`.
    """
    return GroupProxy(ref, **options)


@dataclass(frozen=True)
class ProxyInfo:
    """What a proxy knows and has done, for reports and tests (`cohort.proxy_info(p)`)."""

    group: str
    members: tuple[str, ...]
    coordinator: str | None
    view: tuple | None
    failovers: int  # calls that had to move to another replica
    abandoned: int  # attempts left because a newer view excluded their replica
    probes: int  # views the watcher asked for while calls waited


def proxy_info(proxy: GroupProxy) -> ProxyInfo:
    """The proxy's view of its group and its failover counters. A function, not attributes of
    the proxy: every attribute name there belongs to the replicated object's methods."""
    with proxy._lock:
        return ProxyInfo(
            proxy._group,
            tuple(proxy._members),
            proxy._coord,
            tuple(proxy._vid) if proxy._vid else None,
            proxy._cohort_failovers,
            proxy._cohort_abandoned,
            proxy._cohort_probes,
        )


def close_proxy(proxy: GroupProxy) -> None:
    """Close a proxy's connections (what leaving its `with` block does)."""
    proxy._cohort_close()
