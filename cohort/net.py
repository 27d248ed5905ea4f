"""Addresses: "host:port" parsing shared by the stack's transports and the ORB.

A leaf module (it imports nothing of ours), so both sides of the import rules may use it.
"""

from __future__ import annotations


def parse_addr(addr: str) -> tuple[str, int]:
    """("host", port) of "host:port"; ValueError if it is not one."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an address is host:port, got {addr!r}")
    return host, int(port)
