"""State transfer sessions: one snapshot streamed to every replica that needs it, under a window.

Why a session per snapshot and not per joiner: two replicas joining at once (or a group that lost
its donor and re-asks) used to cost one full snapshot each, built on the event loop. A session
freezes the state once (`cohort.state.stream.freeze`), encodes it lazily chunk by chunk as the slowest
recipient's window allows, and keeps only the chunks some recipient has not acknowledged.

Protocol (point-to-point, within one view; the engine drives it):
  donor -> joiner  HDR [11, xid, vid, pos]          the cut: view `vid`, after `pos` deliveries
                   CHUNK [10, xid, i, data]          at most `WINDOW` unacknowledged
                   END [15, xid, chunks, size, digest]   once the stream is exhausted
  joiner -> donor  ACK [14, xid, i]                 i == chunks: the END arrived
A session survives view changes that keep both sides (the cut stays valid: the joiner buffers
every delivery since its first view), resending what was not acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cohort.replication.messages import CHUNK, END, HDR
from cohort.state.stream import SnapshotReader, SnapshotWriter

#: state-transfer chunks in flight per recipient
WINDOW = 8
CHUNK_SIZE = 32 * 1024


class _Recipient:
    __slots__ = ("next", "acked", "ended")

    def __init__(self) -> None:
        self.next = 0
        self.acked = 0
        self.ended = False


class Session:
    """The donor side of one snapshot: chunks generated once, sent to each recipient."""

    def __init__(
        self,
        xid: int,
        vid: tuple,
        pos: int,
        frozen: Any,
        send: Callable[[str, list], None],
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.xid = xid
        self.vid = vid
        self.pos = pos
        self.writer = SnapshotWriter(frozen, chunk_size)
        self._gen: Iterator[bytes] | None = iter(self.writer)
        self._send = send
        self._cache: list[bytes] = []  # chunks base .. base + len - 1
        self._base = 0
        self.recipients: dict[str, _Recipient] = {}

    def add(self, member: str) -> None:
        """Start sending to `member` (recipients join a session only when it starts)."""
        if member in self.recipients:
            return
        self.recipients[member] = _Recipient()
        self._send(member, [HDR, self.xid, list(self.vid), self.pos])
        self.pump(member)

    def _chunk(self, i: int) -> bytes | None:
        while self._base + len(self._cache) <= i:
            if self._gen is None:
                return None
            try:
                self._cache.append(next(self._gen))
            except StopIteration:
                self._gen = None
                return None
        return self._cache[i - self._base]

    def _trim(self) -> None:
        low = min((r.acked for r in self.recipients.values()), default=self._base)
        drop = low - self._base
        if drop > 0:
            del self._cache[:drop]
            self._base = low

    def pump(self, member: str) -> None:
        r = self.recipients.get(member)
        if r is None:
            return
        while r.next < r.acked + WINDOW:
            chunk = self._chunk(r.next)
            if chunk is None:
                break
            self._send(member, [CHUNK, self.xid, r.next, chunk])
            r.next += 1
        w = self.writer
        if self._gen is None and r.next >= w.chunks and not r.ended:
            r.ended = True
            self._send(member, [END, self.xid, w.chunks, w.size, w.digest])

    def ack(self, member: str, index: int) -> None:
        """ACK of chunk `index`; index == chunks acknowledges the END (the recipient is done)."""
        r = self.recipients.get(member)
        if r is None:
            return
        r.acked = max(r.acked, index + 1)
        if self._gen is None and r.acked > self.writer.chunks:
            del self.recipients[member]
        else:
            self.pump(member)
        self._trim()

    def resume(self, members: tuple[str, ...]) -> None:
        """After a view change both sides survived: what was in flight may be lost, so resend
        the header and everything not acknowledged (the reader ignores duplicates)."""
        for m in [m for m in self.recipients if m not in members]:
            del self.recipients[m]
        self._trim()
        for m, r in self.recipients.items():
            r.next = min(r.acked, self.writer.chunks if self._gen is None else r.acked)
            r.ended = False
            self._send(m, [HDR, self.xid, list(self.vid), self.pos])
            self.pump(m)

    @property
    def finished(self) -> bool:
        return not self.recipients


class Incoming:
    """The joiner side of one snapshot."""

    __slots__ = ("xid", "donor", "vid", "pos", "reader", "started")

    def __init__(self, xid: int, donor: str, vid: tuple, pos: int, started: float) -> None:
        self.xid = xid
        self.donor = donor
        self.vid = vid
        self.pos = pos
        self.reader = SnapshotReader()
        self.started = started
