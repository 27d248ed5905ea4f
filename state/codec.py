"""Wire codec for user values: invocation arguments, results and replica state.

Why msgpack with ext types and not pickle: replicas never run code chosen by a peer, and each
must rebuild exactly the value sent (a tuple stays a tuple, a set a set) or replicas diverge.
Each type msgpack lacks gets an ext code: 0-63 are for users (`register`), 64+ are built in.

Theory of operation:
- Fast path: one `Packer(strict_types=True, default=_default).pack(value)`, i.e. `msgpack.packb`
  with a 512-byte start buffer (pymalloc), not packb's 256 KiB (a malloc of ~0.8 us a call).
  `strict_types` hands tuples (and subclasses of native types) to `_default` instead of packing
  them as lists; a pre-walk converting tuples was 5x slower on a 1,000-entry dict.
- `_default` is one dict lookup on the exact type. Ext payloads are packed with a fresh Packer,
  so nesting works and the codec is re-entrant and thread-safe. Only when packing fails is the
  value walked (`_locate`) to name the offending value's type and path.
- Integers beyond 64 bits are carried as an ext (BIGINT), not rejected. Exact types only:
  subclasses (defaultdict, IntEnum, namedtuple...) raise rather than decode as their base type,
  which would make a joiner's state behave unlike its donor's.
- Sets are encoded sorted when their elements are orderable, so equal states give equal bytes
  (replicas compare state digests). Caveat: bytearray and memoryview come back as bytes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as _dt
import decimal
import logging
import struct
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import msgpack
from msgpack import ExtType, Packer

from cohort.errors import CohortError

__all__ = ["SerializationError", "DecodeError", "dumps", "loads"]
__all__ += ["register", "register_dataclass", "serializable", "unregister", "Record"]
__all__ += ["Encoded", "packer", "unpacker"]

T = TypeVar("T")
TUPLE, SET, FROZENSET, DATETIME, DATE, TIMEDELTA = range(64, 70)  # built-in ext codes
DECIMAL, UUID, COMPLEX, BIGINT, DATACLASS, ENCODED = range(70, 76)
_HINT = "declare a codec with state.register(...) or convert it to a msgpack type (None, bool, "
_HINT += "int, float, str, bytes, list, dict, tuple, set, datetime, dataclass)"


class SerializationError(CohortError, TypeError):
    """A value cannot be carried; `dumps` sets `type_name` and `path` (its place in the value)."""

    def __init__(self, message: str, *, type_name: str = "", path: str = "") -> None:
        super().__init__(message)
        self.type_name, self.path = type_name, path


def _fail(type_name: str, path: str, reason: str) -> SerializationError:
    msg = f"cannot serialize value of type {type_name!r} at {path}: {reason}"
    return SerializationError(msg, type_name=type_name, path=path)


class DecodeError(CohortError, ValueError):
    """Bytes that are not a valid encoding here: truncated, corrupt, or an unregistered codec."""


log = logging.getLogger("cohort.codec")

_ENCODE: dict[type, Callable[[Any], ExtType]] = {}  # exact type -> ext builder
_DECODE: dict[int, Callable[[bytes], Any]] = {}  # ext code -> rebuilder
_OWNER: dict[int, str] = {}  # ext code -> its user, for error messages
_USER: dict[type, tuple[int, Callable[[Any], Any]]] = {}  # user type -> (code, encode)
_DC: dict[type, tuple[str, tuple[str, ...]]] = {}  # registered dataclass -> (name, fields)
_DC_BY_NAME: dict[str, type] = {}


def _default(obj: Any) -> ExtType:
    if type(obj) is Record:
        return ExtType(DATACLASS, _packer().pack([obj.type_name, obj.fields]))
    return _ENCODE[type(obj)](obj)  # KeyError: not carriable; dumps then walks to say where


_packer = partial(Packer, default=_default, use_bin_type=True, strict_types=True, buf_size=512)


def _pack_list(obj: Any) -> bytes:
    return _packer().pack(list(obj))


def _pack_set(obj: Any) -> bytes:  # sorted when possible: equal states, equal bytes everywhere
    try:
        return _packer().pack(sorted(obj))
    except TypeError:  # mixed types: iteration order (may differ between processes)
        return _pack_list(obj)


def _ext_hook(code: int, data: bytes) -> Any:
    dec = _DECODE.get(code)
    if dec is None:
        raise DecodeError(f"unknown ext code {code}: register the same codecs on every replica")
    return dec(data)


_unpack = partial(msgpack.unpackb, ext_hook=_ext_hook, strict_map_key=False)  # raw=False: default


def _ext_builder(code: int, enc: Callable[[Any], bytes]) -> Callable[[Any], ExtType]:
    return lambda obj: tuple.__new__(ExtType, (code, enc(obj)))  # skip ExtType's slow checks


_DT = struct.Struct(">HBBBBBIB")
_DT_TZ = struct.Struct(">HBBBBBIBq")
_TD = struct.Struct(">iII")
_CX = struct.Struct(">dd")
_I = struct.Struct(">I")


def _enc_datetime(d: _dt.datetime) -> bytes:
    fields = (d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, d.fold)
    off = d.utcoffset()
    if off is None:
        return _DT.pack(*fields)
    return _DT_TZ.pack(*fields, (off.days * 86400 + off.seconds) * 1_000_000 + off.microseconds)


def _dec_datetime(data: bytes) -> _dt.datetime:
    if len(data) == _DT.size:
        *f, fold = _DT.unpack(data)
        return _dt.datetime(*f, fold=fold)
    *f, fold, off = _DT_TZ.unpack(data)
    return _dt.datetime(*f, tzinfo=_dt.timezone(_dt.timedelta(microseconds=off)), fold=fold)


def _enc_dataclass(obj: Any) -> bytes:
    name, fields = _DC[type(obj)]
    return _packer().pack([name, {f: getattr(obj, f) for f in fields}])


class Record:
    """A registered dataclass this process does not have, decoded as its type name and fields
    (read-only attributes), so a client reading a reply never fails after the call succeeded.
    Encoded again it is the same dataclass on the wire, so it can be passed back unchanged."""

    __slots__ = ("type_name", "fields")

    def __init__(self, type_name: str, fields: dict[str, Any]) -> None:
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "fields", dict(fields))

    def __getattr__(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.type_name} record has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Record is read-only: register the dataclass to get the class")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Record)
            and other.type_name == self.type_name
            and other.fields == self.fields
        )

    def __hash__(self) -> int:
        return hash((self.type_name, tuple(sorted(self.fields))))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"Record({self.type_name!r}{', ' if inner else ''}{inner})"


#: decode unregistered dataclasses as Records (clients reading replies) instead of failing
_records: contextvars.ContextVar[bool] = contextvars.ContextVar("cohort_records", default=False)
_warned: set[str] = set()


def _dec_dataclass(data: bytes) -> Any:
    name, values = _unpack(data)
    cls = _DC_BY_NAME.get(name)
    if cls is None:
        if _records.get():
            if name not in _warned:
                _warned.add(name)
                log.warning(
                    "a reply holds dataclass %r, not registered in this process: it reads as a "
                    "cohort Record; call cohort.register_dataclass on the class to get it back",
                    name,
                )
            return Record(str(name), values)
        raise DecodeError(
            f"dataclass {name!r} is not registered in this process: import its module and "
            "decorate the class with @cohort.serializable (or call cohort.register_dataclass) "
            "here too"
        )
    if set(values) != set(_DC[cls][1]):
        raise DecodeError(f"dataclass {name!r} fields {sorted(values)} != {_DC[cls][1]}")
    # Rebuild without __init__/__post_init__ (as pickle and copy do): the sender's instance was
    # already initialised, and re-running __post_init__ could transform the fields twice.
    obj = cls.__new__(cls)
    for k, v in values.items():
        object.__setattr__(obj, k, v)
    return obj


# fmt: off
_BUILTINS: list[tuple[type, int, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
    (tuple, TUPLE, _pack_list, lambda d: tuple(_unpack(d))),
    (set, SET, _pack_set, lambda d: set(_unpack(d))),
    (frozenset, FROZENSET, _pack_set, lambda d: frozenset(_unpack(d))),
    (_dt.datetime, DATETIME, _enc_datetime, _dec_datetime),
    (_dt.date, DATE, lambda o: _I.pack(o.toordinal()),
     lambda d: _dt.date.fromordinal(_I.unpack(d)[0])),
    (_dt.timedelta, TIMEDELTA, lambda o: _TD.pack(o.days, o.seconds, o.microseconds),
     lambda d: _dt.timedelta(*_TD.unpack(d))),
    (decimal.Decimal, DECIMAL, lambda o: str(o).encode(), lambda d: decimal.Decimal(d.decode())),
    (uuid.UUID, UUID, lambda o: o.bytes, lambda d: uuid.UUID(bytes=d)),
    (complex, COMPLEX, lambda o: _CX.pack(o.real, o.imag), lambda d: complex(*_CX.unpack(d))),
    (int, BIGINT, lambda o: o.to_bytes(o.bit_length() // 8 + 1, "big", signed=True),
     lambda d: int.from_bytes(d, "big", signed=True)),
]
# fmt: on
for _type, _code, _enc, _dec in _BUILTINS:
    _ENCODE[_type], _DECODE[_code], _OWNER[_code] = _ext_builder(_code, _enc), _dec, _type.__name__
_DECODE[DATACLASS], _OWNER[DATACLASS] = _dec_dataclass, "registered dataclasses"


class Encoded(bytes):
    """Bytes that already are `dumps(value)`: packed as an ext that decodes back to `value`.

    Why: a streamed snapshot (`cohort.state.stream`) encodes the values it cannot share safely with the
    live state (mutable objects of user types) at the cut, then carries the bytes; the reader
    gets the value, not the bytes."""


_ENCODE[Encoded] = _ext_builder(ENCODED, bytes)
_DECODE[ENCODED], _OWNER[ENCODED] = lambda d: _unpack(d), "encoded values"


def packer() -> Packer:
    """A Packer with this codec's types (for streams of many values, `cohort.state.stream`)."""
    return _packer()


