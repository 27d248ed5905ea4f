"""Test and benchmark helpers for real groups on one machine: free ports, and seeded packet faults
on a real socket (this machine has no netem). Not used by the runtime itself: a group takes a
`Faults` only when a test or benchmark passes one.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_udp_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n ports free right now on `host` for both UDP and TCP (a member's group traffic and its
    TCP listeners share the number), for tests and benchmarks on one machine.

    Chosen outside the kernel's ephemeral range: a port the kernel hands out to outgoing TCP
    connections (clients, watchers) could otherwise be taken before a late member binds it."""
    lo, hi = _ephemeral_range()
    low_range = (10000, lo - 1) if lo > 11000 else (hi + 1, 65535)
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randint(*low_range)
        if port in ports:
            continue
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((host, port))
        except OSError:
            continue
        ports.append(port)
    return ports


@dataclass
class Faults:
    """Seeded packet faults on a real socket, for tests (this machine has no netem): each datagram
    leaving is lost with `loss`, sent twice with `dup`; `blocked` peers ("host:port") receive
    nothing from us (a partition, one way per side)."""

    loss: float = 0.0
    dup: float = 0.0
    blocked: set[str] = field(default_factory=set)
    seed: int = 0
    dropped: int = 0
    #: each datagram arriving is lost with this probability (inbound loss at this member, as an
    #: iptables `statistic` rule on INPUT makes it; `cohort bench stack` measures with it)
    rx_loss: float = 0.0
    rx_dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def copies(self, dest: str) -> int:
        if dest in self.blocked or (self.loss and self.rng.random() < self.loss):
            self.dropped += 1
            return 0
        return 2 if self.dup and self.rng.random() < self.dup else 1
