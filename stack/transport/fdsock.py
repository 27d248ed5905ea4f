"""Fast crash detection (JGroups' FD_SOCK): a TCP connection to the member ranked just above us.

Why: heartbeats need a silence of `suspect.timeout` (1 s) before they suspect anyone, but when a
process dies its kernel closes its sockets at once. Each member keeps one TCP connection to the
member it watches — its predecessor in the ranked view, so the coordinator's successor watches the
coordinator — and the accepting side never closes it while alive. An EOF or reset is therefore a
certain crash: `Endpoint.suspect` reports it, and the group excludes the member without waiting
for its lease (a dead process delivers nothing). A hung (SIGSTOPped) process keeps its sockets
open; heartbeats still catch it.

The connection goes to the member's own address (TCP, same port as its UDP group traffic). A
process that already listens there (a replica's Pyro5-protocol server) hands connections that
start with `PREAMBLE` to `accept`; otherwise `serve` listens for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cohort.stack.view import watched

log = logging.getLogger("cohort.fdsock")

PREAMBLE = b"CHFD"


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The watched side (PREAMBLE already read): hold the connection until the watcher leaves."""
    try:
        while await reader.read(4096):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _accept_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if await reader.readexactly(len(PREAMBLE)) != PREAMBLE:
            writer.close()
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
        return
    await accept(reader, writer)


async def serve(host: str, port: int) -> asyncio.base_events.Server | None:
    """Listen for watchers on host:port/TCP; None if the port is taken (someone else accepts)."""
    try:
        return await asyncio.start_server(_accept_raw, host, port, reuse_address=True)
    except OSError:
        return None


class RingMonitor:
    """The watcher side for one group member: follow the views, keep one connection open."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.target: str | None = None
        self._task: asyncio.Task | None = None
        self.detections = 0

    def on_view(self, view: Any) -> None:
        target = watched(view, self.group.addr)
        if target == self.target:
            return
        self.close()
        self.target = target
        if target is not None:
            self._task = asyncio.get_running_loop().create_task(self._watch(target))

    def close(self) -> None:
        self.target = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        writer = None
        while self.target == target:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(PREAMBLE)
                await writer.drain()
            except (ConnectionError, OSError):
                # not listening (yet, or any more): heartbeats decide; try again shortly
                await asyncio.sleep(0.2)
                continue
            try:
                while await reader.read(4096):
                    pass
            except (ConnectionError, OSError):
                pass
            with contextlib.suppress(Exception):
                writer.close()
            if self.target == target and self.group.ep.alive:
                self.detections += 1
                log.info("%s: connection to %s closed: it crashed", self.group.addr, target)
                self.group.suspect(target)
                return
