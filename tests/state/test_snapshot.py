"""cohort.state.snapshot: chunking, reassembly under reordering and duplicates, corruption detection."""

import random

import pytest
from cohort.state import Assembler, Snapshot, SnapshotError, digest, dumps, loads, split
from cohort.state.snapshot import CHUNK_SIZE
from hypothesis import given, settings
from hypothesis import strategies as st


def assembler_for(data: bytes, chunk_size: int) -> tuple[Assembler, list[bytes]]:
    chunks = split(data, chunk_size)
    return Assembler(len(chunks), len(data), digest(data)), chunks


def test_split_sizes() -> None:
    assert split(b"") == [b""]
    assert split(b"abc", 1) == [b"a", b"b", b"c"]
    assert split(b"abcde", 2) == [b"ab", b"cd", b"e"]
    assert split(b"abcd", 2) == [b"ab", b"cd"]
    assert split(bytearray(b"xy")) == [b"xy"]
    assert len(split(bytes(CHUNK_SIZE + 1))) == 2
    with pytest.raises(ValueError):
        split(b"x", 0)


def test_digest_is_16_byte_blake2b() -> None:
    import hashlib

    assert digest(b"abc") == hashlib.blake2b(b"abc", digest_size=16).digest()
    assert len(digest(b"")) == 16


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=300),
    chunk_size=st.integers(1, 64),
    rnd=st.randoms(use_true_random=False),
)
def test_any_order_with_duplicates_reassembles(
    data: bytes, chunk_size: int, rnd: random.Random
) -> None:
    asm, chunks = assembler_for(data, chunk_size)
    deliveries = list(enumerate(chunks)) * 2  # every chunk retried once
    rnd.shuffle(deliveries)
    done_at = None
    for n, (i, c) in enumerate(deliveries):
        if asm.add(i, c) and done_at is None:
            done_at = n
            assert asm.received == len(chunks) and asm.missing() == []
    assert done_at is not None
    assert asm.progress() == 1.0 and asm.bytes_received == len(data)
    assert asm.result() == data


def test_progress_and_missing() -> None:
    asm, chunks = assembler_for(b"0123456789", 4)  # 4 + 4 + 2 bytes
    assert asm.progress() == 0.0 and asm.missing() == [0, 1, 2]
    assert asm.add(2, chunks[2]) is False
    assert asm.progress() == pytest.approx(0.2) and asm.received == 1
    assert asm.add(2, chunks[2]) is False  # duplicate: no change
    assert asm.bytes_received == 2 and asm.missing() == [0, 1]
    with pytest.raises(SnapshotError, match="incomplete: 2 of 3 chunks missing"):
        asm.result()
    asm.add(0, chunks[0])
    assert asm.add(1, chunks[1]) is True
    assert asm.result() == b"0123456789"


def test_empty_snapshot() -> None:
    asm, chunks = assembler_for(b"", CHUNK_SIZE)
    assert chunks == [b""] and asm.progress() == 0.0
    assert asm.add(0, b"") is True
    assert asm.progress() == 1.0 and asm.result() == b""


@pytest.mark.parametrize("index", [-1, 3, 100, "0", 1.0])
def test_out_of_range_index_rejected(index: object) -> None:
    asm, chunks = assembler_for(b"0123456789", 4)
    with pytest.raises(SnapshotError, match="out of range"):
        asm.add(index, b"x")  # type: ignore[arg-type]


def test_oversize_rejected() -> None:
    asm, chunks = assembler_for(b"0123456789", 4)
    asm.add(0, chunks[0])
    asm.add(1, chunks[1])
    with pytest.raises(SnapshotError, match="more than the announced 10"):
        asm.add(2, b"xyz")
    assert asm.add(2, chunks[2]) is True  # the rejected chunk left no trace


def test_conflicting_duplicate_rejected() -> None:
    asm, chunks = assembler_for(b"0123456789", 4)
    asm.add(1, chunks[1])
    with pytest.raises(SnapshotError, match="twice with different contents"):
        asm.add(1, b"XXXX")


def test_corrupted_chunk_fails_digest() -> None:
    data = random.Random(1).randbytes(1000)
    asm, chunks = assembler_for(data, 100)
    bad = bytearray(chunks[4])
    bad[17] ^= 0x01
    chunks[4] = bytes(bad)
    for i, c in enumerate(chunks):
        asm.add(i, c)
    with pytest.raises(SnapshotError, match="digest mismatch"):
        asm.result()


def test_swapped_chunks_fail_digest() -> None:
    asm, chunks = assembler_for(b"aaaabbbb", 4)
    asm.add(0, chunks[1])
    asm.add(1, chunks[0])
    with pytest.raises(SnapshotError, match="digest mismatch"):
        asm.result()


def test_short_total_fails_size_check() -> None:
    chunks = split(b"0123456789", 4)
    asm = Assembler(3, 12, digest(b"0123456789"))  # header claims 12 bytes
    for i, c in enumerate(chunks):
        asm.add(i, c)
    with pytest.raises(SnapshotError, match="10 bytes, announced 12"):
        asm.result()


def test_bad_headers_rejected() -> None:
    with pytest.raises(SnapshotError):
        Assembler(0, 0, digest(b""))
    with pytest.raises(SnapshotError):
        Assembler(1, -1, digest(b""))


def test_five_mib_random_roundtrip() -> None:
    rnd = random.Random(5)
    data = rnd.randbytes(5 * 1024 * 1024)
    asm, chunks = assembler_for(data, CHUNK_SIZE)
    assert len(chunks) == 160
    order = list(range(len(chunks))) + rnd.sample(range(len(chunks)), 20)
    rnd.shuffle(order)
    for i in order:
        asm.add(i, chunks[i])
    assert asm.result() == data


def test_snapshot_header_travels_through_codec() -> None:
    state_bytes = dumps({"accounts": {"bob": 5}, "replies": {("c1", 3): "ok"}}, root="state")
    snap = Snapshot(vid=(4, "node-a"), pos=17, applied=1234, data=state_bytes)
    header = loads(dumps(snap.header(chunk_size=8)))  # the header is sent with the codec
    assert header == {
        "vid": (4, "node-a"),
        "pos": 17,
        "applied": 1234,
        "size": len(state_bytes),
        "chunk_size": 8,
        "chunks": len(snap.chunks(8)),
        "digest": digest(state_bytes),
    }
    asm = Assembler.for_header(header)
    for i, c in reversed(list(enumerate(snap.chunks(8)))):
        asm.add(i, c)
    got = Snapshot.from_header(header, asm.result())
    assert got == snap
    assert loads(got.data)["replies"] == {("c1", 3): "ok"}
    assert "data" not in repr(snap)
    with pytest.raises(ValueError):
        snap.header(chunk_size=0)


def test_snapshot_of_empty_state_has_one_chunk() -> None:
    snap = Snapshot(vid=(1, "a"), pos=0, applied=0, data=b"")
    assert snap.header()["chunks"] == 1 == len(snap.chunks())
