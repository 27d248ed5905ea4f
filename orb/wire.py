"""Pyro5's wire protocol, spoken by the replica's asyncio server and the client's pooled connections.

Why not Pyro5's own Daemon and Proxy: a replica answers a call only once the invocation is ordered
and uniform, which happens on the stack's asyncio loop. Pyro5's threaded daemon would park one
worker thread per outstanding call and pay two thread hand-offs per call (design.md §7). Speaking
the same protocol from an asyncio server keeps thousands of outstanding calls on one loop, and a
plain `Pyro5.api.Proxy` can still connect to a replica. Only Pyro5's safe serializers are accepted
(msgpack, serpent, json); marshal and pickle are refused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl as ssllib
from collections.abc import Callable
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5 import protocol, serializers

log = logging.getLogger("cohort.orb")

HEADER_SIZE = protocol._header_size
SERIALIZER = serializers.serializers["msgpack"]
SAFE_SERIALIZERS = {
    s.serializer_id: s
    for name, s in serializers.serializers.items()
    if name in ("msgpack", "serpent", "json")
}

#: one exposed object: method name -> callable (sync, or async for calls that wait on the group)
Methods = dict[str, Callable[..., Any]]


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {addr!r}")
    return host, int(port)


def _frame(msgtype: int, seq: int, ser_id: int, payload: bytes, flags: int = 0) -> bytes:
    return protocol.SendingMessage(msgtype, flags, seq, ser_id, payload).data


class WireServer:
    """An asyncio server for Pyro5 clients. `objects` maps an object id to its exposed methods."""

    def __init__(self, objects: dict[str, Methods]) -> None:
        self.objects = objects
        self.counters: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: connections that start with these 4 bytes instead of b"PYRO" go to the named handler
        self.raw_handlers: dict[bytes, Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]]
        self.raw_handlers = {}

    async def start(self, host: str, port: int, ssl: ssllib.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(
            self._client, host, port, ssl=ssl, reuse_address=True
        )

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.add(writer)
        try:
            first = await reader.readexactly(4)
            raw = self.raw_handlers.get(first)
            if raw is not None:
                await raw(reader, writer)
                return
            if first != b"PYRO":
                self._count("orb.bad_connection")
                return
            await self._serve_pyro(first, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the peer went away, or our loop is shutting down
        except pyro_errors.ProtocolError as e:
            self._count("orb.bad_message")
            log.debug("dropping a client that broke the protocol: %s", e)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve_pyro(self, first: bytes, reader, writer) -> None:
        obj_methods: Methods | None = None
        while True:
            header = first + await reader.readexactly(HEADER_SIZE - len(first))
            first = b""
            msg = protocol.ReceivingMessage(header)
            msg.add_payload(await reader.readexactly(msg.data_size + msg.annotations_size))
            ser = SAFE_SERIALIZERS.get(msg.serializer_id)
            if ser is None:
                self._count("orb.refused_serializer")
                return
            if msg.type == protocol.MSG_CONNECT:
                try:
                    data = ser.loads(msg.data)
                except Exception:
                    self._count("orb.bad_message")
                    return
                obj_methods = self.objects.get(
                    data.get("object") if isinstance(data, dict) else None
                )
                if obj_methods is None:
                    known = ", ".join(sorted(self.objects)) or "none"
                    body = ser.dumps(f"unknown object {data!r}; this server has: {known}")
                    writer.write(_frame(protocol.MSG_CONNECTFAIL, msg.seq, ser.serializer_id, body))
                    await writer.drain()
                    return
                meta = {"methods": sorted(obj_methods), "oneway": [], "attrs": []}
                body = ser.dumps({"handshake": "hello", "meta": meta})
                writer.write(_frame(protocol.MSG_CONNECTOK, msg.seq, ser.serializer_id, body))
            elif msg.type == protocol.MSG_PING:
                writer.write(_frame(protocol.MSG_PING, msg.seq, ser.serializer_id, b"pong"))
            elif msg.type == protocol.MSG_INVOKE and obj_methods is not None:
                oneway = msg.flags & protocol.FLAGS_ONEWAY
                flags, body = await self._invoke(ser, obj_methods, msg.data)
                if not oneway:
                    writer.write(
                        _frame(protocol.MSG_RESULT, msg.seq, ser.serializer_id, body, flags)
                    )
            else:
                self._count("orb.bad_message")
                return
            await writer.drain()

    async def _invoke(self, ser, methods: Methods, data: bytes) -> tuple[int, bytes]:
        try:
            _obj, name, args, kwargs = ser.loadsCall(data)
            fn = methods.get(name)
            if fn is None:
                raise AttributeError(f"no exposed method {name!r}")
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return 0, ser.dumps(result)
        except Exception as e:  # the client gets the exception, the server keeps serving
            return protocol.FLAGS_EXCEPTION, ser.dumps(e)


class Connection:
    """One blocking client connection to one object of one server (used by one thread at a time)."""

    def __init__(
        self,
        addr: str,
        obj: str,
        timeout: float,
        ssl_context: ssllib.SSLContext | None = None,
    ) -> None:
        self.addr = addr
        self.obj = obj
        host, port = parse_addr(addr)
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self._seq = 0
        self._timeout = timeout
        body = SERIALIZER.dumps({"handshake": "hello", "object": obj})
        self.sock.sendall(_frame(protocol.MSG_CONNECT, 0, SERIALIZER.serializer_id, body))
        msg = self._recv()
        if msg.type != protocol.MSG_CONNECTOK:
            self.close()
            raise ConnectionRefusedError(
                f"{addr} refused the connection: {SERIALIZER.loads(msg.data)}"
            )

    def call(self, method: str, args: list, timeout: float | None = None) -> Any:
        """Invoke and wait. Socket errors and timeouts leave the connection unusable (closed)."""
        self._seq = (self._seq + 1) & 0xFFFF
        data = SERIALIZER.dumpsCall(self.obj, method, args, {})
        try:
            if timeout != self._timeout:
                self.sock.settimeout(timeout)
                self._timeout = timeout
            self.sock.sendall(
                _frame(protocol.MSG_INVOKE, self._seq, SERIALIZER.serializer_id, data)
            )
            msg = self._recv()
        except BaseException:
            self.close()
            raise
        if msg.seq != self._seq:
            self.close()
            raise pyro_errors.ProtocolError(f"{self.addr}: reply out of sequence")
        result = SERIALIZER.loads(msg.data)
        if msg.flags & protocol.FLAGS_EXCEPTION:
            raise result
        return result

    def _recv(self) -> protocol.ReceivingMessage:
        header = self._read(HEADER_SIZE)
        msg = protocol.ReceivingMessage(header)
        msg.add_payload(self._read(msg.data_size + msg.annotations_size))
        return msg

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError(f"{self.addr} closed the connection")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
