"""A WireServer on its own loop thread, hand-made Pyro5 frames, and an honest client that keeps calling.

Why hand-made frames: a hostile client lies in the header (sizes, flags, serializer id), which
Pyro5's `SendingMessage` will not do. `frame()` packs whatever header it is told.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from typing import Any

from cohort.orb.connection import Connection
from cohort.orb.limits import ServerLimits
from cohort.orb.wire import WireServer
from Pyro5 import protocol

OBJ = "cohort.test"
MSGPACK, JSON, SERPENT, MARSHAL = 4, 3, 1, 2


def frame(
    msgtype: int,
    ser: int,
    data: bytes,
    *,
    flags: int = 0,
    annotations: bytes = b"",
    seq: int = 1,
    data_size: int | None = None,
    annotations_size: int | None = None,
) -> bytes:
    """A Pyro5 message whose header says what the caller wants, true or not."""
    header = struct.pack(
        protocol._header_format,
        b"PYRO",
        protocol.PROTOCOL_VERSION,
        msgtype,
        ser,
        flags,
        seq,
        len(data) if data_size is None else data_size,
        len(annotations) if annotations_size is None else annotations_size,
        b"\0" * 16,
        0,
        protocol._magic_number,
    )
    return header + annotations + data


def annotation(ident: bytes, data: bytes, length: int | None = None) -> bytes:
    return ident + (len(data) if length is None else length).to_bytes(4, "big") + data


def connect_frame(ser: int = MSGPACK, obj: str = OBJ) -> bytes:
    from Pyro5 import serializers

    body = serializers.serializers_by_id[ser].dumps({"handshake": "hello", "object": obj})
    return frame(protocol.MSG_CONNECT, ser, body, seq=0)


def invoke_frame(method: str, args: list, ser: int = MSGPACK, **kw: Any) -> bytes:
    from Pyro5 import serializers

    body = serializers.serializers_by_id[ser].dumpsCall(OBJ, method, args, {})
    return frame(protocol.MSG_INVOKE, ser, body, **kw)


class Server:
    """A WireServer serving `OBJ` (echo, size) on 127.0.0.1, its loop in a daemon thread."""

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self.loop_errors: list[dict] = []
        methods = {"echo": lambda x: x, "size": lambda x: len(x)}
        self.server = WireServer({OBJ: methods}, limits=limits)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start("127.0.0.1", 0))
        port = self.server._server.sockets[0].getsockname()[1]
        self.addr = f"127.0.0.1:{port}"
        self.port = port

    @property
    def counters(self) -> dict[str, int]:
        return self.server.counters

    def call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connections(self) -> int:
        async def n() -> int:
            return self.server.connections

        return self.call(n())

    def stop(self) -> None:
        self.loop_errors = list(self.loop_errors)
        self.loop.set_exception_handler(lambda loop, ctx: None)

        async def shutdown() -> None:
            self.server.close()
            await asyncio.sleep(0.05)

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Honest:
    """A thread calling `echo` over one Connection until stopped; records latencies and errors."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._conn = Connection(addr, OBJ, 5.0)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                assert self._conn.call("echo", ["hello"], 5.0) == "hello"
            except BaseException as e:  # recorded for the test to assert on
                self.errors.append(e)
                return
            self.latencies.append(time.perf_counter() - t)
            time.sleep(0.002)

    def calls(self) -> int:
        return len(self.latencies)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self._conn.close()

    def check(self, more: int = 5, max_latency: float = 0.5) -> None:
        """No call failed, none took `max_latency`, and `more` calls complete from now on."""
        assert self.errors == [], self.errors
        mark = self.calls()
        assert wait_until(lambda: self.calls() >= mark + more or bool(self.errors), 3.0)
        assert self.errors == [], self.errors
        assert max(self.latencies) < max_latency, max(self.latencies)


def exchange(
    addr: str, data: bytes, timeout: float = 5.0, shut: bool = True
) -> tuple[bytes, float]:
    """Send `data`, read until the server closes; return what came back and how long it took."""
    host, port = addr.rsplit(":", 1)
    t = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse before it has read everything
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out, time.perf_counter() - t


def reply_of(raw: bytes) -> tuple[int, Any]:
    """(message type, decoded body) of the first message in `raw`."""
    from Pyro5 import serializers

    msg = protocol.ReceivingMessage(raw[: protocol._header_size])
    msg.add_payload(raw[protocol._header_size : protocol._header_size + msg.data_size])
    return msg.type, serializers.serializers_by_id[msg.serializer_id].loads(msg.data)


def wait_until(pred: Any, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def orb_records(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("cohort.orb", "asyncio"))]
