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
Point-to-point messages (state transfer, within one view):
  REQ [12, vid]  HDR [11, xid, vid, pos, applied, chunks, size, digest]  CHUNK [10, xid, i, data]
  ACK [14, xid, i]  NOTREADY [13]

When a reply is safe (design.md §4 property 10): an invocation is answered once the stack reports it
`Safe` (delivered and ordered at every member), or once the view it was delivered in has ended and
we moved on with the primary — then every survivor delivered it too (virtual synchrony).

State transfer: a joiner buffers every ordered delivery from its first view on, tagged (view, pos).
The donor (the oldest member that was in the previous view) pushes a snapshot cut at the view that
admitted the joiner; if a view change interrupts it, the joiner asks the oldest member of the new view
for a snapshot cut at that member's current (view, pos). Either way the joiner applies exactly the
buffered deliveries after the cut.
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

from orb import errors as st
from replication.api import class_info, run_in_context
from replication.cache import ReplyCache
from state import codec
from state import snapshot as snap

log = logging.getLogger("cohort.replica")

INV, QRY, PUPD, BATCH = 0, 1, 2, 3
CHUNK, HDR, REQ, NOTREADY, ACK = 10, 11, 12, 13, 14
#: state-transfer chunks in flight per joiner
WINDOW = 8
CHUNK_SIZE = 32 * 1024

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


