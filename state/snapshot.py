"""Chunked state transfer: the donor splits a snapshot, the joiner reassembles and verifies it.

Why chunks: a snapshot can be many megabytes, and one huge message would monopolise the channel
(and the group's flow control) while the group keeps running. Why a digest: the joiner installs
the state as the truth it will act on, so a chunk lost to a bug, reordered under the wrong index
or corrupted must be caught before the state is applied, not after replicas diverge.

Assumptions about the channel below: point-to-point and reliable, but a retry may deliver a
chunk twice and chunks may arrive in any order. The assembler therefore keys chunks by index,
ignores exact duplicates, and refuses anything that cannot belong to the announced snapshot.

Transfer protocol (driven by the replication layer, not here):
    donor:  hdr = snap.header(); send hdr; for i, c in enumerate(split(snap.data)): send (i, c)
    joiner: asm = Assembler.for_header(hdr); ... if asm.add(i, c): snap = Snapshot.from_header(hdr,
            asm.result())
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cohort.errors import CohortError

__all__ = ["CHUNK_SIZE", "SnapshotError", "digest", "split", "Assembler", "Snapshot"]

CHUNK_SIZE = 32 * 1024
"""Default chunk size: small enough to interleave with ordinary traffic, big enough that the
per-chunk header is negligible."""


class SnapshotError(CohortError, ValueError):
    """A chunk or an assembled snapshot does not match what the donor announced."""


def digest(data: bytes) -> bytes:
    """16-byte BLAKE2b digest: fast, and collision-resistant even against a faulty donor."""
    return hashlib.blake2b(data, digest_size=16).digest()


def split(data: bytes, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """Cut `data` into chunks of `chunk_size` bytes (the last may be shorter). Always returns at
    least one chunk, so an empty state is still transferred (and acknowledged) explicitly."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    data = bytes(data)
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]


class Assembler:
    """Collects the chunks of one snapshot, in any order and with duplicates, and checks them.

    `add` rejects what can never be part of the announced snapshot (bad index, too many bytes,
    a duplicate index with different bytes); `result` checks the total size and the digest.
    """

    def __init__(self, total_chunks: int, total_size: int, digest: bytes) -> None:
        if total_chunks < 1:
            raise SnapshotError(f"a snapshot has at least one chunk, header says {total_chunks}")
        if total_size < 0:
            raise SnapshotError(f"negative snapshot size {total_size}")
        self.total_chunks = total_chunks
        self.total_size = total_size
        self.digest = bytes(digest)
        self.bytes_received = 0
        self._chunks: dict[int, bytes] = {}

    @classmethod
    def for_header(cls, header: dict[str, Any]) -> Assembler:
        """An assembler for the snapshot announced by `Snapshot.header()`."""
        return cls(header["chunks"], header["size"], header["digest"])

    @property
    def received(self) -> int:
        """Number of distinct chunks received so far."""
        return len(self._chunks)

    def complete(self) -> bool:
        return len(self._chunks) == self.total_chunks

    def missing(self) -> list[int]:
        """Indices not yet received, for asking the donor to resend them."""
        return [i for i in range(self.total_chunks) if i not in self._chunks]

    def add(self, index: int, chunk: bytes) -> bool:
        """Store chunk `index`; return True once every chunk is in. A duplicate (a retry) is
        ignored if its bytes match the copy already held."""
        if not isinstance(index, int) or not 0 <= index < self.total_chunks:
            raise SnapshotError(
                f"chunk index {index} out of range: the snapshot has {self.total_chunks} chunks"
            )
        old = self._chunks.get(index)
        if old is not None:
            if old != chunk:
                raise SnapshotError(f"chunk {index} arrived twice with different contents")
            return self.complete()
        if self.bytes_received + len(chunk) > self.total_size:
            raise SnapshotError(
                f"chunk {index} ({len(chunk)} bytes) would bring the snapshot to "
                f"{self.bytes_received + len(chunk)} bytes, more than the announced "
                f"{self.total_size}"
            )
        self._chunks[index] = bytes(chunk)
        self.bytes_received += len(chunk)
        return self.complete()

    def progress(self) -> float:
        """Fraction received, 0.0 to 1.0, by bytes (by chunks for an empty snapshot); for the
        progress log of large transfers."""
        if self.total_size:
            return self.bytes_received / self.total_size
        return len(self._chunks) / self.total_chunks

    def result(self) -> bytes:
        """The reassembled snapshot, after checking completeness, size and digest."""
        if not self.complete():
            missing = self.missing()
            raise SnapshotError(
                f"snapshot incomplete: {len(missing)} of {self.total_chunks} chunks missing "
                f"(first: {missing[:8]})"
            )
        data = b"".join(self._chunks[i] for i in range(self.total_chunks))
        if len(data) != self.total_size:
            raise SnapshotError(f"snapshot is {len(data)} bytes, announced {self.total_size}")
        if digest(data) != self.digest:
            raise SnapshotError(
                "snapshot digest mismatch: a chunk was corrupted or mis-indexed; "
                "discard it and restart the transfer"
            )
        return data


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The value carried by a state transfer: user state as of a point in the total order.

    `vid` is the view id `(ltime, coordinator)` the snapshot was cut in; `pos` counts the
    ordered deliveries of that view already reflected in `data` (the joiner applies view
    messages from `pos` on); `applied` counts every ordered invocation ever applied, a
    cross-view sanity check; `data` is the encoded state (`cohort.state.codec.dumps`).
    """

    vid: tuple[int, str]
    pos: int
    applied: int
    data: bytes = field(repr=False)

    def header(self, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
        """Everything but the data, plus what the joiner needs to check it: `size`,
        `chunk_size`, `chunks` (the length of `self.chunks(chunk_size)`) and `digest`. All values
        are plain msgpack types (vid is a tuple, which `cohort.state.codec` carries)."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return {
            "vid": self.vid,
            "pos": self.pos,
            "applied": self.applied,
            "size": len(self.data),
            "chunk_size": chunk_size,
            "chunks": max(1, -(-len(self.data) // chunk_size)),
            "digest": digest(self.data),
        }

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
        """The data split for sending; matches `header(chunk_size)["chunks"]`."""
        return split(self.data, chunk_size)

    @classmethod
    def from_header(cls, header: dict[str, Any], data: bytes) -> Snapshot:
        """Rebuild the snapshot on the joiner from its header and `Assembler.result()`."""
        vid = header["vid"]
        return cls(vid=(vid[0], vid[1]), pos=header["pos"], applied=header["applied"], data=data)
