"""Bounded reading of one Pyro5 message: header checks, annotation chunks, inflation, decoding.

Why not Pyro5's `ReceivingMessage`: it trusts the header up to 1 GiB, decodes an annotation id with
a traceback when it is not ASCII, and inflates a compressed body in one call whatever it expands
to. Here each step is checked against `ServerLimits` before the bytes it announces are read or
produced. A failed check raises `Refused(counter, reason)`: the counter is the `orb.*` name the
server counts it under, the reason a sentence the client may be sent. Everything here is pure
(no I/O, no clock), so `cohort.orb.wire` stays the only module that touches sockets and threads.

What honest clients send is decoded exactly as Pyro5's own serializers decode it: the msgpack call
passes the same hooks, and adds only length and container bounds that a well-formed body of that
size cannot exceed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack
from cohort.orb.limits import JSON_ID, MSGPACK_ID, SERPENT_ID, ServerLimits
from Pyro5 import protocol, serializers

from cohort.errors import CohortError

HEADER_SIZE = protocol._header_size
_HEADER = struct.Struct(protocol._header_format)
_MSGPACK = serializers.serializers["msgpack"]
_BY_ID = {s.serializer_id: s for s in serializers.serializers.values()}
SAFE_IDS = frozenset({MSGPACK_ID, SERPENT_ID, JSON_ID})


class Refused(CohortError):
    """An input the server drops: `counter` names the `orb.*` counter, `reason` says why."""

    def __init__(self, counter: str, reason: str, header: Header | None = None) -> None:
        super().__init__(reason)
        self.counter = counter
        self.reason = reason
        #: the message's header once it parsed (to address a reply), else None
        self.header = header
        #: the whole message was read, so the connection is still in step
        self.consumed = False


@dataclass(slots=True)
class Header:
    """The fields of a Pyro5 header the server acts on."""

    type: int
    serializer_id: int
    flags: int
    seq: int
    data_size: int
    annotations_size: int

    @property
    def size(self) -> int:
        """Bytes that follow the header."""
        return self.data_size + self.annotations_size


def parse_header(raw: bytes, limits: ServerLimits) -> Header:
    """Check a 40-byte header against the limits, before any of its body is read."""
    tag, ver, typ, ser, flags, seq, dsize, asize, _corr, _res, magic = _HEADER.unpack(raw)
    if tag != b"PYRO" or ver != protocol.PROTOCOL_VERSION or magic != protocol._magic_number:
        raise Refused("orb.bad_message", "not a Pyro5 header (wrong version or magic number)")
    h = Header(typ, ser, flags, seq, dsize, asize)
    if typ == protocol.MSG_PING:
        limit = limits.max_serpent  # a ping body is echoed, never decoded: any serializer id
    else:
        limit = limits.max_data(ser)
        if not limit:
            name = type(_BY_ID[ser]).__name__ if ser in _BY_ID else "unknown"
            raise Refused(
                "orb.refused_serializer",
                f"serializer id {ser} ({name}) is refused; use msgpack, serpent or json",
                h,
            )
    if asize > limits.max_annotations_total:
        raise Refused(
            "orb.bad_annotation",
            f"annotations of {asize} bytes exceed the limit of {limits.max_annotations_total}",
            h,
        )
    if dsize > limit:
        raise Refused(
            "orb.too_large",
            f"a body of {dsize} bytes exceeds this serializer's limit of {limit}",
            h,
        )
    return h


def parse_annotations(chunks: memoryview, limits: ServerLimits) -> dict[str, memoryview]:
    """Split annotation chunks (4-byte ASCII id, 4-byte length, data), checking each."""
    out: dict[str, memoryview] = {}
    i, end = 0, len(chunks)
    while i < end:
        if len(out) >= limits.max_annotations:
            raise Refused("orb.bad_annotation", f"more than {limits.max_annotations} annotations")
        if i + 8 > end:
            raise Refused("orb.bad_annotation", "a truncated annotation chunk header")
        ident = bytes(chunks[i : i + 4])
        if not ident.isascii():
            raise Refused("orb.bad_annotation", f"annotation id {ident!r} is not ASCII")
        length = int.from_bytes(chunks[i + 4 : i + 8], "big")
        if length > limits.max_annotation_size:
            raise Refused(
                "orb.bad_annotation",
                f"an annotation of {length} bytes exceeds the limit of {limits.max_annotation_size}",
            )
        if i + 8 + length > end:
            raise Refused("orb.bad_annotation", "an annotation chunk overruns the annotations")
        out[ident.decode("ascii")] = chunks[i + 8 : i + 8 + length]
        i += 8 + length
    return out


def inflate(data: bytes, limit: int) -> bytes:
    """Decompress a FLAGS_COMPRESSED body, refusing it as soon as it expands past `limit`.

    `decompressobj().decompress(data, limit + 1)` never produces more than `limit + 1` bytes, so a
    zip bomb costs at most `limit` bytes of memory and the time to produce them.
    """
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise Refused("orb.bad_message", f"a compressed body that does not inflate: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise Refused(
            "orb.expansion", f"a compressed body expands past this serializer's limit of {limit}"
        )
    if not d.eof or d.unused_data:
        raise Refused("orb.bad_message", "a compressed body is truncated or has trailing bytes")
    return out


def decode(ser_id: int, data: bytes, limits: ServerLimits, call: bool) -> Any:
    """Decode a body with a safe serializer: `loadsCall` if `call`, else `loads`."""
    try:
        n = len(data)
        if ser_id == MSGPACK_ID:
            if n > limits.max_containers:
                return _msgpack_counted(data, limits)
            return msgpack.unpackb(
                data, raw=False, object_hook=_MSGPACK.object_hook, **_msgpack_bounds(n)
            )
        if ser_id == JSON_ID and n > limits.max_containers:
            containers = data.count(b"[") + data.count(b"{")
            if containers > limits.max_containers:
                raise _too_many(limits)
        ser = _BY_ID[ser_id]
        return ser.loadsCall(data) if call else ser.loads(data)
    except Refused:
        raise
    except Exception as e:  # RecursionError, SyntaxError, ValueError, …: all undecodable
        name = type(_BY_ID[ser_id]).__name__
        raise Refused("orb.bad_message", f"undecodable {name} body: {type(e).__name__}") from None


def _msgpack_counted(data: bytes, limits: ServerLimits) -> Any:
    """Pyro5's `MsgpackSerializer.loads`, bounded, for bodies longer than the container budget.

    The length bounds are those msgpack derives from the buffer size anyway (an element takes at
    least one byte), stated so a msgpack upgrade cannot loosen them. A body no longer than the
    container budget cannot exceed it (a container takes at least a byte), so only longer ones pay
    for the counting hooks.
    """
    n = len(data)
    left = limits.max_containers

    def count(x: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise _too_many(limits)
        return x

    return msgpack.unpackb(
        data,
        raw=False,
        object_hook=lambda x: _MSGPACK.object_hook(count(x)),
        list_hook=count,
        **_msgpack_bounds(n),
    )


def _msgpack_bounds(n: int) -> dict[str, Any]:
    """Pyro5's ext hook and the length bounds msgpack derives from a body of `n` bytes, made
    explicit so that a msgpack upgrade cannot loosen them."""
    return {
        "ext_hook": _MSGPACK.ext_hook,
        "max_str_len": n,
        "max_bin_len": n,
        "max_array_len": n,
        "max_map_len": n // 2,
        "max_ext_len": n,
    }


def _too_many(limits: ServerLimits) -> Refused:
    return Refused("orb.too_large", f"a body builds more than {limits.max_containers} lists/dicts")