def unpacker(**limits: Any) -> msgpack.Unpacker:
    """A streaming Unpacker with this codec's types; `limits` are msgpack's max_* options."""
    return msgpack.Unpacker(ext_hook=_ext_hook, strict_map_key=False, **limits)


_NATIVE = frozenset({type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict})
# Types with no nested values that always encode (int: BIGINT covers any size).
_LEAVES = _NATIVE - {str, list, dict} | {ExtType, msgpack.Timestamp, decimal.Decimal, uuid.UUID}
_LEAVES |= {_dt.datetime, _dt.date, _dt.timedelta, complex}


def register(
    type_: type[T], code: int, encode: Callable[[T], Any], decode: Callable[[Any], T]
) -> None:
    """Carry `type_` as ext `code` (0-63): `encode(obj)` returns any encodable value (nested
    exotic values are fine) and `decode(value)` rebuilds the object. Register the same codecs on
    every replica and client. Matches the exact type only, not subclasses."""
    if not isinstance(type_, type):
        raise TypeError(f"register() needs a class, got {type_!r}")
    if not isinstance(code, int) or not 0 <= code < 64:
        raise ValueError(f"user codec codes are 0-63 (64-127 are Cohort built-ins), got {code!r}")
    if code in _DECODE:
        raise ValueError(f"ext code {code} is already used by {_OWNER[code]}; pick another")
    if type_ in _ENCODE or type_ in _NATIVE:
        raise ValueError(f"{type_.__qualname__} already has a codec; unregister() it first")
    _ENCODE[type_] = _ext_builder(code, lambda obj: _packer().pack(encode(obj)))
    _DECODE[code] = lambda data: decode(_unpack(data))
    _OWNER[code] = type_.__qualname__
    _USER[type_] = (code, encode)


