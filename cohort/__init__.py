"""Cohort: fault-tolerant replicated Python objects on a virtually synchronous group stack.

    import cohort

    @cohort.replicated
    class Counter:
        def __init__(self) -> None:
            self.value = 0

        def add(self, n: int) -> int:
            self.value += n
            return self.value

        @cohort.query
        def get(self) -> int:
            return self.value

    cohort.serve(Counter, group="counter", listen="127.0.0.1:7001", seeds=[...])  # each replica
    with cohort.connect("PYROGROUP:counter@127.0.0.1:7001,127.0.0.1:7002") as counter:
        counter.add(1)

This module is the façade: every name a user needs, imported lazily on first use, so that a client
importing `cohort.connect` loads the ORB's client side only, never the stack (docs/architecture.md
has the packages and their import rules). Every error derives from `CohortError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # the user API
    "replicated": "cohort.replication.api",
    "query": "cohort.replication.api",
    "now": "cohort.replication.api",
    "random": "cohort.replication.api",
    "serve": "cohort.replication.replica",
    "Replica": "cohort.replication.replica",
    "ViewInfo": "cohort.replication.engine",
    "connect": "cohort.orb.proxy",
    "GroupProxy": "cohort.orb.proxy",
    "ProxyInfo": "cohort.orb.proxy",
    "proxy_info": "cohort.orb.proxy",
    "close_proxy": "cohort.orb.proxy",
    "GroupRef": "cohort.orb.refs",
    "register": "cohort.state.codec",
    "Record": "cohort.state.codec",
    "register_dataclass": "cohort.state.codec",
    "serializable": "cohort.state.codec",
    # the error tree
    "CohortError": "cohort.errors",
    "StackConfigError": "cohort.stack.compose",
    "JoinTimeout": "cohort.stack.transport.group",
    "JoinRefused": "cohort.stack.transport.group",
    "SerializationError": "cohort.state.codec",
    "DecodeError": "cohort.state.codec",
    "SnapshotError": "cohort.state.snapshot",
    "ReplicationError": "cohort.replication.api",
    "GroupUnavailable": "cohort.orb.errors",
    "NoQuorum": "cohort.orb.errors",
    "StaleRequest": "cohort.orb.errors",
    "GroupNotServed": "cohort.orb.errors",
    "MessageTooLarge": "cohort.orb.errors",
    "TLSMismatch": "cohort.orb.errors",
    "RemoteError": "cohort.orb.errors",
}

__all__ = [
    "__version__",
    "ProxyInfo",
    "CohortError",
    "DecodeError",
    "GroupProxy",
    "GroupRef",
    "GroupNotServed",
    "GroupUnavailable",
    "JoinRefused",
    "JoinTimeout",
    "MessageTooLarge",
    "NoQuorum",
    "RemoteError",
    "Replica",
    "Record",
    "ReplicationError",
    "SerializationError",
    "SnapshotError",
    "StackConfigError",
    "StaleRequest",
    "TLSMismatch",
    "ViewInfo",
    "close_proxy",
    "connect",
    "now",
    "proxy_info",
    "query",
    "random",
    "register",
    "register_dataclass",
    "replicated",
    "serializable",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cohort' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from cohort.errors import CohortError
    from cohort.orb.errors import (
        GroupNotServed,
        GroupUnavailable,
        MessageTooLarge,
        NoQuorum,
        RemoteError,
        StaleRequest,
        TLSMismatch,
    )
    from cohort.orb.proxy import GroupProxy, ProxyInfo, close_proxy, connect, proxy_info
    from cohort.orb.refs import GroupRef
    from cohort.replication.api import ReplicationError, now, query, random, replicated
    from cohort.replication.engine import ViewInfo
    from cohort.replication.replica import Replica, serve
    from cohort.stack.compose import StackConfigError
    from cohort.stack.transport.group import JoinRefused, JoinTimeout
    from cohort.state.codec import (
        DecodeError,
        Record,
        SerializationError,
        register,
        register_dataclass,
        serializable,
    )
    from cohort.state.snapshot import SnapshotError
