"""The stack's drivers: real groups on asyncio over UDP (`udp`) or TCP (`tcp`), with fast crash
detection (`fdsock`) and datagram packing per loop turn (`tick`, `datagrams`).

The public surface is `join` and the `Group` it returns; `testing` holds helpers for tests and
benchmarks on one machine (free ports, seeded packet faults), which the runtime does not use.
"""

from cohort.stack.transport.group import (
    REAL_PARAMS,
    Group,
    JoinRefused,
    JoinTimeout,
    group_tag,
    join,
    merge_traces,
    tcp_handlers,
)

__all__ = [
    "REAL_PARAMS",
    "Group",
    "JoinRefused",
    "JoinTimeout",
    "group_tag",
    "join",
    "merge_traces",
    "tcp_handlers",
]
