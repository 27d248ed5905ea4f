"""Calls larger than the group's largest message fail at once with MessageTooLarge, naming the size,
the limit and the parameter; nothing too large is cast, and batches stay within the limit."""

from __future__ import annotations

import msgpack
from cohort.orb import errors as st
from cohort.orb.errors import MESSAGE_OVERHEAD
from cohort.replication.api import query, replicated
from cohort.replication.engine import BATCH
from enginekit import Group, submit

LIMIT = MESSAGE_OVERHEAD + 10_000


@replicated
class Store:
    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> int:
        self.items[key] = value
        return len(self.items)

    @query
    def dump(self, n: int) -> bytes:
        return b"x" * n


def limited(g: Group) -> Group:
    for e in g.engines.values():
        e.max_message = LIMIT
    return g


def test_too_large_arguments_fail_at_once_and_are_not_cast():
    g = limited(Group().form(Store))
    before = len(g.casts)
    r = submit(g["a"], "put", "k", b"v" * 20_000, rid=1)
    e = r.error
    assert isinstance(e, st.MessageTooLarge) and isinstance(e, ValueError)
    assert "the arguments of put()" in str(e) and f"{LIMIT:,} bytes" in str(e)
    assert "frag.max_size" in str(e)
    assert len(g.casts) == before  # nothing went to the group
    ok = submit(g["a"], "put", "k", b"v" * 100, rid=2)
    g.settle()
    assert ok.value == 1


def test_a_too_large_result_is_an_error_at_every_replica_alike():
    g = limited(Group().form(Store))
    r = submit(g["a"], "dump", 20_000, rid=1)
    g.settle()
    assert isinstance(r.error, st.MessageTooLarge) and "the result of dump()" in str(r.error)
    assert len(g.digests()) == 1


def test_batches_stay_within_the_limit():
    sizes = []
    g = Group().form(Store)
    e = g["a"]
    e.max_message = LIMIT
    scheduled = []
    e._schedule = scheduled.append  # hold the calls of one "tick" to batch them
    for i in range(5):
        submit(e, "put", f"k{i}", b"v" * 4_000, rid=10 + i)
    assert len(scheduled) == 1
    n0 = len(g.order)
    scheduled[0]()
    for _name, payload in g.order[n0:]:
        sizes.append(len(payload))
        msg = msgpack.unpackb(payload)
        assert msg[0] != BATCH or len(msg[1]) >= 2
    assert len(sizes) >= 2 and max(sizes) <= LIMIT, sizes
