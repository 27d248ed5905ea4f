"""Pyro5's wire protocol, spoken by the replica's asyncio server and the client's pooled connections.

Why not Pyro5's own Daemon and Proxy: a replica answers a call only once the invocation is ordered
and uniform, which happens on the stack's asyncio loop. Pyro5's threaded daemon would park one
worker thread per outstanding call and pay two thread hand-offs per call (the measurement is in the README, `cohort bench calls`). Speaking
the same protocol from an asyncio server keeps thousands of outstanding calls on one loop, and a
plain `Pyro5.api.Proxy` can still connect to a replica. Only Pyro5's safe serializers are accepted
(msgpack, serpent, json); marshal, pickle and unknown ids are refused with a readable MSG_CONNECTFAIL.

Theory of operation (hardening). The loop also runs the replica's heartbeats, so a client must never
make it parse, allocate or wait without bound. Per message: the 40-byte header is checked against
`ServerLimits` (`cohort.orb.inbound.parse_header`) before its body is read; a small body is read and
decoded inline (the common call pays nothing extra); a large one first takes room in a byte budget
shared by all connections, then is inflated (bounded) and decoded on one worker thread. Per
connection: a sweep task cuts a connection that completes no message for `idle_timeout`
(`handshake_timeout` before its first), or that stalls inside a message or a reply for
`message_timeout` (slowloris). Per server: past `connection_cap()` connections, a newcomer gets a
MSG_CONNECTFAIL and is closed, so accept() never runs out of file descriptors.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import reprlib
import socket
import ssl as ssllib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cohort.orb.budget import ByteBudget
from cohort.orb.errors import for_plain_pyro
from cohort.orb.framing import _JSON, SAFE_SERIALIZERS, _frame
from cohort.orb.inbound import (
    HEADER_SIZE,
    Header,
    Refused,
    decode,
    inflate,
    parse_annotations,
    parse_header,
)
from cohort.orb.limits import ServerLimits
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol

log = logging.getLogger("cohort.orb")

#: one exposed object: method name -> callable (sync, or async for calls that wait on the group)
Methods = dict[str, Callable[..., Any]]


# phases of a connection, for the idle/slowloris sweep
_IDLE, _BODY, _BUSY, _WRITE, _UNTIMED, _CUT = range(6)
#: compressed bodies up to this size are inflated inline (zlib's ratio tops out near 1:1032, so the
#: output stays near 1 MiB, about a millisecond of work); bigger ones go to the decode worker
INLINE_COMPRESSED = 1 << 10
#: refusals of excess connections waiting for the client's first bytes, at most, and how long
MAX_REFUSING = 16
REFUSAL_WAIT = 0.5
_SLOW_FLAGS = protocol.FLAGS_COMPRESSED
_CAP_REFUSAL = "server at its connection limit ({} connections); try another replica or retry later"


class _Conn:
    """Per-connection state the sweep reads: which phase, since when, served a message yet."""

    __slots__ = ("writer", "phase", "since", "served")

    def __init__(self, writer: asyncio.StreamWriter, now: float) -> None:
        self.writer = writer
        self.phase = _IDLE
        self.since = now
        self.served = False


class WireServer:
    """An asyncio server for Pyro5 clients. `objects` maps an object id to its exposed methods.

    Every input is bounded by `limits` (see `cohort.orb.limits`) before it is read or decoded, and every
    dropped input is counted in `counters` under an `orb.*` name: `orb.too_large`,
    `orb.expansion`, `orb.bad_annotation`, `orb.bad_message`, `orb.bad_connection`,
    `orb.refused_serializer`, `orb.refused_connection`, `orb.idle_timeout`,
    `orb.message_timeout`. Drops are logged at most once per kind per `limits.log_interval`,
    without a traceback, so an attack cannot flood the log.
    """

    def __init__(self, objects: dict[str, Methods], limits: ServerLimits | None = None) -> None:
        self.objects = objects
        self.limits = limits if limits is not None else ServerLimits()
        self.counters: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._cap = self.limits.connection_cap()
        self._refusing: deque[asyncio.StreamWriter] = deque()
        self._budget = ByteBudget(self.limits.max_inflight_bytes)
        self._inline = {i: self.limits.inline_max(i) for i in SAFE_SERIALIZERS}
        self._rest_until = 0.0  # the decode worker's next start, see _offload
        self._pool: ThreadPoolExecutor | None = None
        self._sweeper: asyncio.Task | None = None
        self._logged: dict[str, tuple[float, int]] = {}
        #: connections that start with these 4 bytes instead of b"PYRO" go to the named handler
        self.raw_handlers: dict[bytes, Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]]
        self.raw_handlers = {}

    async def start(self, host: str, port: int, ssl: ssllib.SSLContext | None = None) -> None:
        extra: dict[str, Any] = {}
        if ssl is not None:
            extra["ssl_handshake_timeout"] = self.limits.handshake_timeout
        self._server = await asyncio.start_server(
            self._client,
            host,
            port,
            ssl=ssl,
            reuse_address=True,
            limit=self.limits.read_buffer,
            backlog=self.limits.accept_backlog,
            **extra,
        )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for c in list(self._conns):
            c.writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def _writers(self) -> set[asyncio.StreamWriter]:
        """The open connections' writers (tests drop a client mid-call through this)."""
        return {c.writer for c in self._conns}

    @property
    def connections(self) -> int:
        """Connections open now (all kinds)."""
        return len(self._conns)

    def _drop(self, kind: str, reason: str) -> None:
        """Count a dropped input; log its kind at most once per interval, never a traceback."""
        n = self.counters.get(kind, 0) + 1
        self.counters[kind] = n
        now = time.monotonic()
        last = self._logged.get(kind)
        if last is None or now - last[0] >= self.limits.log_interval:
            since = n - (last[1] if last else 0)
            log.info("dropping client input: %s (%s, %d since the last line)", reason, kind, since)
            self._logged[kind] = (now, n)

    async def _sweep(self) -> None:
        """Cut connections idle past their timeout, or stalled inside a message (slowloris)."""
        lim = self.limits
        tick = min(lim.handshake_timeout, lim.idle_timeout, lim.message_timeout) / 4
        tick = max(0.02, min(1.0, tick))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for c in list(self._conns):
                if c.phase == _IDLE:
                    limit = lim.idle_timeout if c.served else lim.handshake_timeout
                    kind, what = "orb.idle_timeout", "no complete message"
                elif c.phase in (_BODY, _WRITE):
                    limit, kind, what = (
                        lim.message_timeout,
                        "orb.message_timeout",
                        "a stalled message",
                    )
                else:
                    continue
                if now - c.since > limit:
                    c.phase = _CUT
                    self._drop(kind, f"{what} for {limit:g}s")
                    c.writer.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self._cap:
            await self._refuse_connection(reader, writer)
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(writer, asyncio.get_running_loop().time())
        self._conns.add(conn)
        try:
            first = await reader.readexactly(4)
            raw = self.raw_handlers.get(first)
            if raw is not None:
                conn.phase = _UNTIMED  # a group peer or watcher: its own protocol's timeouts
                await raw(reader, writer)
                return
            if first != b"PYRO":
                self._drop("orb.bad_connection", "a connection that does not speak Pyro5")
                return
            await self._serve_pyro(conn, first, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the peer went away, we cut it, or our loop is shutting down
        finally:
            self._conns.discard(conn)
            writer.close()

    async def _refuse_connection(self, reader, writer) -> None:
        """Tell an excess client why, fast, holding its file descriptor at most `REFUSAL_WAIT`.

        Closing a socket with unread input resets the connection, and a reset can destroy the
        refusal before the client reads it; so the refusal waits for the client's first bytes (an
        honest client sends its CONNECT at once) and reads them before closing. At most
        `MAX_REFUSING` refusals wait at a time; past that the oldest is cut (most likely a silent
        flood connection), so a newcomer still hears why even during a flood.
        """
        self._drop("orb.refused_connection", f"connection limit of {self._cap} reached")
        if len(self._refusing) >= MAX_REFUSING:
            self._refusing.popleft().transport.abort()
        self._refusing.append(writer)
        try:
            body = _JSON.dumps(_CAP_REFUSAL.format(self._cap))
            writer.write(_frame(protocol.MSG_CONNECTFAIL, 0, _JSON.serializer_id, body))
            writer.write_eof()
            await asyncio.wait_for(reader.read(65536), REFUSAL_WAIT)
        except (asyncio.TimeoutError, OSError, asyncio.CancelledError):
            pass
        finally:
            try:
                self._refusing.remove(writer)
            except ValueError:
                pass  # cut as the oldest
            writer.close()

    async def _serve_pyro(self, conn: _Conn, first: bytes, reader, writer) -> None:
        loop = asyncio.get_running_loop()
        lim, inline = self.limits, self._inline
        obj_methods: Methods | None = None
        while True:
            raw = first + await reader.readexactly(HEADER_SIZE - len(first))
            first = b""
            conn.phase, conn.since = _BODY, loop.time()
            h = None
            try:
                h = parse_header(raw, lim)
                if (
                    h.annotations_size
                    or h.flags & _SLOW_FLAGS
                    or h.data_size > inline.get(h.serializer_id, -1)
                ):
                    data = await self._read_body(conn, h, reader)
                else:  # the common small call, inline
                    data = await reader.readexactly(h.data_size) if h.data_size else b""
                    if h.type != protocol.MSG_PING:
                        data = decode(h.serializer_id, data, lim, h.type == protocol.MSG_INVOKE)
            except Refused as r:
                if r.header is None and h is not None:  # raised by decode on the fast path
                    r.header, r.consumed = h, True
                self._drop(r.counter, r.reason)
                h = r.header
                if not (r.consumed and h.type == protocol.MSG_INVOKE and obj_methods is not None):
                    await self._tell(writer, h, r.reason)
                    return
                data = pyro_errors.ProtocolError(r.reason)  # undecodable: the client sees why
            conn.phase = _BUSY
            ser = SAFE_SERIALIZERS.get(h.serializer_id)
            if h.type == protocol.MSG_PING:
                writer.write(_frame(protocol.MSG_PING, h.seq, h.serializer_id, b"pong"))
            elif h.type == protocol.MSG_CONNECT:
                obj_methods = self.objects.get(
                    data.get("object") if isinstance(data, dict) else None
                )
                if obj_methods is None:
                    known = ", ".join(sorted(self.objects)) or "none"
                    msg = ser.dumps(
                        f"unknown object {reprlib.repr(data)}; this server has: {known}"
                    )
                    writer.write(_frame(protocol.MSG_CONNECTFAIL, h.seq, ser.serializer_id, msg))
                    await writer.drain()
                    return
                meta = {"methods": sorted(obj_methods), "oneway": [], "attrs": []}
                msg = ser.dumps({"handshake": "hello", "meta": meta})
                writer.write(_frame(protocol.MSG_CONNECTOK, h.seq, ser.serializer_id, msg))
            elif h.type == protocol.MSG_INVOKE and obj_methods is not None:
                flags, result = await self._invoke(ser, obj_methods, data)
                if not h.flags & protocol.FLAGS_ONEWAY:
                    writer.write(
                        _frame(protocol.MSG_RESULT, h.seq, ser.serializer_id, result, flags)
                    )
            else:
                self._drop("orb.bad_message", f"message type {h.type} out of place")
                return
            conn.phase, conn.since = _WRITE, loop.time()
            await writer.drain()
            # idle from the reply's write (a drain stalled past message_timeout was cut anyway)
            conn.phase, conn.served = _IDLE, True

    async def _read_body(self, conn: _Conn, h: Header, reader) -> Any:
        """Read a message's body (its size already checked) and return its decoded data."""
        lim = self.limits
        size = h.size
        large = size > lim.offload_threshold
        if large:
            conn.phase = _UNTIMED  # waiting for room is not the client's stall
            await self._budget.acquire(size)
            conn.phase, conn.since = _BODY, asyncio.get_running_loop().time()
        held = size if large else 0
        try:
            payload = await reader.readexactly(size) if size else b""
            if h.type == protocol.MSG_PING:
                return None
            if h.annotations_size:
                view = memoryview(payload)
                parse_annotations(view[: h.annotations_size], lim)
                payload = bytes(view[h.annotations_size :])
            call = h.type == protocol.MSG_INVOKE
            compressed = h.flags & protocol.FLAGS_COMPRESSED
            limit = lim.max_data(h.serializer_id)
            try:
                if compressed and len(payload) <= INLINE_COMPRESSED:
                    payload, compressed = inflate(payload, limit), False
                if compressed or len(payload) > self._inline[h.serializer_id]:
                    held = 0  # the worker job releases it
                    return await self._offload(h, payload, compressed, limit, call, size)
                return decode(h.serializer_id, payload, lim, call)
            except Refused as r:
                r.header, r.consumed = h, True
                raise
        except Refused as r:
            r.header = h
            raise
        finally:
            if held:
                self._budget.release(held)

    async def _offload(
        self, h: Header, data: bytes, compressed: bool, limit: int, call: bool, size: int
    ) -> Any:
        """Inflate and decode a large body on the worker thread, one at a time."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orb-decode")
        lim, ser_id = self.limits, h.serializer_id

        def work() -> Any:
            # decoders hold the GIL (the loop cannot run meanwhile): rest as long as the last
            # job worked, so back-to-back large decodes leave the loop half of the interpreter
            pause = self._rest_until - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            t = time.monotonic()
            try:
                body = inflate(data, limit) if compressed else data
                return decode(ser_id, body, lim, call)
            finally:
                now = time.monotonic()
                self._rest_until = now + min(now - t, 1.0)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        finally:
            if size > lim.offload_threshold:
                self._budget.release(size)

    async def _tell(self, writer, h: Header | None, reason: str) -> None:
        """Best effort: tell the client why its message was refused, before the server closes.

        An INVOKE in a safe serializer gets the reason as a Pyro5 ProtocolError result; anything
        else (a CONNECT, a refused serializer) a MSG_CONNECTFAIL, in JSON when its own serializer
        is refused, since Pyro5 clients decode a reply by the serializer id it carries.
        """
        if h is None:
            return
        ser = SAFE_SERIALIZERS.get(h.serializer_id)
        if h.type == protocol.MSG_INVOKE and ser is not None:
            body = ser.dumps(pyro_errors.ProtocolError(reason))
            frame = _frame(
                protocol.MSG_RESULT, h.seq, ser.serializer_id, body, protocol.FLAGS_EXCEPTION
            )
        else:
            ser = ser or _JSON
            frame = _frame(protocol.MSG_CONNECTFAIL, h.seq, ser.serializer_id, ser.dumps(reason))
        try:
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), 1.0)
        except (asyncio.TimeoutError, OSError):
            pass

    async def _invoke(self, ser, methods: Methods, call: Any) -> tuple[int, bytes]:
        """Run one call; a decoded-call error (`call` is an exception) is returned like any other."""
        try:
            if isinstance(call, Exception):
                raise call
            _obj, name, args, kwargs = call
            fn = methods.get(name)
            if fn is None:
                raise AttributeError(f"no exposed method {name!r}")
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return 0, ser.dumps(result)
        except Exception as e:  # the client gets the exception, the server keeps serving
            # as a type Pyro5's serializers rebuild (a plain Pyro5 proxy cannot rebuild ours)
            return protocol.FLAGS_EXCEPTION, ser.dumps(for_plain_pyro(e))


__all__ = ["Methods", "WireServer"]