def register_dataclass(cls: type[T]) -> type[T]:
    """Carry instances of dataclass `cls` field by field, named by `module.qualname`. Returns
    `cls`, so it doubles as the `@serializable` decorator. Registering a class twice is a no-op."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_dataclass() needs a dataclass, got {cls!r}")
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _DC_BY_NAME.get(name) is cls:
        return cls
    if name in _DC_BY_NAME or cls in _ENCODE:
        raise ValueError(f"another class is already registered as {name!r}")
    _DC[cls], _DC_BY_NAME[name] = (name, tuple(f.name for f in dataclasses.fields(cls))), cls
    _ENCODE[cls] = _ext_builder(DATACLASS, _enc_dataclass)
    return cls


serializable = register_dataclass


def registered_names() -> list:
    """The user codecs and registered dataclasses, by ext code / name: what two replicas must
    share to read each other's state (part of a replicated class's fingerprint)."""
    codes = sorted((code, _OWNER[code]) for code in _DECODE if code < 64 and code in _OWNER)
    return [codes, sorted(_DC_BY_NAME)]


def unregister(type_: type) -> None:
    """Forget a user codec or registered dataclass (for tests and reloads). Built-ins stay."""
    if type_ in _DC:
        del _DC_BY_NAME[_DC.pop(type_)[0]], _ENCODE[type_]
    else:
        code, _ = _USER.pop(type_)  # KeyError if type_ has no user codec
        del _ENCODE[type_], _DECODE[code], _OWNER[code]


def dumps(value: Any, root: str = "value", *, attrs: bool = False) -> bytes:
    """Encode `value`, or raise SerializationError naming the first value that cannot be carried
    by its path from `root`: `args[0]['k'].field[3]`, `<key>` a dict key, `{*}` a set element.
    `attrs=True`: `value` is an instance `__dict__`, shown as attributes (`state.accounts`)."""
    try:
        return _packer().pack(value)
    except Exception as exc:  # TypeError, OverflowError, ValueError, RecursionError, user codecs
        segs: list[tuple[str, Any]] = []
        found = _locate(value, segs, set())
        if found is None:  # msgpack failed for a reason the walk does not model
            raise _fail(type(value).__qualname__, root, f"msgpack: {exc!r}") from exc
        parts = [root]
        for i, (kind, label) in enumerate(segs):
            if kind == "item":
                as_attr = attrs and i == 0 and isinstance(label, str) and label.isidentifier()
                parts.append(f".{label}" if as_attr else f"[{label!r}]")
            else:
                parts.append({"attr": f".{label}", "key": "<key>", "elem": "{*}"}.get(kind, ""))
        raise _fail(found[0], "".join(parts), found[1]) from exc


def loads(data: bytes, *, records: bool = False) -> Any:
    """Decode bytes made by `dumps`. Any malformed input raises DecodeError (a ValueError), so a
    receiver can count and drop it instead of crashing. `records=True` (a client reading a
    reply) decodes a dataclass this process has not registered as a `Record` instead of failing;
    replicas decode strictly, since their state must round-trip exactly."""
    token = _records.set(True) if records else None
    try:
        return _unpack(data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {len(data)} bytes: {type(exc).__name__}: {exc}") from exc
    finally:
        if token is not None:
            _records.reset(token)


def _children(v: Any, t: type) -> Iterator[tuple[str, Any, Any]]:
    """(kind, label, child) for each nested value, in the order the encoder visits them."""
    if t is dict:
        for k, x in v.items():
            yield "key", None, k
            yield "item", k, x
    elif t is list or t is tuple:
        yield from (("item", i, x) for i, x in enumerate(v))
    elif t is set or t is frozenset:
        yield from (("elem", None, x) for x in v)
    elif t in _DC:
        yield from (("attr", f, getattr(v, f)) for f in _DC[t][1])
    else:  # user codec: walk what its encode returns, at the same path
        yield "codec", None, _USER[t][1](v)


def _locate(v: Any, segs: list[tuple[str, Any]], active: set[int]) -> tuple[str, str] | None:
    """Depth-first search for the first value that cannot be carried: returns (type name,
    reason) and leaves `segs` holding the path to it; None if all of `v` can be carried."""
    t = type(v)
    if t in _LEAVES:
        return None
    if t is str:  # only lone surrogates fail to survive encode(errors="replace")
        ok = v.encode("utf-8", "replace").decode("utf-8") == v
        return None if ok else ("str", "it contains a lone surrogate, which UTF-8 cannot carry")
    name = t.__qualname__
    if t not in _NATIVE and t not in _ENCODE:
        if dataclasses.is_dataclass(t):
            return name, f"unregistered dataclass: use @serializable or register_dataclass({name})"
        if base := next((b for b in (dict, list, tuple, set, int, str) if isinstance(v, b)), None):
            return name, f"not carried as a plain {base.__name__}: convert it or register a codec"
        return name, _HINT
    if len(segs) >= 500:  # msgpack stops near 1024 levels; stay inside Python's recursion limit
        return name, "it is nested too deeply (more than 500 levels)"
    if id(v) in active:
        return name, "it contains itself (a circular reference); only trees can be carried"
    active.add(id(v))
    try:
        for kind, label, child in _children(v, t):
            segs.append((kind, label))
            found = _locate(child, segs, active)
            if found is not None:
                return found
            segs.pop()
    except Exception as exc:  # a user codec's encode failed
        return name, f"its codec's encode raised {exc!r}"
    finally:
        active.discard(id(v))
    return None
