"""The errors a client of a replicated object can meet, and how a remote exception travels.

Why here and not in `replication`: the client side (`cohort.orb.proxy`) raises them without importing the
server side; `replication` re-exports them so users import everything from one place.
"""

from __future__ import annotations

import builtins
from typing import Any

import msgpack

from cohort.errors import CohortError

# reply status codes of the replica dispatcher's `invoke`
OK, ERROR, NO_QUORUM, RETRY, STALE = range(5)


class GroupUnavailable(CohortError, ConnectionError):
    """No replica of the group could be reached (or none answered) before the call's deadline."""


class NoQuorum(CohortError, ConnectionError):
    """The replicas reached are cut off from a majority of the group, so they may not act."""


class StaleRequest(CohortError, LookupError):
    """The replicas no longer remember this request: its reply was dropped from the reply cache.

    Raised for a retry (same client id and request id) whose entry was pruned: either the client
    had reported it done, or the per-client cap of the replicas' reply cache
    (`cohort.replication.cache.ReplyCache.MAX_ENTRIES` / `MAX_BYTES`) evicted it because this client
    kept too many calls outstanding. The request will never execute again, but whether it
    executed once is unknown. `request_id` is the proxy's number for it.
    """

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RemoteError(CohortError):
    """A replicated method raised an exception that is not a builtin type.

    `remote_type` is the exception's qualified type name, `remote_traceback` the replica's traceback
    text. Builtin exceptions (ValueError, KeyError, ...) are re-raised as themselves instead.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback


def _plain(args: tuple) -> list:
    out = []
    for a in args:
        try:
            msgpack.packb(a)
            out.append(a)
        except (TypeError, ValueError, OverflowError):
            out.append(str(a))
    return out


def encode_exception(e: BaseException, tb: str) -> bytes:
    """Deterministic in the exception (every replica stores the same bytes in its reply cache)."""
    cls = type(e)
    return msgpack.packb([cls.__module__, cls.__qualname__, _plain(e.args), str(e), tb])


def decode_exception(body: bytes) -> BaseException:
    module, name, args, text, tb = msgpack.unpackb(body)
    if module == "builtins":
        cls: Any = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(*args)
            except Exception:
                exc = cls(text)
            if tb and hasattr(exc, "add_note"):
                exc.add_note(f"raised by the replicated method:\n{tb}")
            return exc
    return RemoteError(f"{module}.{name}", text, tb)
