"""The UDP driver: one socket per listen address, shared by every group of the process there.

Why apart from `group`: the group is the same over UDP and TCP (`tcp`); only how datagrams leave
and arrive differs. Datagrams to one peer are packed together per loop turn (`tick`, `datagrams`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cohort.stack.transport.tick import TickSender

from cohort.net import parse_addr

if TYPE_CHECKING:
    from cohort.stack.transport.group import Group
    from cohort.stack.transport.testing import Faults

#: socket buffer sizes asked for (the kernel caps them at net.core.rmem_max / wmem_max): a burst of
#: a flow-control window (cohort.stack.layers.flow, 2 MiB by default) to each peer should fit, or most of it
#: is dropped on arrival and recovered by NAKs at a crawl
SOCKET_BUFFER = 8 << 20


class UdpSocket(TickSender, asyncio.DatagramProtocol):
    """One UDP socket and the groups multiplexed on it (each datagram starts with its group's 4-byte
    tag); `faults` is a test hook (`testing.Faults`) that loses or duplicates datagrams."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.groups: dict[bytes, Group] = {}
        self.unknown_group = 0
        self.short = 0
        super().__init__()
        self.faults: Faults | None = None
        self.datagrams_sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        faults = self.faults
        if faults is not None and faults.rx_loss and faults.rng.random() < faults.rx_loss:
            faults.rx_dropped += 1
            return
        group = self.groups.get(data[:4])
        if group is None:
            if len(data) < 4:
                self.short += 1
            else:
                self.unknown_group += 1
                self.stranger(f"{addr[0]}:{addr[1]}")
            return
        group._on_datagram(f"{addr[0]}:{addr[1]}", data[4:])

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: peers may be down
        pass

    def flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing():
            self.batcher.pending.clear()
            return
        faults = self.faults
        for (tag, dest), data in self.batcher.drain():
            for _ in range(1 if faults is None else faults.copies(dest)):
                try:
                    transport.sendto(tag + data, parse_addr(dest))
                    self.datagrams_sent += 1
                except (OSError, ValueError):
                    pass  # a peer that went away: the protocol copes
