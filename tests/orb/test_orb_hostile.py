"""Each hostile input of the client port, against an in-process WireServer on 127.0.0.1.

Every test fires one kind of input while an honest client keeps calling over its own connection,
and asserts that the input is refused (fast, counted under its `orb.*` name, without a traceback
or a log line per connection) and that the honest calls kept completing.
"""

from __future__ import annotations

import logging
import socket
import time
import zlib

import Pyro5.api
import pytest
from cohort.orb.connection import Connection
from cohort.orb.limits import KiB, MiB, ServerLimits
from orbkit import (
    JSON,
    MARSHAL,
    MSGPACK,
    OBJ,
    SERPENT,
    Honest,
    Server,
    annotation,
    connect_frame,
    exchange,
    frame,
    invoke_frame,
    orb_records,
    reply_of,
    wait_until,
)
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def served(caplog):
    """`served(limits)` -> (Server, Honest); both stopped after the test, loop errors asserted."""
    caplog.set_level(logging.DEBUG)
    made: list[tuple[Server, Honest]] = []

    def make(limits: ServerLimits | None = None) -> tuple[Server, Honest]:
        s = Server(limits)
        h = Honest(s.addr)
        made.append((s, h))
        return s, h

    yield make
    for s, h in made:
        h.stop()
        s.stop()
        assert s.loop_errors == []
    bad = [r for r in orb_records(caplog) if r.exc_info or r.levelno >= logging.WARNING]
    assert bad == []


def after_connect(addr: str, data: bytes, ser: int = MSGPACK) -> tuple[bytes, float]:
    """CONNECT, then send `data`; what came back after the CONNECTOK, and how long that took."""
    raw, took = exchange(addr, connect_frame(ser) + data)
    kind, _ = reply_of(raw)
    assert kind == protocol.MSG_CONNECTOK
    n = int.from_bytes(raw[12:16], "big") + int.from_bytes(raw[16:20], "big")
    return raw[protocol._header_size + n :], took


def reason(raw: bytes) -> str:
    """The reason in a refusal (a CONNECTFAIL, or an INVOKE's ProtocolError result)."""
    kind, body = reply_of(raw)
    if kind == protocol.MSG_RESULT:
        assert isinstance(body, pyro_errors.ProtocolError), body
        return str(body)
    assert kind == protocol.MSG_CONNECTFAIL, kind
    return body


def test_oversized_serpent_body_is_refused_from_its_header(served):
    s, honest = served()
    body = b"[" + b"1," * (2 * MiB - 1) + b"1]"  # 4 MB: took 10 s and 1.9 GB to parse
    raw, took = after_connect(s.addr, frame(protocol.MSG_INVOKE, SERPENT, body), SERPENT)
    assert "exceeds this serializer's limit of 65536" in reason(raw)
    print(f"4 MB serpent body refused in {took * 1000:.1f} ms")
    assert took < 1.0
    assert s.counters == {"orb.too_large": 1}
    honest.check()


def test_serpent_body_under_the_limit_is_decoded_off_the_loop(served):
    s, honest = served()
    body = b"[" + b"1," * (32 * KiB - 1) + b"1]"  # 64 KiB: the largest serpent body allowed
    call = b"('%s','size',(%s,),{})" % (OBJ.encode(), body)
    call = call[: 64 * KiB]  # truncated: undecodable, reported to the client, connection kept
    raw, took = after_connect(s.addr, frame(protocol.MSG_INVOKE, SERPENT, call), SERPENT)
    kind, body = reply_of(raw)
    assert kind == protocol.MSG_RESULT and "undecodable SerpentSerializer body" in str(body)
    assert s.counters == {"orb.bad_message": 1}
    c = Connection(s.addr, OBJ, 5.0)  # and a well-formed large msgpack call is answered
    try:
        assert c.call("size", [list(range(100_000))], 5.0) == 100_000
        assert c.call("echo", [b"x" * (3 * MiB)], 5.0) == b"x" * (3 * MiB)
    finally:
        c.close()
    honest.check(max_latency=1.0)


def test_header_announcing_a_gibibyte_is_refused_before_reading(served):
    s, honest = served()
    hostile = frame(protocol.MSG_INVOKE, MSGPACK, b"\x00" * 1000, data_size=1 << 30)
    raw, took = after_connect(s.addr, hostile)
    assert "a body of 1073741824 bytes exceeds" in reason(raw)
    assert took < 1.0
    assert s.counters == {"orb.too_large": 1}
    honest.check()


