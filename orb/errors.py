"""The errors a client of a replicated object can meet, and how a remote exception travels.

Why here and not in `replication`: the client side (`cohort.orb.proxy`) raises them without importing the
server side; `replication` re-exports them so users import everything from one place.
"""

from __future__ import annotations

import builtins
import sys
import traceback
from types import TracebackType
from typing import Any

import msgpack

from cohort.errors import CohortError

# reply status codes of the replica dispatcher's `invoke`
OK, ERROR, NO_QUORUM, RETRY, STALE = range(5)


class GroupUnavailable(CohortError, ConnectionError):
    """No replica of the group could be reached (or none answered) before the call's deadline."""


class NoQuorum(CohortError, ConnectionError):
    """The replicas reached are cut off from a majority of the group, so they may not act."""


class GroupNotServed(CohortError, LookupError):
    """A replica answered, but serves no group of that name: the reference names the wrong group
    (or the wrong address). The message lists the groups the replica serves."""


class TLSMismatch(CohortError, ConnectionError):
    """Client and replica disagree on TLS: the replica requires TLS and the client spoke plain
    Pyro5 (give the client an `ssl_context`, `--tls-ca` on the command line), or the client
    spoke TLS to a replica that serves plain connections, or the certificate was not trusted."""


class MessageTooLarge(CohortError, ValueError):
    """An argument or result larger than the group's maximum message size: it could not travel
    through the group in one message. The message says the size, the limit and the parameter
    that sets it (`frag.max_size`); the call did not run (for a result: it ran, deterministically
    failed at every replica, and changed nothing it would not change again)."""


#: room for a call's fields around its argument bytes (ids, method name, times; generous): the
#: proxy and the replica's engine check arguments and results against the group's message limit
#: less this
MESSAGE_OVERHEAD = 4096


def too_large(what: str, size: int, limit: int) -> MessageTooLarge:
    """The MessageTooLarge for `what` (e.g. "the arguments of put()") of `size` encoded bytes."""
    return MessageTooLarge(
        f"{what} take {size:,} bytes encoded; the group's largest message is {limit:,} bytes "
        f"(less {MESSAGE_OVERHEAD} for the call's header). Send less per call, or raise the limit "
        "on every replica: cohort serve --param frag.max_size=BYTES"
    )


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


def builtin_base(cls: type) -> type[BaseException]:
    """The nearest builtin exception class `cls` derives from (itself if it is one)."""
    for base in cls.__mro__:
        if base.__module__ == "builtins" and issubclass(base, BaseException):
            return base
    return Exception


def short_traceback(tb: TracebackType | None, limit: int = 4) -> str:
    """The last `limit` frames of `tb`, without directories: the same text at every replica, so
    the reply cache (which holds it) hashes alike however each replica was installed."""
    frames = traceback.extract_tb(tb)[-limit:]
    lines = []
    for f in frames:
        name = f.filename.replace("\\", "/").rsplit("/", 1)[-1]
        lines.append(f'  File "{name}", line {f.lineno}, in {f.name}')
        if f.line:
            lines.append(f"    {f.line}")
    return "\n".join(lines)


def encode_exception(e: BaseException, tb: str) -> bytes:
    """Deterministic in the exception (every replica stores the same bytes in its reply cache):
    its class (module, name), the nearest builtin base, its args, text, and a traceback text."""
    cls = type(e)
    base = builtin_base(cls).__name__
    return msgpack.packb([cls.__module__, cls.__qualname__, _plain(e.args), str(e), tb, base])


_remote_types: dict[tuple[str, str], type] = {}


def _remote_type(qualname: str, base_name: str) -> type[RemoteError]:
    """A RemoteError subclass that is also the remote exception's builtin base, so `except KeyError`
    catches a remote KeyError subclass whose class this client does not have."""
    base = getattr(builtins, base_name, Exception)
    if not (isinstance(base, type) and issubclass(base, Exception)) or base is Exception:
        return RemoteError
    key = (qualname, base_name)
    t = _remote_types.get(key)
    if t is None:
        t = _remote_types[key] = type(
            f"Remote{base.__name__}", (RemoteError, base), {"__module__": __name__}
        )
    return t


def _known_class(module: str, name: str) -> type[BaseException] | None:
    """The exception class `module.name` if this process already imported that module (a client
    that handles the error imported it); never imports anything on a replica's say-so."""
    obj: Any = sys.modules.get(module)
    for part in name.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def _build(cls: type[BaseException], args: list, text: str) -> BaseException:
    try:
        exc = cls(*args)
    except Exception:
        exc = cls.__new__(cls)
        exc.args = tuple(args) or (text,)
    return exc


def decode_exception(body: bytes) -> BaseException:
    """The exception a replicated method raised: its own class when this client has it (builtin,
    or from a module this process imported), else a `RemoteError` carrying the type name, text
    and remote traceback, which is also an instance of the nearest builtin base."""
    fields = msgpack.unpackb(body)
    module, name, args, text, tb = fields[:5]
    base = fields[5] if len(fields) > 5 else "Exception"
    cls = getattr(builtins, name, None) if module == "builtins" else _known_class(module, name)
    if isinstance(cls, type) and issubclass(cls, Exception):
        exc = _build(cls, args, text)
        if tb and hasattr(exc, "add_note"):
            exc.add_note(f"raised by the replicated method:\n{tb}")
        return exc
    return _remote_type(name, str(base))(f"{module}.{name}", text, tb)


def for_plain_pyro(e: BaseException) -> BaseException:
    """What a plain Pyro5 client can rebuild from an exception we raise: Pyro5's serializers
    rebuild only builtin exceptions (and Pyro5's own), so any other class travels as its nearest
    builtin base, carrying the original type's name in the message."""
    cls = type(e)
    if cls.__module__ == "builtins" or cls.__module__.startswith("Pyro5."):
        return e
    base = builtin_base(cls)
    if not issubclass(base, Exception):
        base = Exception
    name = (
        cls.__qualname__ if isinstance(e, CohortError) else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        return base(f"{name}: {e}")
    except Exception:
        return Exception(f"{name}: {e}")
