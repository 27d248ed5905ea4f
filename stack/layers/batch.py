"""Batching: the casts an application makes in one event-loop tick travel as one message.

Why: below this layer every message costs a pass through every layer (headers, sequence numbers,
ordering slots, stability counts) — about 10 µs of Python per message per member. Packing the
casts of one tick into one message makes that cost per batch; throughput then comes from the
batch size, which grows with the load (Nagle-like, but without waiting: the batch leaves when the
driver has handled everything that arrived in this tick, or at `max_bytes`).

Theory of operation:
- Down: a Cast (no header from above) is queued; the first one of a tick arms a zero-delay timer.
  At the timer, or when `max_bytes` are queued, a lone cast leaves as itself (header None), several
  as one cast of their msgpack list (header BATCH).
- Up: a batch is unpacked into consecutive deliveries from its origin, in the order cast. The
  layers below see one message, so total order, FIFO and virtual synchrony of the batch carry
  over to each cast in it: its casts are delivered consecutively, in one view, by the same members.
- A view change: `BlockOk` (and `Leave`) first send what is queued, so every cast made in a view is
  cast in it; then they wait for a zero-delay timer, by which time our own copy of that batch has
  come back up, so the flush report (which counts deliveries) includes it.
- `Safe(k)` from below counts batches; it is translated into casts with the cumulative counts of
  the batches delivered since the last Safe (one deque entry per batch, not per cast).
- A malformed batch is counted (`batch.bad_batch`) and dropped, never raised.
Sends (point-to-point) are not batched. Requires: nothing. Provides: batching.

Header on casts: None (one cast) or BATCH.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
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
    Timer,
)
from cohort.stack.layer import Layer

BATCH = 1


@dataclass(frozen=True, slots=True)
class Params:
    #: a batch leaves at once when this many payload bytes are queued (below frag's frag_size, so
    #: a batch is one fragment)
    max_bytes: int = 48_000
    #: seconds a batch may wait for more casts (0: until the driver has handled this tick)
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.delay < 0:
            raise ValueError("need max_bytes >= 1 and delay >= 0")


class Batch(Layer):
    name: ClassVar[str] = "batch"
    provides: ClassVar[frozenset[str]] = frozenset({"batching"})
    requires: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset(
        {DeliverSend, Lease, Stable, Block, Backpressure}
    )
    passes_down: ClassVar[frozenset[type]] = frozenset({Send})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        self._up = ctx.up
        self.max_bytes = params.max_bytes
        self.queue: list[bytes] = []
        self.queued = 0  # payload bytes in `queue`
        self.armed = False
        self.deferred: list = []  # BlockOk / Leave held until our last batch came back up
        self.batches = 0  # messages sent holding more than one cast (this view)
        self.delivered = 0  # casts passed up in this view
        self.cums: deque[int] = deque()  # `delivered` after each batch not yet covered by Safe
        self.safe_below = 0  # batches below covered by the last Safe
        self.safe = 0

    # --- down ------------------------------------------------------------------------------------

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Cast and not ev.hdrs:
            self.queue.append(ev.payload)
            self.queued += len(ev.payload)
            if self.queued >= self.max_bytes:
                self._flush()
            elif not self.armed:
                self.armed = True
                self.ctx.set_timer(self.params.delay, "batch")
        elif cls is BlockOk or cls is Leave:
            if self._flush():
                # the flush report counts what we delivered: let the batch's own copy come back
                # up first (it does before any timer fires), then stop
                self.deferred.append(ev)
                self.ctx.set_timer(0.0, "deferred")
            else:
                self.ctx.down(ev)
        else:
            self.ctx.down(ev)

    def _flush(self) -> bool:
        queue = self.queue
        if not queue:
            return False
        self.queue, self.queued = [], 0
        if len(queue) == 1:
            self.ctx.down(Cast(queue[0], [None]))
        else:
            self.batches += 1
            self.ctx.down(Cast(msgpack.packb(queue, use_bin_type=True), [BATCH]))
        return True

    # --- up --------------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:
            h = ev.hdrs.pop()
            if h is None:
                self.delivered += 1
                self.cums.append(self.delivered)
                self._up(ev)
            else:
                self._unpack(ev, h)
        elif cls is Safe:
            cums, k = self.cums, ev.count
            covered = None
            while self.safe_below < k and cums:
                covered = cums.popleft()
                self.safe_below += 1
            if covered is not None and covered > self.safe:
                self.safe = covered
                self._up(Safe(covered))
        elif cls is Timer:
            if ev.token == "deferred":
                deferred, self.deferred = self.deferred, []
                for d in deferred:
                    self.ctx.down(d)
            else:
                self.armed = False
                self._flush()
        else:
            self.ctx.up(ev)

    def _unpack(self, ev: Deliver, h: Any) -> None:
        items = None
        if h == BATCH:
            try:
                items = msgpack.unpackb(ev.payload, raw=False)
            except Exception:
                items = None
        if type(items) is not list or not all(type(p) is bytes for p in items):
            self.ctx.count("batch.bad_batch")
            self.cums.append(self.delivered)  # a position below that delivers nothing up
            return
        origin, up = ev.origin, self._up
        for p in items:
            up(Deliver(origin, p, []))
        self.delivered += len(items)
        self.cums.append(self.delivered)

    def dump(self) -> dict:
        return {
            "queued": len(self.queue),
            "batches": self.batches,
            "delivered": self.delivered,
            "safe": self.safe,
        }


def fmt_header(h: Any) -> str:
    return "-" if h is None else "BATCH"
