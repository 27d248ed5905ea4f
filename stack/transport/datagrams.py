"""Batching: many small packets per datagram, one decode pass per datagram on arrival.

Why: one `sendto` per message caps Python at roughly 180k msgs/s on this machine, and every datagram
costs a trip through the event loop on the receiver. A driver collects what its endpoints emit
during one loop tick and ships, per destination, datagrams of concatenated packets (each packet is
one msgpack object, so a datagram is a msgpack stream). Sans-I/O: the driver decides when a tick
ends; this module only packs (the endpoint unpacks: `cohort.stack.wire.unbatch`).

Why not a stack layer: what can be batched depends on the I/O loop's tick, which the layers never
see (they are per-view state machines); the batch boundary is a property of the driver.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

from cohort.stack.wire import unbatch

#: stay under a loopback/LAN UDP datagram comfortably (64 KiB minus headers)
MAX_DATAGRAM = 60_000


class Batcher:
    """Collects (destination, packet) pairs and drains them as few datagrams as possible."""

    def __init__(self, limit: int = MAX_DATAGRAM) -> None:
        self.limit = limit
        self.pending: dict[Hashable, list[bytes]] = {}

    def add(self, dest: Hashable, data: bytes) -> None:
        self.pending.setdefault(dest, []).append(data)

    def __bool__(self) -> bool:
        return bool(self.pending)

    def drain(self) -> Iterator[tuple[Hashable, bytes]]:
        """Datagrams per destination, each at most `limit` bytes unless one packet is larger."""
        pending, self.pending = self.pending, {}
        limit = self.limit
        for dest, packets in pending.items():
            if len(packets) == 1:
                yield dest, packets[0]
                continue
            chunk: list[bytes] = []
            size = 0
            for p in packets:
                if chunk and size + len(p) > limit:
                    yield dest, b"".join(chunk)
                    chunk, size = [], 0
                chunk.append(p)
                size += len(p)
            if chunk:
                yield dest, b"".join(chunk)


__all__ = ["MAX_DATAGRAM", "Batcher", "unbatch"]
