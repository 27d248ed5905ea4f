"""cohort.orb.inbound, cohort.orb.budget and cohort.orb.limits alone: pure checks, no sockets."""

from __future__ import annotations

import asyncio
import datetime
import resource
import zlib

import pytest
from cohort.orb.budget import ByteBudget
from cohort.orb.inbound import Refused, decode, inflate, parse_annotations, parse_header
from cohort.orb.limits import KiB, MiB, ServerLimits
from orbkit import JSON, MSGPACK, SERPENT, annotation, frame
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol, serializers

pytestmark = pytest.mark.timeout(30)
L = ServerLimits()

HONEST = [
    ("obj", "m", [1, -2, 3.5, "ü", b"\x00\xff", None, True, [1, [2]], {"k": "v"}], {"a": 1}),
    ("obj", "m", [complex(1, 2), datetime.date(2024, 1, 2), 10**30], {}),
    ("obj", "m", [pyro_errors.CommunicationError("boom")], {}),
    ("obj", "m", [b"x" * (2 * MiB), list(range(50_000))], {}),  # long: the counted msgpack path
]


@pytest.mark.parametrize("ser_id", [MSGPACK, JSON, SERPENT])
@pytest.mark.parametrize("call", range(len(HONEST)))
def test_honest_calls_decode_as_pyro5_decodes_them(ser_id, call):
    ser = serializers.serializers_by_id[ser_id]
    try:
        data = ser.dumpsCall(*HONEST[call])
    except Exception:
        pytest.skip("this serializer cannot carry these values")
    lim = ServerLimits(max_serpent=64 * MiB, max_json=64 * MiB)
    ours, theirs = decode(ser_id, data, lim, call=True), ser.loadsCall(data)
    assert repr(list(ours)) == repr(list(theirs))
    assert repr(decode(ser_id, ser.dumps({"x": [1]}), lim, call=False)) == repr({"x": [1]})


def test_header_checks():
    def hdr(**kw):
        return frame(protocol.MSG_INVOKE, kw.pop("ser", MSGPACK), b"", **kw)[:40]

    assert parse_header(hdr(data_size=16 * MiB), L).data_size == 16 * MiB
    for kw, counter in [
        ({"data_size": 16 * MiB + 1}, "orb.too_large"),
        ({"ser": JSON, "data_size": 8 * MiB + 1}, "orb.too_large"),
        ({"ser": SERPENT, "data_size": 256 * KiB + 1}, "orb.too_large"),
        ({"ser": 2}, "orb.refused_serializer"),
        ({"ser": 0}, "orb.refused_serializer"),
        ({"annotations_size": 256 * KiB + 1}, "orb.bad_annotation"),
    ]:
        with pytest.raises(Refused) as e:
            parse_header(hdr(**kw), L)
        assert e.value.counter == counter and e.value.header is not None
    with pytest.raises(Refused, match="magic") as e:
        parse_header(b"PYRO" + bytes(36), L)
    assert e.value.counter == "orb.bad_message" and e.value.header is None


def test_annotations():
    chunks = annotation(b"CORR", b"x" * 16) + annotation(b"ABCD", b"")
    got = parse_annotations(memoryview(chunks), L)
    assert {k: bytes(v) for k, v in got.items()} == {"CORR": b"x" * 16, "ABCD": b""}
    with pytest.raises(Refused, match="not ASCII"):
        parse_annotations(memoryview(annotation("é!!".encode(), b"")), L)


def test_inflate_bounds_the_output():
    assert inflate(zlib.compress(b"a" * 1000), 1000) == b"a" * 1000
    with pytest.raises(Refused) as e:
        inflate(zlib.compress(b"a" * 1001), 1000)
    assert e.value.counter == "orb.expansion"
    for bad in (b"not zlib", zlib.compress(b"abc")[:-3], zlib.compress(b"abc") + b"tail"):
        with pytest.raises(Refused) as e:
            inflate(bad, 1000)
        assert e.value.counter == "orb.bad_message"


def test_budget_grants_in_order_and_survives_cancellation():
    async def scenario() -> list[str]:
        b, log = ByteBudget(10), []

        async def take(name: str, n: int) -> None:
            await b.acquire(n)
            log.append(name)

        await b.acquire(8)
        big = asyncio.ensure_future(take("big", 5))
        small = asyncio.ensure_future(take("small", 1))  # fits, but waits its turn behind big
        await asyncio.sleep(0)
        assert log == [] and b.used == 8
        gone = asyncio.ensure_future(take("gone", 2))
        await asyncio.sleep(0)
        gone.cancel()
        b.release(8)
        await asyncio.gather(big, small)
        assert b.used == 6
        return log

    assert asyncio.run(scenario()) == ["big", "small"]


def test_limits_validate_and_fit_the_file_limit():
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        ServerLimits(max_inflight_bytes=MiB)
    with pytest.raises(ValueError, match="timeouts"):
        ServerLimits(idle_timeout=0)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ServerLimits(max_connections=10**6).connection_cap() == soft - 64 - 100
    assert ServerLimits(max_connections=5).connection_cap() == 5
