"""Fault-tolerant replicated objects: decorate a class, serve it from a group, call it through a proxy.

import cohort
from cohort import query, replicated

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

cohort.serve(Counter, group="counter", listen="127.0.0.1:7001", seeds=[...])
counter = cohort.connect("PYROGROUP:counter@127.0.0.1:7001,127.0.0.1:7002")
"""

from __future__ import annotations

from cohort.orb.errors import CohortError, GroupUnavailable, NoQuorum, RemoteError, StaleRequest
from cohort.orb.proxy import GroupProxy, connect
from cohort.orb.refs import GroupRef
from cohort.replication.api import ReplicationError, now, query, random, replicated
from cohort.replication.engine import ViewInfo
from cohort.replication.replica import Replica, serve
from cohort.stack.compose import StackConfigError
from cohort.state.codec import SerializationError

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