def test_zlib_bomb_is_refused_at_the_limit(served):
    s, honest = served(ServerLimits(max_msgpack=1 * MiB))
    z = zlib.compressobj(9)
    bomb = b"".join(z.compress(b"\x00" * MiB) for _ in range(40)) + z.flush()  # 40 MiB in ~40 KB
    hostile = frame(protocol.MSG_INVOKE, MSGPACK, bomb, flags=protocol.FLAGS_COMPRESSED)
    raw, took = after_connect(s.addr, hostile)
    assert "expands past this serializer's limit" in reason(raw)
    assert took < 1.0
    small = zlib.compress(b"\x00" * 2000)  # small enough to inflate inline: still bounded
    hostile = frame(protocol.MSG_INVOKE, MSGPACK, small, flags=protocol.FLAGS_COMPRESSED)
    s2 = ServerLimits(max_msgpack=1000)
    s_small, honest2 = served(s2)
    raw, _ = after_connect(s_small.addr, hostile)
    assert "expands past" in reason(raw)
    assert s.counters == {"orb.expansion": 1} and s_small.counters == {"orb.expansion": 1}
    honest.check()
    honest2.check()


def test_honest_compressed_call_is_inflated_and_answered(served):
    s, honest = served()
    from Pyro5 import serializers

    for n in (10, 100_000):  # inflated inline, then on the worker
        body = serializers.serializers["msgpack"].dumpsCall(OBJ, "size", [b"y" * n], {})
        msg = frame(
            protocol.MSG_INVOKE, MSGPACK, zlib.compress(body), flags=protocol.FLAGS_COMPRESSED
        )
        raw, _ = after_connect(s.addr, msg)
        assert reply_of(raw) == (protocol.MSG_RESULT, n)
    assert s.counters == {}
    honest.check()


@pytest.mark.parametrize(
    "chunks, size, why",
    [
        (annotation(b"BIG!", b""), 200 * MiB, "annotations of 209715200 bytes exceed"),
        (annotation(b"BIG!", b"x" * 100, length=100 * KiB), None, "an annotation of 102400 bytes"),
        (b"".join(annotation(b"A%03d" % i, b"") for i in range(17)), None, "more than 16"),
        (annotation(b"\xff\xfe\xfd\xfc", b"data"), None, "is not ASCII"),
        (annotation(b"CORR", b"x", length=50), None, "overruns the annotations"),
        (b"ABC", None, "truncated annotation chunk header"),
    ],
)
def test_bad_annotations_are_refused(served, chunks, size, why):
    s, honest = served()
    call = invoke_frame("echo", ["hi"])[protocol._header_size :]
    hostile = frame(protocol.MSG_INVOKE, MSGPACK, call, annotations=chunks, annotations_size=size)
    raw, took = after_connect(s.addr, hostile)
    assert why in reason(raw)
    assert took < 1.0
    assert s.counters == {"orb.bad_annotation": 1}
    honest.check()


def test_honest_annotations_are_accepted(served):
    s, honest = served()
    call = invoke_frame("echo", ["hi"])[protocol._header_size :]
    ann = annotation(b"CORR", b"\x01" * 16) + annotation(b"BLBI", b"info")
    raw, _ = after_connect(s.addr, frame(protocol.MSG_INVOKE, MSGPACK, call, annotations=ann))
    assert reply_of(raw) == (protocol.MSG_RESULT, "hi")
    honest.check()


def test_msgpack_container_bomb_is_refused(served):
    s, honest = served(ServerLimits(max_containers=10_000))
    n = 100_000  # 100 KB of empty maps: 6 MB of dicts (16 MiB of them took 1.2 GB)
    bomb = b"\x94\xa4objt\xa4echo\x91\xdd" + n.to_bytes(4, "big") + b"\x80" * n + b"\x80"
    raw, took = after_connect(s.addr, frame(protocol.MSG_INVOKE, MSGPACK, bomb))
    assert "more than 10000 lists/dicts" in reason(raw)
    lists = b"\x94\xa4objt\xa4echo\x91\xdd" + n.to_bytes(4, "big") + b"\x90" * n + b"\x80"
    raw, took = after_connect(s.addr, frame(protocol.MSG_INVOKE, MSGPACK, lists))
    assert "more than 10000 lists/dicts" in reason(raw)
    brackets = b'{"object":"x","method":"echo","params":[' + b"[]," * n + b'[]],"kwargs":{}}'
    raw, took = after_connect(s.addr, frame(protocol.MSG_INVOKE, JSON, brackets), JSON)
    assert "more than 10000 lists/dicts" in reason(raw)
    assert s.counters == {"orb.too_large": 3}
    c = Connection(s.addr, OBJ, 5.0)  # long bodies with few containers still pass
    try:
        assert c.call("size", [b"z" * 200_000], 5.0) == 200_000
    finally:
        c.close()
    honest.check()


def test_msgpack_lengths_past_the_body_are_refused(served):
    s, honest = served()
    for lie in (b"\xdb\x7f\xff\xff\xff", b"\xc6\x7f\xff\xff\xff", b"\xdd\x7f\xff\xff\xff"):
        body = b"\x94\xa4objt\xa4echo\x91" + lie + b"\x00" * 64
        raw, took = after_connect(s.addr, frame(protocol.MSG_INVOKE, MSGPACK, body))
        assert reply_of(raw)[0] == protocol.MSG_RESULT  # the client hears why
        assert took < 1.0
    assert s.counters == {"orb.bad_message": 3}
    honest.check()


