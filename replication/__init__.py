"""Fault-tolerant replicated objects: decorate a class, serve it from a group, call it through a proxy.

from replication import replicated, query

@replicated
class Counter:
    def __init__(self):
        self.value = 0

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value

replication.serve(Counter, group="counter", listen="127.0.0.1:7001", seeds=[...])
counter = replication.connect("PYROGROUP:counter@127.0.0.1:7001,127.0.0.1:7002")
"""

from __future__ import annotations

from typing import Any

from orb.errors import CohortError, GroupUnavailable, NoQuorum, RemoteError, StaleRequest
from orb.proxy import GroupProxy
from orb.refs import GroupRef
from replication.api import ReplicationError, now, query, random, replicated
from replication.engine import ViewInfo
from replication.replica import Replica, serve
from stack.compose import StackConfigError
from state.codec import SerializationError


def connect(ref: str | GroupRef, **options: Any) -> GroupProxy:
    """A proxy for the group `ref` (`PYROGROUP:name@host:port,...` or `PYROGROUPNAME:name`).

    Options: `timeout` (whole call, with failover; default 30 s), `attempt_timeout` (one replica;
    default 3 s), `probe_interval` (while a call waits, ask another replica for its view this
    often and leave a replica the group excluded; default 0.1 s, 0 turns it off), `pool_size`,
    `ns_host`/`ns_port` (name server), `ssl_context`.
    """
    return GroupProxy(ref, **options)


__all__ = [
    "CohortError",
    "GroupProxy",
    "GroupRef",
    "GroupUnavailable",
    "NoQuorum",
    "RemoteError",
    "Replica",
    "ReplicationError",
    "SerializationError",
    "StackConfigError",
    "StaleRequest",
    "ViewInfo",
    "connect",
    "now",
    "query",
    "random",
    "replicated",
    "serve",
]
