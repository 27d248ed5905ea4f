"""Sending per loop tick, and noting who sent datagrams of no group here: what the UDP and TCP
transports share.

Why: packets the endpoints emit while the driver handles one loop tick should leave together,
batched per peer (`cohort.stack.transport.datagrams.Batcher`); the transport's `flush()` runs once the tick is over.
"""

from __future__ import annotations

import asyncio

from cohort.stack.transport.datagrams import Batcher

#: at most this many peers are remembered as strangers
STRANGERS_LIMIT = 256


class TickSender:
    """Mixin: `send()` queues, the loop calls the subclass's `flush()` after this tick."""

    def __init__(self) -> None:
        self.batcher = Batcher()
        self.flush_scheduled = False
        #: peers that sent datagrams of groups not on this transport (a JoinTimeout says so)
        self.strangers: set[str] = set()

    def stranger(self, src: str) -> None:
        if len(self.strangers) < STRANGERS_LIMIT:
            self.strangers.add(src)

    def send(self, tag: bytes, dest: str, data: bytes) -> None:
        self.batcher.add((tag, dest), data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        raise NotImplementedError