def test_refused_serializers_get_a_readable_refusal(served):
    s, honest = served()
    raw, took = exchange(s.addr, frame(protocol.MSG_CONNECT, MARSHAL, b"\x00", seq=0))
    assert "serializer id 2 (MarshalSerializer) is refused" in reason(raw)
    raw, _ = exchange(s.addr, frame(protocol.MSG_CONNECT, 99, b"\x00", seq=0))
    assert "serializer id 99 (unknown) is refused" in reason(raw)
    with Pyro5.api.Proxy(f"PYRO:{OBJ}@{s.addr}") as p:  # what a plain Pyro5 client shows
        p._pyroSerializer = "marshal"
        with pytest.raises(pyro_errors.CommunicationError, match="marshal|Marshal"):
            p._pyroBind()
    with Pyro5.api.Proxy(f"PYRO:{OBJ}@{s.addr}") as p:  # and serpent (its default) works
        assert p.echo("plain") == "plain"
    assert s.counters == {"orb.refused_serializer": 3}
    honest.check()


def test_excess_connections_are_refused_fast_and_quietly(served, caplog):
    limits = ServerLimits(max_connections=20)
    s, honest = served(limits)
    idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(19)]
    try:
        assert wait_until(lambda: s.connections() == 20)
        t = time.perf_counter()
        with pytest.raises(ConnectionError, match="at its connection limit \\(20"):
            Connection(s.addr, OBJ, 5.0)
        print(f"refused at the connection limit in {(time.perf_counter() - t) * 1000:.1f} ms")
        assert time.perf_counter() - t < 1.0
        with Pyro5.api.Proxy(f"PYRO:{OBJ}@{s.addr}") as p:
            with pytest.raises(pyro_errors.CommunicationError, match="connection limit"):
                p._pyroBind()
        extra = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(200)]
        for x in extra:
            x.close()
        assert wait_until(lambda: s.counters.get("orb.refused_connection", 0) >= 150)
        lines = [r for r in orb_records(caplog) if "connection limit" in r.getMessage()]
        assert len(lines) == 1  # once per kind per interval, not per connection
        honest.check()
    finally:
        for x in idle:
            x.close()
    assert wait_until(lambda: s.connections() == 1)
    c = Connection(s.addr, OBJ, 5.0)  # room again
    assert c.call("echo", [1]) == 1
    c.close()


def test_idle_connections_are_cut(served):
    limits = ServerLimits(handshake_timeout=0.3, idle_timeout=0.6)
    s, honest = served(limits)
    silent = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(5)]
    quiet = Connection(s.addr, OBJ, 5.0)  # connected, then says nothing
    t = time.perf_counter()
    assert wait_until(lambda: s.counters.get("orb.idle_timeout") == 5, within=3)
    assert 0.3 <= time.perf_counter() - t < 1.5
    assert wait_until(lambda: s.counters.get("orb.idle_timeout") == 6, within=3)
    for x in silent:
        assert x.recv(1) == b""  # closed by the server
        x.close()
    with pytest.raises(OSError):
        quiet.call("echo", [1], 2.0)
    honest.check()  # calling every few ms: never idle


def test_slowloris_is_cut(served):
    limits = ServerLimits(handshake_timeout=5, idle_timeout=5, message_timeout=0.5)
    s, honest = served(limits)
    hostile = connect_frame() + invoke_frame("echo", ["x" * 100])
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as x:
        x.sendall(hostile[:60])  # the CONNECT's header and a bit
        t = time.perf_counter()
        try:
            for b in hostile[60:]:
                x.sendall(bytes([b]))
                time.sleep(0.05)
        except OSError:
            pass
        took = time.perf_counter() - t
    assert s.counters == {"orb.message_timeout": 1}
    assert took < 2.0
    limits = ServerLimits(handshake_timeout=0.5)
    s2, honest2 = served(limits)
    with socket.create_connection(("127.0.0.1", s2.port), timeout=5) as x:  # header trickled
        try:
            for b in hostile:
                x.sendall(bytes([b]))
                time.sleep(0.05)
        except OSError:
            pass
    assert s2.counters == {"orb.idle_timeout": 1}
    honest.check()
    honest2.check()


def test_ping_with_pyro5s_own_serializer_id_is_answered(served):
    s, honest = served()
    raw, _ = exchange(s.addr, frame(protocol.MSG_PING, 42, b"ping", seq=7))
    msg = protocol.ReceivingMessage(raw[: protocol._header_size])
    assert msg.type == protocol.MSG_PING and msg.seq == 7
    assert s.counters == {}
    honest.check()
