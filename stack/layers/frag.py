"""Fragmentation: a message larger than a datagram travels as a run of fragments.

Why: a UDP datagram carries at most ~64 KiB, and the transport packs packets into datagrams of
`cohort.stack.transport.datagrams.MAX_DATAGRAM` bytes; an application message (a snapshot chunk, a big invocation) can be
many MiB. Cutting it here, above the reliability layers, means every fragment is retransmitted on
its own (one lost datagram costs one fragment, not the message) and no layer below ever sees a
packet that does not fit.

Assumes from below: reliable FIFO per origin for casts (nak) and per sender for sends (pt2pt), all
of one view; for whole-message total order, that the layers below order fragments (sequencer).

Theory of operation:
- Down: a payload of at most `frag_size` bytes gets the header None (the common case pays one byte
  on the wire and a list append/pop). A larger one is cut into n equal chunks (the last one may be
  shorter) sent as consecutive casts (or sends) with headers (FRAG, i, n); the headers of the
  layers above ride on the last fragment. Chunks are zero-copy memoryviews of the payload.
- A sender's fragments of one message are consecutive in its FIFO stream: nothing below us
  interleaves one origin's casts (flow queues them in order), so a receiver keeps one partial
  message per origin and stream and checks that fragment i follows fragment i-1 of the same n.
- The message is delivered when its last fragment is: its place in the stream below is the
  message's place, so a total order of fragments is a total order of messages, FIFO likewise, and
  members that deliver the same fragments in a view deliver the same whole messages.
- All fragments of a message are cast in one view (flow sends its queue before the flush, see
  flow.py). A message still partial when the view ends is partial at every survivor alike, and
  dropped with this layer instance (counted as `frag.partial_dropped`).
- `Safe(k)` from below counts deliveries of fragments; it is translated into whole messages: the
  positions (in the stream below) of fragments absorbed without a delivery are kept as intervals,
  and Safe(k) becomes k minus the absorbed positions up to k. Nothing is kept per small message.
- Malformed fragments (bad shape, out of sequence, uneven chunks, beyond `max_size`) are counted
  and dropped together with the partial message they would join; nothing raises.
Reassembly memory is bounded by `max_size` per origin and stream. Requires: fifo. Provides: frag.

Headers on casts and sends: None (whole message) or (FRAG, index, count).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from cohort.stack.events import (
    Backpressure,
    Block,
    BlockOk,
    Cast,
    Deliver,
    DeliverSend,
    Lease,
    Leave,
    Safe,
    Send,
    Stable,
    View,
)
from cohort.stack.layer import Layer

FRAG = 0


@dataclass(frozen=True, slots=True)
class Params:
    #: largest payload sent in one piece (bytes); a fragment's packet (payload, every layer's
    #: header and nak's retransmission header) must stay under cohort.stack.transport.datagrams.MAX_DATAGRAM (60000)
    frag_size: int = 59_000
    #: largest message accepted (bytes), sent or reassembled; bounds reassembly memory per origin
    max_size: int = 64 << 20

    def __post_init__(self) -> None:
        if self.frag_size < 1 or self.max_size < self.frag_size:
            raise ValueError("need 1 <= frag_size <= max_size")


class _Partial:
    """A message being reassembled: fragments expected, chunks so far, their total size."""

    __slots__ = ("n", "chunks", "size")

    def __init__(self, n: int) -> None:
        self.n = n
        self.chunks: list = []
        self.size = 0


class Frag(Layer):
    name: ClassVar[str] = "frag"
    provides: ClassVar[frozenset[str]] = frozenset({"frag"})
    requires: ClassVar[frozenset[str]] = frozenset({"fifo"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Lease, Stable, Block, Backpressure})
    passes_down: ClassVar[frozenset[type]] = frozenset({BlockOk, Leave})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        self._up, self._down = ctx.up, ctx.down  # bound once: the hot paths call them per message
        self.frag_size = params.frag_size
        self.max_size = params.max_size
        self.casts: dict[int, _Partial] = {}  # origin -> cast being reassembled
        self.sends: dict[int, _Partial] = {}  # origin -> send being reassembled
        self.below = 0  # casts delivered to us from below in this view (fragments count one each)
        self.gaps: deque[list[int]] = deque()  # [lo, hi]: positions absorbed, not delivered up
        self.gone = 0  # absorbed positions in gaps already dropped (all below the last Safe)
        self.safe = 0  # the last Safe count passed up (whole messages)

    # --- down ------------------------------------------------------------------------------------

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Cast or cls is Send:
            if len(ev.payload) <= self.frag_size:
                ev.hdrs.append(None)
                self._down(ev)
            else:
                self._split(ev)
        else:
            self._down(ev)

    def _split(self, ev: Cast | Send) -> None:
        payload = ev.payload
        size = len(payload)
        if (
            size > self.max_size
        ):  # cohort.stack.transport.group refuses it before; receivers would drop it anyway
            self.ctx.count("frag.too_large_sent")
            return
        if type(payload) is not bytes:
            payload = bytes(payload)  # a bytearray could change under the queued fragments
        whole = memoryview(payload)
        fs = self.frag_size
        n = -(-size // fs)
        down = self.ctx.down
        if type(ev) is Cast:
            for i in range(n - 1):
                down(Cast(whole[i * fs : (i + 1) * fs], [(FRAG, i, n)]))
        else:
            for i in range(n - 1):
                down(Send(ev.dest, whole[i * fs : (i + 1) * fs], [(FRAG, i, n)]))
        ev.payload = whole[(n - 1) * fs :]
        ev.hdrs.append((FRAG, n - 1, n))
        down(ev)

    # --- up --------------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:  # the hot path: a whole message, nothing being reassembled
            self.below += 1
            h = ev.hdrs.pop()
            if h is None and not self.casts:
                self._up(ev)
            else:
                self._cast_in(ev, h)
        elif cls is DeliverSend:
            h = ev.hdrs.pop()
            if h is None and not self.sends:
                self.ctx.up(ev)
            else:
                payload = self._join(self.sends, ev.origin, h, ev.payload)
                if payload is not None:
                    ev.payload = payload
                    self.ctx.up(ev)
        elif cls is Safe:
            if self.gaps or self.gone:
                self._safe(ev.count)
            else:
                self.safe = ev.count
                self.ctx.up(ev)
        elif cls is View:
            dropped = len(self.casts) + len(self.sends)
            if dropped:
                self.ctx.count("frag.partial_dropped", dropped)
            self.ctx.up(ev)
        else:
            self.ctx.up(ev)

    def _cast_in(self, ev: Deliver, h: Any) -> None:
        payload = self._join(self.casts, ev.origin, h, ev.payload)
        if payload is None:
            self._absorb(self.below)
            return
        ev.payload = payload
        self.ctx.up(ev)

    def _join(self, parts: dict[int, _Partial], origin: int, h: Any, payload: Any) -> Any:
        """The whole payload if this completes a message (or is one), else None (absorbed)."""
        if h is None:  # a whole message while one of this origin is partial: its stream is broken
            if parts.pop(origin, None) is not None:
                self.ctx.count("frag.bad_sequence")
            return payload
        if (
            type(h) not in (list, tuple)
            or len(h) != 3
            or h[0] != FRAG
            or type(h[1]) is not int
            or type(h[2]) is not int
            or not 0 <= h[1] < h[2]
            or h[2] < 2
            or not payload
        ):
            parts.pop(origin, None)
            self.ctx.count("frag.bad_header")
            return None
        i, n = h[1], h[2]
        size = len(payload)
        part = parts.get(origin)
        if i == 0:
            if part is not None:
                self.ctx.count("frag.bad_sequence")
            part = parts[origin] = _Partial(n)
        elif (
            part is None
            or part.n != n
            or len(part.chunks) != i
            or size > len(part.chunks[0])
            or (i < n - 1 and size != len(part.chunks[0]))
        ):
            parts.pop(origin, None)
            self.ctx.count("frag.bad_sequence")
            return None
        part.size += size
        if part.size > self.max_size:
            del parts[origin]
            self.ctx.count("frag.too_large")
            return None
        part.chunks.append(payload)
        if i < n - 1:
            return None
        del parts[origin]
        return b"".join(part.chunks)

    def _absorb(self, pos: int) -> None:
        gaps = self.gaps
        if gaps and gaps[-1][1] == pos - 1:
            gaps[-1][1] = pos
        else:
            gaps.append([pos, pos])

    def _safe(self, k: int) -> None:
        """Safe(k) counts positions below; pass up how many whole messages that covers."""
        gaps = self.gaps
        while gaps and gaps[0][1] <= k:
            lo, hi = gaps.popleft()
            self.gone += hi - lo + 1
        partial = k - gaps[0][0] + 1 if gaps and gaps[0][0] <= k else 0
        whole = k - self.gone - partial
        if whole > self.safe:
            self.safe = whole
            self.ctx.up(Safe(whole))

    def dump(self) -> dict:
        return {
            "partial_casts": {o: len(p.chunks) for o, p in self.casts.items()},
            "partial_sends": {o: len(p.chunks) for o, p in self.sends.items()},
        }


def fmt_header(h: Any) -> str:
    return "-" if h is None else f"FRAG{tuple(h[1:])}"
