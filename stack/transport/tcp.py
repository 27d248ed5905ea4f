"""The TCP transport: the same packets as UDP, as length-prefixed frames over one connection per peer.

Why: some networks drop or rate-limit UDP. The stack above does not change — nak, pt2pt and the
failure detector still run, so a connection that breaks loses what was in flight like a lost
datagram, and it is repaired the same way. Frames carry what the UDP transport would put in one
datagram (a 4-byte group tag and a batch of packets), so several groups share one connection.

A connection starts with PREAMBLE and the sender's listen address (its identity: the source port
of an outgoing TCP connection is not). A process that already listens on the member's port (a
replica's server) hands such connections to `TcpTransport.accept`; otherwise `cohort.stack.transport.group` listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

from cohort.stack.transport.tick import TickSender

PREAMBLE = b"CHTP"
_LEN = struct.Struct("!I")
#: largest frame accepted (a batch is at most cohort.stack.transport.datagrams.MAX_DATAGRAM bytes; leave room)
MAX_FRAME = 1 << 20
#: bytes buffered for a peer we are (re)connecting to; beyond it frames are dropped (like UDP)
MAX_BACKLOG = 4 << 20


class TcpTransport(TickSender):
    """Drop-in for `cohort.stack.transport.group._Socket`: `groups`, `send(tag, dest, data)`, `flush()`, counters."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.groups: dict[bytes, Any] = {}
        super().__init__()
        self.faults = None
        self.datagrams_sent = 0
        self.unknown_group = 0
        self.short = 0
        self.bad_frames = 0
        self.dropped = 0
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._connecting: dict[str, list[bytes]] = {}
        self._accepted: set[asyncio.StreamWriter] = set()
        self.transport = self  # `_socket_for` checks `transport.is_closing()`
        self._closed = False

    def is_closing(self) -> bool:
        return self._closed

    # --- sending ---------------------------------------------------------------------------------

    def flush(self) -> None:
        self.flush_scheduled = False
        faults = self.faults
        for (tag, dest), data in self.batcher.drain():
            frame = _LEN.pack(len(tag) + len(data)) + tag + data
            for _ in range(1 if faults is None else faults.copies(dest)):
                self._write(dest, frame)

    def _write(self, dest: str, frame: bytes) -> None:
        w = self._writers.get(dest)
        if w is not None and not w.is_closing():
            w.write(frame)
            self.datagrams_sent += 1
            return
        backlog = self._connecting.get(dest)
        if backlog is None:
            self._connecting[dest] = backlog = []
            asyncio.get_running_loop().create_task(self._connect(dest))
        if sum(len(f) for f in backlog) + len(frame) > MAX_BACKLOG:
            self.dropped += 1
            return
        backlog.append(frame)

    async def _connect(self, dest: str) -> None:
        host, _, port = dest.rpartition(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            me = self.listen.encode()
            writer.write(PREAMBLE + bytes([len(me)]) + me)
        except (OSError, ValueError):
            self.dropped += len(self._connecting.pop(dest, ()))  # peer down: like lost datagrams
            return
        backlog = self._connecting.pop(dest, [])
        for frame in backlog:
            writer.write(frame)
        self.datagrams_sent += len(backlog)
        self._writers[dest] = writer
        # the peer never sends on this connection: a read returns when it closes
        with contextlib.suppress(ConnectionError, OSError):
            await reader.read()
        if self._writers.get(dest) is writer:
            del self._writers[dest]
        writer.close()

    # --- receiving -------------------------------------------------------------------------------

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A peer's connection, PREAMBLE already read: frames until it closes."""
        self._accepted.add(writer)
        try:
            n = (await reader.readexactly(1))[0]
            src = (await reader.readexactly(n)).decode()
            while True:
                (size,) = _LEN.unpack(await reader.readexactly(4))
                if size > MAX_FRAME:
                    self.bad_frames += 1
                    return
                self.datagram_received(await reader.readexactly(size), src)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, UnicodeDecodeError):
            pass
        finally:
            self._accepted.discard(writer)
            writer.close()

    def datagram_received(self, data: bytes, src: str) -> None:
        group = self.groups.get(data[:4])
        if group is None:
            if len(data) < 4:
                self.short += 1
            else:
                self.unknown_group += 1
                self.stranger(src)
            return
        group._on_datagram(src, data[4:])

    def close(self) -> None:
        self._closed = True
        for w in [*self._writers.values(), *self._accepted]:
            w.close()
        self._writers.clear()