class Engine:
    def __init__(
        self,
        cls: type,
        me: str,
        cast: Callable[[bytes], None],
        send: Callable[[str, bytes], None],
        init_args: tuple = (),
        init_kwargs: dict | None = None,
        schedule: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """`schedule(fn)` runs `fn` once the driver has handled the current batch of input (the
        end of an event-loop tick): calls submitted meanwhile leave as one BATCH cast. Without
        it every call is cast at once."""
        self.info = class_info(cls)
        self.cls = cls
        self.me = me
        self._cast = cast
        self._send = send
        self._schedule = schedule
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
        self.outgoing: dict[str, list] = {}  # donor side: joiner -> [xid, chunks, next, acked]
        self.incoming: Any = None  # joiner side: (xid, donor, vid, pos, applied, Assembler)
        self.complete: Any = (
            None  # joiner side: a snapshot whose cut we have not delivered up to yet
        )
        self.xfer_log: list[dict] = []  # finished transfers (size, chunks, donor, vid) for reports
        self._xfer_started = 0.0
        self.stats = {"executed": 0, "duplicates": 0, "queries": 0, "stale": 0}

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
        if m.kind == "local":
            if not self.ready:
                return reply(st.RETRY, f"{self.me} is still receiving its state")
            self.stats["queries"] += 1
            status, body = self._run(method, payload, 0.0, 0)
            return reply(status, body)
        now, seed = _now(), int.from_bytes(os.urandom(6), "big")
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
        elif out:
            self._cast(_pack([BATCH, out]))

    # --- group events ----------------------------------------------------------------------------

    def on_view(self, view: Any) -> None:
        first = self.view is None
        if not first and self.ready and (view.prev is None or tuple(view.prev) != self.views[-1]):
            # We were cut off and the group moved on without us (a pause, a partition): our state
            # is stale. The donor sees us as a newcomer and sends a fresh snapshot.
            log.warning(
                "%s: missed views %s..%s; waiting for a fresh state",
                self.me,
                self.views[-1],
                tuple(view.vid),
            )
            self.ready = False
            self.obj = None
            self.buffer = []
            for item in self.unsafe:
                if item[2] is not None:
                    item[2](st.RETRY, f"{self.me} is receiving a fresh state")
            self.unsafe.clear()
            self.unsafe_keys.clear()
        elif not first and view.primary and self.me in view.members:
            self._release_all()
        self.prev_members = () if first else tuple(self.view.members)
        self.view = view
        self.views.append(tuple(view.vid))
        self.pos = 0
        self.safe = 0
        self.outgoing.clear()
        if first and tuple(view.last_primary_vid) == (0, ""):
            self.obj = self.cls(*self.init_args, **self.init_kwargs)  # the group is forming
            self.ready = True
            log.info("%s: formed group with %s", self.me, list(view.members))
        if not self.ready:
            self.complete = None
            if not first:  # a push we may not get (or one that died with the old view): ask
                self._request_state()
        else:
            self._donate()
            self._upcall(view)
            if self.info.style == "passive" and view.members[0] == self.me:
                for msg in list(self.passive_pending.values()):
                    self._passive_execute(msg)

    def on_deliver(self, origin: str, payload: bytes) -> None:
        pos = self.pos
        self.pos = pos + 1
        try:
            msg = _unpack(payload)
        except Exception:
            log.error("%s: undecodable ordered message from %s dropped", self.me, origin)
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
        unsafe = self.unsafe
        while unsafe and unsafe[0][0] < count:
            self._release(unsafe.popleft())

    def on_exit(self, reason: str) -> None:
        self.excluded = True
        self.ready = False
        self.fail_waiters(st.NO_QUORUM, f"{self.me} left the group ({reason}); retry elsewhere")
        self.unsafe.clear()
        self.unsafe_keys.clear()

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
        if kind == CHUNK:
            self._on_chunk(origin, msg)
        elif kind == ACK:
            self._on_ack(origin, msg)
        elif kind == HDR:
            self._on_header(origin, msg)
        elif kind == REQ:
            if self.ready and tuple(msg[1]) == tuple(self.view.vid):
                self._start_transfer(origin)
            else:
                self._send(origin, _pack([NOTREADY]))
        elif kind == NOTREADY:
            self._request_state(after=origin)

    # --- ordered execution -----------------------------------------------------------------------

    def _apply(self, pos: int, origin: str, msg: list, current: bool) -> None:
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
        try:
            args, kwargs = codec.loads(payload)
            result = run_in_context(now, seed, getattr(self.obj, method), *args, **kwargs)
        except Exception as e:
            return st.ERROR, st.encode_exception(e, traceback.format_exc(limit=-4))
        try:
            return st.OK, codec.dumps(result, root=f"result of {method}()")
        except codec.SerializationError as e:
            return st.ERROR, st.encode_exception(e, "")

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
        if delta:
            self.obj.set_update(codec.loads(update))
        else:
            self._set_state_bytes(update)

    # --- replies held until uniform --------------------------------------------------------------

    def _settle(self, key: tuple, pos: int, current: bool) -> None:
        replies = self.waiters.pop(key, None)
        entry = self.cache.get(*key)
        if current and pos >= self.safe:
            if key not in self.unsafe_keys:
                self.unsafe_keys.add(key)
                self.unsafe.append((pos, key, None, 0, b""))
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
        if current and pos >= self.safe:
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
        self._answer(key, self.waiters.pop(key, None), entry)

    def _release_all(self) -> None:
        while self.unsafe:
            self._release(self.unsafe.popleft())

    # --- state -----------------------------------------------------------------------------------

    def _state_bytes(self) -> bytes:
        obj = self.obj
        state = obj.get_state() if hasattr(obj, "get_state") else obj.__dict__
        return codec.dumps(state, root="state", attrs=True)

    def _set_state_bytes(self, data: bytes) -> None:
        state = codec.loads(data)
        if hasattr(self.obj, "set_state"):
            self.obj.set_state(state)
        else:
            self.obj.__dict__.clear()
            self.obj.__dict__.update(state)

    def snapshot(self) -> bytes:
        pending = list(self.passive_pending.values())
        return _pack([self._state_bytes(), self.cache.dump(), self.applied, pending])

    def state_digest(self) -> str:
        """Hash of the replicated state (user state, reply cache, applied count): equal on replicas
        that applied the same prefix (R1)."""
        return snap.digest(_pack([self._state_bytes(), self.cache.dump(), self.applied])).hex()

    def _upcall(self, view: Any) -> None:
        hook = getattr(self.obj, "on_view_change", None)
        if hook is not None:
            try:
                hook(ViewInfo(view))
            except Exception:
                log.exception("%s: on_view_change raised", self.me)

    # --- state transfer: donor side --------------------------------------------------------------

    def _donate(self) -> None:
        newcomers = [m for m in self.view.members if m not in self.prev_members]
        if not newcomers or not self.prev_members:
            return
        donor = next((m for m in self.view.members if m in self.prev_members), None)
        if donor == self.me:
            for j in newcomers:
                self._start_transfer(j)

    def _start_transfer(self, joiner: str) -> None:
        data = self.snapshot()
        chunks = snap.split(data, CHUNK_SIZE)
        xid = int.from_bytes(os.urandom(4), "big")
        vid = list(self.view.vid)
        hdr = [HDR, xid, vid, self.pos, self.applied, len(chunks), len(data), snap.digest(data)]
        self._send(joiner, _pack(hdr))
        self.outgoing[joiner] = [xid, chunks, 0, 0]
        log.info(
            "%s: sending state to %s: %d bytes in %d chunks, cut at view %s pos %d",
            self.me,
            joiner,
            len(data),
            len(chunks),
            tuple(vid),
            self.pos,
        )
        self._pump(joiner)

    def _pump(self, joiner: str) -> None:
        xfer = self.outgoing.get(joiner)
        if xfer is None:
            return
        xid, chunks, nxt, acked = xfer
        while nxt < len(chunks) and nxt < acked + WINDOW:
            self._send(joiner, _pack([CHUNK, xid, nxt, chunks[nxt]]))
            nxt += 1
        xfer[2] = nxt
        if acked >= len(chunks):
            del self.outgoing[joiner]

    def _on_ack(self, origin: str, msg: list) -> None:
        xfer = self.outgoing.get(origin)
        if xfer is not None and xfer[0] == msg[1]:
            xfer[3] = max(xfer[3], msg[2] + 1)
            self._pump(origin)

    # --- state transfer: joiner side -------------------------------------------------------------

    def _request_state(self, after: str | None = None) -> None:
        """Ask the oldest member (or the next one after a member that could not serve)."""
        self.incoming = None
        members = [m for m in self.view.members if m != self.me]
        if after in members:
            members = members[members.index(after) + 1 :]
        if members and self.me in self.view.members:
            self._send(members[0], _pack([REQ, list(self.view.vid)]))

    def _on_header(self, origin: str, msg: list) -> None:
        if self.ready:
            return
        _, xid, vid, pos, applied, chunks, size, digest = msg
        self.incoming = (
            xid,
            origin,
            tuple(vid),
            pos,
            applied,
            snap.Assembler(chunks, size, digest),
        )
        self._xfer_started = time.monotonic()  # for the transfer report only

    def _on_chunk(self, origin: str, msg: list) -> None:
        inc = self.incoming
        if inc is None or inc[0] != msg[1] or self.ready:
            return
        xid, donor, vid, pos, applied, asm = inc
        try:
            complete = asm.add(msg[2], msg[3])
        except snap.SnapshotError as e:
            log.error("%s: bad state chunk from %s: %s; asking again", self.me, donor, e)
            return self._request_state()
        self._send(donor, _pack([ACK, xid, msg[2]]))
        if asm.received % 64 == 0 and not complete:  # large states: a line every 2 MiB
            log.info(
                "%s: state transfer from %s: %d of %d bytes (%.0f%%)",
                self.me,
                donor,
                asm.bytes_received,
                asm.total_size,
                100 * asm.progress(),
            )
        if not complete:
            return
        self.incoming = None
        if vid != tuple(self.view.vid):
            return self._request_state()
        if self.pos < pos:
            # Install only once we delivered up to the cut ourselves: then our order of those
            # messages is the donor's (both followed the sequencer), even if the donor crashes.
            self.complete = (donor, vid, pos, asm.result())
        else:
            self._install(donor, vid, pos, asm.result())

    def _install(self, donor: str, vid: tuple, pos: int, data: bytes) -> None:
        user, cache, applied, pending = _unpack(data)
        self.obj = self.cls(*self.init_args, **self.init_kwargs)
        self._set_state_bytes(user)
        self.cache = ReplyCache.load(cache)
        self.applied = applied
        self.passive_pending = OrderedDict(((m[1], m[2]), m) for m in pending)
        self.incoming = self.complete = None
        self.ready = True
        seconds = time.monotonic() - self._xfer_started
        self.xfer_log.append(
            {"donor": donor, "bytes": len(data), "vid": list(vid), "pos": pos, "seconds": seconds}
        )
        log.info(
            "%s: state received from %s (%d bytes), cut at view %s pos %d",
            self.me,
            donor,
            len(data),
            vid,
            pos,
        )
        cut = self.views.index(vid) if vid in self.views else len(self.views) - 1
        last = len(self.views) - 1
        buffered, self.buffer = self.buffer, []
        for vi, p, _origin, msg in buffered:
            # updates before the cut in this view are in the snapshot but maybe not yet uniform:
            # hold their replies (and retries of them) until they are Safe here
            if vi == last and vi == cut and p < pos and msg[0] in (INV, PUPD) and p >= self.safe:
                key = (msg[1], msg[2]) if msg[0] == INV else (msg[2], msg[3])
                if key not in self.unsafe_keys and self.cache.get(*key) is not None:
                    self.unsafe_keys.add(key)
                    self.unsafe.append((p, key, None, 0, b""))
        for key in [k for k in self.waiters if len(k) == 2 and self.cache.get(*k) is not None]:
            if key not in self.unsafe_keys:
                self._settle(key, -1, current=True)  # executed in an earlier view: uniform
        for vi, p, origin, msg in buffered:
            if vi < cut or (vi == cut and p < pos):
                if msg[0] == QRY and origin == self.me:  # answered by nobody: let the client retry
                    for r in self.waiters.pop((msg[1], msg[2], "q"), ()):
                        r(st.RETRY, f"{self.me} was receiving its state")
                continue
            self._apply(p, origin, msg, current=(vi == last))
        self._upcall(self.view)
        if self.info.style == "passive" and self.view.members[0] == self.me:
            for msg in list(self.passive_pending.values()):
                self._passive_execute(msg)


def _now() -> float:
    return time.time()
