"""Pyro5's wire protocol as both our sides speak it: the serializers we accept and one frame.

Why a module of its own: the replica's server (`wire`) and the client connection (`connection`)
frame messages alike, and a client must not need the server's code to do so.
"""

from __future__ import annotations

from Pyro5 import protocol, serializers

#: what our clients send
SERIALIZER = serializers.serializers["msgpack"]
_JSON = serializers.serializers["json"]
#: what the server decodes: never pickle or marshal
SAFE_SERIALIZERS = {
    s.serializer_id: s
    for name, s in serializers.serializers.items()
    if name in ("msgpack", "serpent", "json")
}


def _frame(msgtype: int, seq: int, ser_id: int, payload: bytes, flags: int = 0) -> bytes:
    return protocol.SendingMessage(msgtype, flags, seq, ser_id, payload).data


__all__ = ["SAFE_SERIALIZERS", "SERIALIZER", "_frame"]
