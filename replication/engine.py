"""The replica core: ordered execution, exactly-once replies, replies held until uniform, state transfer.

Why sans-I/O like the layers: the core reacts to group events (views, deliveries, Safe, point-to-point
messages) and client submissions, and emits casts, sends and replies. The asyncio `Replica` wires it
to a real group and server; tests drive it directly with fakes.

Ordered messages (msgpack arrays, cast in total order):
  INV  [0, cid, rid, method, payload, done, now, seed]   an update; every replica runs it (active)
                                                         or the coordinator runs it (passive)
  QRY  [1, cid, rid, method, payload, now, seed]         a linearizable read, run by its origin only
  PUPD [2, exec_no, cid, rid, status, body, update, delta]  passive: the coordinator's result
  BATCH [3, [INV or QRY, ...]]   the calls a replica received in one event-loop tick, one cast
                                 (one pass through the stack for many calls; they share a position)
  STATUS [4, vid, held, seen, applied, ready]   each member's, at the install of a primary view
  DIG [5, applied, digest, epoch, resync]   a check's state digest (`replication.divergence`)
Point-to-point messages: the state transfer of `cohort.replication.transfer` (HDR, CHUNK, ACK, END) and
  REQ [12, vid]   a joiner whose transfer failed its checks asks its donor again
  REQ [12, vid, applied]   a replica found diverged there asks its donor (`divergence.Checker`)

When a reply is safe (docs/guarantees.md, V5 and R-lost): an invocation is answered once the stack reports it
`Safe` (delivered and ordered at every member), or once the view it was delivered in has ended and
we moved on with the primary — then every survivor delivered it too (virtual synchrony). Either way
only once this replica's own STATUS in its current view is Safe: then every member knows the view
had a ready member, which the custody rule below relies on.

State custody (docs/replication.md): a replica never drops its state before it installs a newer one.
One cut off (it missed views) keeps its state, serves nothing, and takes part in the next primary
view's status round: in total order, every member sees who is ready; the youngest ready member
sends the state to the others. If nobody is ready, the holder of the latest state known to have been
current resumes from it and sends it to the others; if nobody holds it, the view says so and waits.

State transfer: a joiner buffers every ordered delivery from its first view on, tagged (view, pos).
The donor (the youngest member that was in the previous view) pushes a snapshot cut at the view that
admitted the joiner, streamed a chunk at a time (`cohort.state.stream`); a session survives view changes that
keep both sides. The joiner applies exactly the buffered deliveries after the cut.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgpack
from cohort.orb import errors as st
from cohort.replication.api import class_info, run_in_context
from cohort.replication.cache import ReplyCache
from cohort.replication.custody import FORMING, READY
from cohort.replication.divergence import DIG, Checker, Hasher, Policy
from cohort.replication.messages import ACK, BATCH, CHUNK, END, HDR, INV, PUPD, QRY, REQ, STATUS
from cohort.replication.state_transfer import StateTransfer
from cohort.replication.status_round import StatusRound
from cohort.replication.transfer import Incoming, Session
from cohort.state import codec, stream

log = logging.getLogger("cohort.replica")


__all__ = ["Engine", "ViewInfo", "INV", "QRY", "PUPD", "BATCH", "STATUS"]
__all__ += ["CHUNK", "HDR", "REQ", "ACK", "END"]

Reply = Callable[[int, Any], None]
_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


class ViewInfo:
    """What `on_view_change(view)` receives."""

    __slots__ = ("vid", "members", "primary", "coordinator")

    def __init__(self, view: Any) -> None:
        self.vid = tuple(view.vid)
        self.members = tuple(view.members)
        self.primary = view.primary
        self.coordinator = view.members[0]

    def __repr__(self) -> str:
        return f"ViewInfo(vid={self.vid}, members={list(self.members)}, primary={self.primary})"


class Engine(StatusRound, StateTransfer):
    def __init__(
        self,
        cls: type,
        me: str,
        cast: Callable[[bytes], None],
        send: Callable[[str, bytes], None],
        init_args: tuple = (),
        init_kwargs: dict | None = None,
        schedule: Callable[[Callable[[], None]], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        entropy: Callable[[int], bytes] = os.urandom,
        full_tracebacks: bool = False,
        max_message: int | None = None,
        on_fatal: Callable[[str, str], None] | None = None,
        policy: Policy | None = None,
        hasher: Hasher | None = None,
        leave: Callable[[str], None] | None = None,
    ) -> None:
        """`schedule(fn)` runs `fn` once the driver has handled the current batch of input (the
        end of an event-loop tick): calls submitted meanwhile leave as one BATCH cast. Without
        it every call is cast at once. The core reads no clock and no entropy of its own:
        `clock` (transfer reports), `wallclock` (`replication.now()` as the ordering replica
        chose it) and `entropy` (seeds, transfer ids) come from the driver, so a simulator can
        run it in virtual time. `policy`, `hasher`, `leave`: `divergence.Checker`'s."""
        self.info = class_info(cls)
        #: tracebacks of user exceptions as clients see them: by default file names without
        #: directories (the reply cache holds them, and must hash alike at every replica)
        self.full_tracebacks = full_tracebacks
        #: the group's largest message (the frag layer's max_size), or None for no limit: a call
        #: whose arguments, or whose result, would not fit fails at once with MessageTooLarge
        self.max_message = max_message
        #: what this replica serves, compared in the status round: (fingerprint, class name)
        self.identity = (self.info.fingerprint(), self.info.name)
        self.identities: dict[str, tuple[str, str]] = {}  # this view: member -> its identity
        #: why this replica cannot go on (another class than the group's, a constructor or a
        #: state install that raised): told to the driver once, which stops the replica
        self.fatal: str | None = None
        self._on_fatal = on_fatal
        self.cls = cls
        self.me = me
        self._cast = cast
        self._send = send
        self._schedule = schedule
        self._clock = clock
        self._wallclock = wallclock
        self._entropy = entropy
        self.outbox: list[list] = []
        self.init_args = init_args
        self.init_kwargs = init_kwargs or {}
        self.obj: Any = None
        self.ready = False
        self.excluded = False
        self.view: Any = None
        self.views: list[tuple] = []  # vids installed, in order
        self.prev_members: tuple[str, ...] = ()
        self.pos = 0  # ordered deliveries in the current view
        self.safe = 0  # the first `safe` of them are uniform
        self.applied = 0  # updates applied (the passive style's exec numbers)
        self.cache = ReplyCache()
        self.waiters: dict[tuple, list[Reply]] = {}
        self.unsafe: deque = deque()  # (pos, key or None, reply, status, body), pos increasing
        self.unsafe_keys: set[tuple] = set()
        self.buffer: list[tuple] = []  # (view index, pos, origin, msg) until the snapshot arrives
        self.passive_pending: OrderedDict[tuple, list] = OrderedDict()
        #: passive coordinator: invocations run whose PUPD is not delivered yet (no second run,
        #: and no reply before the PUPD is Safe)
        self.executing: set[tuple] = set()
        # State custody (see docs/replication.md): the state is never dropped, only replaced.
        self.held_vid: tuple | None = None  # last primary view we were ready in
        self.seen: tuple | None = None  # last primary view known to have had a ready member
        self.unavailable: str | None = None  # why no member of this view can donate
        self.statuses: dict[str, tuple] = {}  # this view: member -> (held, seen, applied, ready)
        self.newcomers_waiting: set[str] = set()
        self.status_pos: int | None = None  # position of our own STATUS in this view
        self.gate = False  # our STATUS is Safe in this view: replies may leave
        self.resolved = False
        self.forming = False  # a founder of a new group (first view, no previous primary)
        self.elected: str | None = None
        self.continuous_since = 0  # index in `views` since which we saw every view's deliveries
        self.served: set[str] = set()  # members this replica sends (or sent) the state in this view
        self.sessions: dict[int, Session] = {}  # donor side, by transfer id
        self.serve_pending: list[str] = []  # recipients of the snapshot cut at this tick's end
        self.incoming: Incoming | None = None  # joiner side
        #: joiner side: a snapshot whose cut we have not delivered up to yet
        self.complete: tuple | None = None
        self.xfer_log: list[dict] = []  # finished transfers (size, donor, vid) for reports
        self.version = 0  # counts changes of the replicated state, for the digest cache
        self._digest: tuple[int, str] | None = None
        self.stats = {"executed": 0, "duplicates": 0, "queries": 0, "stale": 0}
        self.checks = Checker(self, policy or Policy(), hasher, leave)

    # --- client side -----------------------------------------------------------------------------

    def submit(
        self,
        cid: bytes,
        rid: int,
        method: str,
        payload: bytes,
        done: int,
        local: bool,
        reply: Reply,
    ) -> None:
        m = self.info.methods.get(method)
        if m is None or (local and m.kind != "local"):
            e = AttributeError(f"{self.cls.__name__} has no replicated method {method!r}")
            return reply(st.ERROR, st.encode_exception(e, ""))
        if self.excluded or self.view is None or not self.view.primary:
            return reply(st.NO_QUORUM, f"{self.me} is not in a primary view")
        if self.unavailable is not None and not self.ready:
            return reply(st.NO_QUORUM, f"{self.me}: {self.unavailable}")
        if m.kind == "local":
            if not self.ready:
                return reply(st.RETRY, f"{self.me} is still receiving its state")
            self.stats["queries"] += 1
            status, body = self._run(method, payload, 0.0, 0)
            return reply(status, body)
        if self.max_message is not None and len(payload) + st.MESSAGE_OVERHEAD > self.max_message:
            return reply(
                st.ERROR,
                st.encode_exception(
                    st.too_large(f"the arguments of {method}()", len(payload), self.max_message), ""
                ),
            )
        now, seed = self._wallclock(), int.from_bytes(self._entropy(6), "big")
        if m.kind == "query":
            key = (cid, rid, "q")
            self.waiters.setdefault(key, []).append(reply)
            self._submit_ordered([QRY, cid, rid, method, payload, now, seed])
            return
        key = (cid, rid)
        if self.ready and key not in self.executing:
            entry = self.cache.get(cid, rid)
            if entry is not None and key not in self.unsafe_keys:
                return reply(*entry)
            if entry is None and self.cache.is_stale(cid, rid):
                return reply(st.STALE, f"request {rid} already completed and was forgotten")
            if entry is not None:
                self.waiters.setdefault(key, []).append(reply)
                return
        first = key not in self.waiters
        self.waiters.setdefault(key, []).append(reply)
        if first:  # a second waiter (a retry racing its original here) needs no second cast
            self._submit_ordered([INV, cid, rid, method, payload, done, now, seed])

    def _submit_ordered(self, msg: list) -> None:
        if self._schedule is None:
            self._cast(_pack(msg))
            return
        if not self.outbox:
            self._schedule(self.flush_outbox)
        self.outbox.append(msg)

    def flush_outbox(self) -> None:
        out, self.outbox = self.outbox, []
        if len(out) == 1:
            self._cast(_pack(out[0]))
            return
        limit = self.max_message
        batch: list[list] = []
        size = 0
        for msg in out:  # batches stay within the group's message size
            n = len(msg[4]) + st.MESSAGE_OVERHEAD if msg[0] in (INV, QRY) else st.MESSAGE_OVERHEAD
            if batch and limit is not None and size + n > limit:
                self._cast(_pack(batch[0]) if len(batch) == 1 else _pack([BATCH, batch]))
                batch, size = [], 0
            batch.append(msg)
            size += n
        if batch:
            self._cast(_pack(batch[0]) if len(batch) == 1 else _pack([BATCH, batch]))

    # --- group events ----------------------------------------------------------------------------

    def on_view(self, view: Any) -> None:
        first = self.view is None
        continuous = (
            not first and view.prev is not None and tuple(view.prev) == tuple(self.view.vid)
        )
        if continuous and not self.ready and self.complete is not None:
            self._install(*self.complete)  # its cut's view has ended: we delivered past the cut
        if not first and self.ready and not continuous:
            # We were cut off and the group moved on without us (a pause, a partition): our state
            # may be stale. Custody: keep it until a newer one is installed (it may be the only
            # one left), serve nothing meanwhile; the view's status round finds the current one.
            log.warning(
                "%s: missed views %s..%s; keeping this state (applied %d) until a current one "
                "is installed",
                self.me,
                self.views[-1],
                tuple(view.vid),
                self.applied,
            )
            self.ready = False
            self.buffer = []
            for item in self.unsafe:
                if item[2] is not None:
                    item[2](st.RETRY, f"{self.me} is receiving a fresh state")
            self.unsafe.clear()
            self.unsafe_keys.clear()
        elif not first and view.primary and self.me in view.members:
            # what the old view delivered is uniform (every survivor delivered it), but replies
            # wait for this view's status round to be Safe (see _on_status)
            self.unsafe = deque((-1, *item[1:]) for item in self.unsafe)
        self.prev_members = () if first or not continuous else tuple(self.view.members)
        if first or not continuous:
            self.continuous_since = len(self.views)
        self.view = view
        vid = tuple(view.vid)
        self.views.append(vid)
        self.pos = 0
        self.safe = 0
        self.gate = False
        self.status_pos = None
        self.statuses = {}
        self.identities = {}
        #: members new in this view whose STATUS has not arrived (the donor waits for them)
        self.newcomers_waiting = (
            {m for m in view.members if m not in self.prev_members} if self.prev_members else set()
        )
        self.resolved = False
        self.elected = None
        self.unavailable = None
        self.complete = None
        self.serve_pending = []
        if self.ready and continuous:  # transfers go on across views, with those still here
            for xid, session in list(self.sessions.items()):
                session.resume(view.members)
                if session.finished:
                    del self.sessions[xid]
        else:
            self.sessions.clear()
        self.served = {m for session in self.sessions.values() for m in session.recipients}
        inc = self.incoming
        if inc is not None and (not continuous or inc.donor not in view.members):
            self.incoming = None
        # A group forming from its seeds starts from a fresh object, but only once the status
        # round shows that no member holds a state: replicas that all left (hung, restarted
        # processes of a partitioned group) may come back as the founders of a new lineage.
        if first:  # (a group of one is primary at once: its first view follows a founder's
            # pseudo-view, the only views with ltime 0)
            self.forming = tuple(view.last_primary_vid) == (0, "") or (
                view.prev is not None and view.prev[0] == 0
            )
        elif self.ready:
            self.forming = False
        if self.ready:
            if view.primary:
                self.held_vid = vid
                self.seen = vid
            self._upcall(view)
            if self.info.style == "passive" and view.members[0] == self.me:
                for msg in list(self.passive_pending.values()):
                    self._passive_execute(msg)
        if view.primary and self.me in view.members:
            held = list(self.held_vid) if self.held_vid and self.obj is not None else None
            seen = list(self.seen) if self.seen else None
            ready = READY if self.ready else FORMING if self.forming else 0
            msg = [STATUS, list(vid), held, seen, self.applied, ready, list(self.identity)]
            self._cast(_pack(msg))

    def on_deliver(self, origin: str, payload: bytes) -> None:
        pos = self.pos
        self.pos = pos + 1
        try:
            msg = _unpack(payload)
        except Exception:
            log.error("%s: undecodable ordered message from %s dropped", self.me, origin)
            return
        if msg[0] == DIG:
            return self.checks.on_report(origin, msg)
        if msg[0] == STATUS:
            self._on_status(origin, pos, msg)
            if not self.ready and self.complete is not None and self.pos >= self.complete[2]:
                self._install(*self.complete)
            return
        if not self.ready:
            vi = len(self.views) - 1
            if msg[0] == BATCH:
                self.buffer.extend((vi, pos, origin, m) for m in msg[1])
            else:
                self.buffer.append((vi, pos, origin, msg))
            if self.complete is not None and self.pos >= self.complete[2]:
                self._install(*self.complete)
            return
        if msg[0] == BATCH:
            for m in msg[1]:
                self._apply(pos, origin, m, current=True)
        else:
            self._apply(pos, origin, msg, current=True)

    def on_safe(self, count: int) -> None:
        self.safe = count
        if not self.gate:
            if self.status_pos is None or count <= self.status_pos:
                return  # our status in this view is not uniform yet: no reply may leave
            self.gate = True
        unsafe = self.unsafe
        while unsafe and unsafe[0][0] < count:
            self._release(unsafe.popleft())

    def on_exit(self, reason: str) -> None:
        """Excluded or left: serve nothing, but keep the state (custody) for a rejoin."""
        self.excluded = True
        self.ready = False
        self.buffer = []
        self.fail_waiters(st.NO_QUORUM, f"{self.me} left the group ({reason}); retry elsewhere")
        self.unsafe.clear()
        self.unsafe_keys.clear()

    def reattach(self, cast: Callable[[bytes], None], send: Callable[[str, bytes], None]) -> None:
        """The replica rejoins the group as a new member: same core, same kept state. Its first
        view is not continuous with the last, so it asks for the current state (and can donate
        its own if it turns out to be the latest)."""
        self._cast, self._send = cast, send
        self.excluded = False
        self.outbox = []

    def fail_waiters(self, status: int, why: str) -> None:
        """Answer every waiting call with `status` (the client retries elsewhere, same request id)."""
        waiters, self.waiters = self.waiters, {}
        for replies in waiters.values():
            for r in replies:
                r(status, why)
        kept: deque = deque()
        for item in self.unsafe:
            if item[2] is not None:
                item[2](status, why)
            else:
                kept.append(item)
        self.unsafe = kept

    def on_send(self, origin: str, payload: bytes) -> None:
        try:
            msg = _unpack(payload)
            kind = msg[0]
        except Exception:
            log.error("%s: undecodable point-to-point message from %s dropped", self.me, origin)
            return
        try:
            if kind == CHUNK:
                self._on_chunk(origin, msg)
            elif kind == ACK:
                session = self.sessions.get(msg[1])
                if session is not None:
                    session.ack(origin, msg[2])
                    if session.finished:
                        del self.sessions[msg[1]]
            elif kind == HDR:
                self._on_header(origin, msg)
            elif kind == END:
                self._on_end(origin, msg)
            elif kind == REQ:
                self.checks.on_request(origin, msg)  # a diverged replica's, or _on_request
        except (TypeError, ValueError, IndexError, KeyError) as e:
            log.error(
                "%s: malformed state-transfer message from %s dropped: %r", self.me, origin, e
            )

    # --- ordered execution -----------------------------------------------------------------------

    def _apply(self, pos: int, origin: str, msg: list, current: bool) -> None:
        self.version += 1
        kind = msg[0]
        if kind == INV:
            _, cid, rid, method, payload, done, now, seed = msg
            key = (cid, rid)
            self.cache.forget_upto(cid, done)
            if self.cache.get(cid, rid) is not None:
                self.stats["duplicates"] += 1
            elif key in self.executing:  # passive: its PUPD is on the way and settles it
                self.stats["duplicates"] += 1
                return
            elif self.cache.is_stale(cid, rid):
                self.stats["stale"] += 1
                self._settle_stale(key)
                return
            elif self.info.style == "passive":
                self.passive_pending[key] = msg
                if self.view.members[0] == self.me:
                    self._passive_execute(msg)
                return
            else:
                self.stats["executed"] += 1
                self.applied += 1
                self.cache.store(cid, rid, self._run(method, payload, now, seed))
                self.checks.on_update(method, now)
            self._settle(key, pos, current)
        elif kind == QRY:
            _, cid, rid, method, payload, now, seed = msg
            key = (cid, rid, "q")
            replies = self.waiters.pop(key, None) if origin == self.me else None
            if replies:
                self.stats["queries"] += 1
                status, body = self._run(method, payload, now, seed)
                for r in replies:
                    self._hold(pos, None, r, status, body, current)
        elif kind == PUPD:
            _, exec_no, cid, rid, status, body, update, delta = msg
            key = (cid, rid)
            self.passive_pending.pop(key, None)
            self.executing.discard(key)
            if exec_no > self.applied:  # not the coordinator (it applied when it ran the call)
                self.applied = exec_no
                self._apply_update(update, delta)
            if self.cache.get(cid, rid) is None:
                self.cache.store(cid, rid, (status, body))
                self.stats["executed"] += 1
            self._settle(key, pos, current)

    def _run(self, method: str, payload: bytes, now: float, seed: int) -> tuple[int, bytes]:
        self.version += 1
        try:
            args, kwargs = codec.loads(payload)
            fn = self.checks.guard(method, getattr(self.obj, method))  # queries: no changes
            result = run_in_context(now, seed, fn, *args, **kwargs)
        except Exception as e:
            tb = (
                traceback.format_exc(limit=-4)
                if self.full_tracebacks
                else st.short_traceback(e.__traceback__)
            )
            return st.ERROR, st.encode_exception(e, tb)
        try:
            body = codec.dumps(result, root=f"result of {method}()")
        except codec.SerializationError as e:
            return st.ERROR, st.encode_exception(e, "")
        if self.max_message is not None and len(body) + st.MESSAGE_OVERHEAD > self.max_message:
            e = st.too_large(f"the result of {method}()", len(body), self.max_message)
            return st.ERROR, st.encode_exception(e, "")
        return st.OK, body

    def _passive_execute(self, msg: list) -> None:
        _, cid, rid, method, payload, done, now, seed = msg
        key = (cid, rid)
        if self.cache.get(cid, rid) is not None or key in self.executing:
            return
        status, body = self._run(method, payload, now, seed)
        if hasattr(self.obj, "get_update"):
            update, delta = codec.dumps(self.obj.get_update(), root="update"), True
        else:
            update, delta = self._state_bytes(), False
        self.applied += 1
        self.executing.add(key)
        self._cast(_pack([PUPD, self.applied, cid, rid, status, body, update, delta]))

    def _apply_update(self, update: bytes, delta: bool) -> None:
        self.version += 1
        if delta:
            self.obj.set_update(codec.loads(update))
        else:
            self._set_state_bytes(update)

    # --- replies held until uniform --------------------------------------------------------------

    def _settle(self, key: tuple, pos: int, current: bool) -> None:
        replies = self.waiters.pop(key, None)
        entry = self.cache.get(*key)
        if current and (pos >= self.safe or not self.gate):
            if key not in self.unsafe_keys:
                # the entry is kept with the item: the cache's cap may evict it before Safe, and
                # the original call must still get its result (local state: no divergence)
                self.unsafe_keys.add(key)
                kept = entry if entry is not None else (-1, b"")
                self.unsafe.append((pos, key, None, *kept))
            if replies:
                self.waiters[key] = replies
            return
        self._answer(key, replies, entry)

    def _answer(self, key: tuple, replies: list[Reply] | None, entry: Any) -> None:
        """Reply from the cache entry, or STALE when it was pruned meanwhile (the client
        completed the request elsewhere and moved on)."""
        for r in replies or ():
            if entry is not None:
                r(*entry)
            else:
                r(st.STALE, f"request {key[1]} already completed and was forgotten")

    def _settle_stale(self, key: tuple) -> None:
        self._answer(key, self.waiters.pop(key, None), None)

    def _hold(self, pos: int, key, reply: Reply, status: int, body: bytes, current: bool) -> None:
        if current and (pos >= self.safe or not self.gate):
            self.unsafe.append((pos, key, reply, status, body))
        else:
            reply(status, body)

    def _release(self, item: tuple) -> None:
        _pos, key, reply, status, body = item
        if reply is not None:
            reply(status, body)
            return
        self.unsafe_keys.discard(key)
        entry = self.cache.get(*key)
        if entry is None and status >= 0:
            entry = (status, body)  # evicted by the cache's cap meanwhile: the kept copy
        self._answer(key, self.waiters.pop(key, None), entry)

    # --- state -----------------------------------------------------------------------------------

    def _state_bytes(self) -> bytes:
        obj = self.obj
        state = obj.get_state() if hasattr(obj, "get_state") else obj.__dict__
        return codec.dumps(state, root="state", attrs=True)

    def _set_state_bytes(self, data: bytes) -> None:
        self._set_state_value(self.obj, codec.loads(data))

    @staticmethod
    def _set_state_value(obj: Any, state: Any) -> None:
        if hasattr(obj, "set_state"):
            obj.set_state(state)
        else:
            obj.__dict__.clear()
            obj.__dict__.update(state)

    def state_digest(self) -> str:
        """Hash of the replicated state (user state, reply cache, applied count): equal on replicas
        that applied the same prefix (R1). Streamed (`cohort.state.stream`), so a large state is hashed
        a record at a time, and remembered until the next ordered message or install."""
        source = self.digest_source()
        if isinstance(source, str):
            return source
        version, frozen = source
        digest = stream.digest(frozen)
        self.remember_digest(version, digest)
        return digest

    def digest_source(self) -> str | tuple[int, Any]:
        """The remembered digest, or (version, a frozen copy of what to hash): the driver hashes
        the copy off the core (a GiB of state takes a second or more) and hands the result back
        with `remember_digest`."""
        if self._digest is not None and self._digest[0] == self.version:
            return self._digest[1]
        obj = self.obj
        state = obj.get_state() if hasattr(obj, "get_state") else obj.__dict__
        return self.version, stream.freeze([state, self.cache.dump(), self.applied])

    def remember_digest(self, version: int, digest: str) -> None:
        if version == self.version:
            self._digest = (version, digest)

    def _upcall(self, view: Any) -> None:
        hook = getattr(self.obj, "on_view_change", None)
        if hook is not None:
            try:
                hook(ViewInfo(view))
            except Exception:
                log.exception("%s: on_view_change raised", self.me)


def _vid(v: Any) -> tuple | None:
    return tuple(v) if v else None
