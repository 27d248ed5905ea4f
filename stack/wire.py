"""One msgpack call per packet: bottom header, the layers' header list and the payload.

Why one call: packing each layer's header separately would cost a C round trip per layer per message.
Malformed input never raises out of here: `decode` returns None and the caller counts the drop.

In-view packet:  [kind, view_tag, sender_rank, hdrs, payload]   kind in CAST, SEND, CONTROL
Out-of-view:     [OOB, sender_address, msg]                        (join, view installation)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

CAST, SEND, CONTROL, OOB = 0, 1, 2, 3

_packb = msgpack.Packer(use_bin_type=True).pack


def encode(kind: int, tag: int, rank: int, hdrs: list, payload: bytes) -> bytes:
    return _packb([kind, tag, rank, hdrs, payload])


def encode_oob(src: str, msg: Any) -> bytes:
    return _packb([OOB, src, msg])


def decode(data: bytes) -> list | None:
    """The packet as a list, or None when it is not a well-formed packet of ours."""
    try:
        pkt = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception:  # msgpack raises several unrelated types on garbage; all mean "drop"
        return None
    return validate(pkt)


def validate(pkt: object) -> list | None:
    """`pkt` if it has the shape of one of our packets, else None."""
    if type(pkt) is not list or not pkt:
        return None
    kind = pkt[0]
    if kind == OOB:
        if len(pkt) != 3 or type(pkt[1]) is not str:
            return None
        return pkt
    if (
        len(pkt) != 5
        or kind not in (CAST, SEND, CONTROL)
        or type(pkt[1]) is not int
        or type(pkt[2]) is not int
        or type(pkt[3]) is not list
        or type(pkt[4]) is not bytes
    ):
        return None
    return pkt


def unbatch(datagram: bytes) -> Iterator[object]:
    """The decoded packets of a datagram of concatenated packets (drivers pack them per loop tick,
    `cohort.stack.transport.datagrams`); stops quietly at the first malformed byte."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True)
    unpacker.feed(datagram)
    try:
        yield from unpacker
    except Exception:  # garbage after valid packets: the rest is dropped (and counted by caller)
        return
