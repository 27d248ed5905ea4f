"""Turn an endpoint's recorder callbacks into trace records.

Why shared: the simulator and real processes must record exactly the same facts (the view a message
was sent and delivered in, which view a member came from, which deliveries were reported Safe), or
the checker would verify two different things.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cohort.stack.events import Deliver, Safe
from cohort.stack.trace import DELIVER, INSTALL, LEAVE, SAFE, SEND
from cohort.stack.view import View

Sink = Callable[..., None]  # sink(kind, *data): appends one record for this member


class Recorder:
    """The `recorder` callback of one endpoint (one member incarnation)."""

    def __init__(self, sink: Sink, on_deliver: Callable[[bytes], None] | None = None) -> None:
        self.sink = sink
        self.on_deliver = on_deliver
        self.cur: Any = None  # vid of the last installed view
        self.delivered: list[bytes] = []  # payloads delivered in the current view, in order
        self.safe = 0
        self.sent = 0

    def __call__(self, kind: str, view: View, ev: Any = None) -> None:
        sink = self.sink
        if kind == "send":
            self.sent += 1
            sink(SEND, view.vid, ev)
        elif kind == "deliver":
            assert type(ev) is Deliver
            self.delivered.append(ev.payload)
            if self.on_deliver is not None:
                self.on_deliver(ev.payload)
            sink(DELIVER, view.vid, ev.origin, ev.payload)
        elif kind == "safe":
            assert type(ev) is Safe
            for p in self.delivered[self.safe : ev.count]:
                sink(SAFE, view.vid, p)
            # A count beyond what was delivered is a stack bug; record it visibly (S1 then
            # reports a Safe for a message never delivered) instead of dropping it silently.
            for k in range(max(self.safe, len(self.delivered)), ev.count):
                sink(SAFE, view.vid, b"<never delivered #%d>" % k)
            self.safe = max(self.safe, ev.count)
        elif kind == "view":
            prev = self.cur if self.cur is not None and view.prev == self.cur else None
            self.cur = view.vid
            self.delivered = []
            self.safe = 0
            sink(INSTALL, view.vid, view.members, view.primary, prev, view.last_primary)
        elif kind == "exit":
            self.cur = None
            sink(LEAVE)
