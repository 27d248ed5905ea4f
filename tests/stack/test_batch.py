"""Batching packs many packets per datagram and unpacks them; garbage is dropped and counted."""

from __future__ import annotations

import os

from cohort.stack import compose, wire
from cohort.stack.events import Deliver
from cohort.stack.runtime import Endpoint
from cohort.stack.transport.datagrams import Batcher, unbatch
from cohort.stack.view import View

VIEW = View((1, "a"), ("a", "b"), True, ("a", "b"), (1, "a"))


def test_batcher_packs_per_destination_and_respects_the_size_limit():
    b = Batcher(limit=100)
    for _ in range(10):
        b.add("x", wire.encode(wire.CONTROL, 1, 0, [], bytes(30)))
    b.add("y", b"solo")
    out = list(b.drain())
    assert ("y", b"solo") in out
    xs = [d for dest, d in out if dest == "x"]
    assert all(len(d) <= 100 for d in xs) and len(xs) > 1
    assert sum(len(list(unbatch(d))) for d in xs) == 10
    assert not b


def test_unbatch_stops_at_garbage_and_keeps_what_came_before():
    good = wire.encode(wire.CONTROL, 1, 0, [], b"")
    assert len(list(unbatch(good + good + b"\xc1junk"))) == 2


def test_endpoint_receives_a_datagram_of_packets_and_counts_garbage():
    a = Endpoint("a", compose("fifo"), initial_view=VIEW)
    b = Endpoint("b", compose("fifo"), initial_view=VIEW)
    for i in range(5):
        a.cast(b"m%d" % i)
    datagram = b"".join(data for dest, data in a.take_packets() if dest == "b")
    b.receive_datagram("a", datagram)
    got = [e.payload for e in b.take_events() if type(e) is Deliver]
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    b.receive_datagram("a", os.urandom(64))
    b.receive_datagram("a", b"")
    assert b.counters["wire.malformed"] >= 2
