"""The trace record shared by the simulator, the real runtime and the checker.

Why a separate module: the checker must verify traces from any driver (the simulator today, real
processes later) without importing either. A trace is a list of `Rec` in global step order plus a
little metadata; it is plain data, so it can be written as JSON lines and checked offline.

Record kinds and their `data` tuples (vid = (ltime, coordinator) as a 2-tuple):

- ``install``: (vid, members: tuple[str, ...], primary: bool, prev_vid | None[, ref]). `prev_vid` is
  the view the member was in when it installed this one; None for a first view and for a (re)join,
  which starts afresh by state transfer. Optional `ref`: for a primary view, its confirmed members
  (those that took part in the flush that made it, not joiners), the set a successor needs a
  majority of.
- ``send``:    (vid, payload: bytes). Payloads are unique per cast in a trace; they are the message id.
- ``deliver``: (vid, origin: str, payload: bytes). `origin` is what the stack claims.
- ``safe``:    (vid, payload). The stack says the message is uniform: every member that moves on
  from vid to a primary view delivers it in vid.
- ``crash``, ``leave``, ``pause``, ``resume``: ().

Generator records (written by a scenario generator that knows the faults it injects; the fault-aware
checks of `cohort.stack.check.faults` need them, and skip themselves without):

- ``schedule``: (repair bound in seconds | None). Every fault of this run is recorded.
- ``cut``: (receiver,), member = sender: that link stops working. ``heal``: (): all links work.
- ``joining``, ``leaving``: (): the member was told to join / leave.
- ``usend``: (vid, dest, payload); ``udeliver``: (vid, origin, payload): point-to-point messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INSTALL, SEND, DELIVER, SAFE = "install", "send", "deliver", "safe"
CRASH, LEAVE, PAUSE, RESUME = "crash", "leave", "pause", "resume"
SCHEDULE, CUT, HEAL, JOINING, LEAVING = "schedule", "cut", "heal", "joining", "leaving"
USEND, UDELIVER = "usend", "udeliver"


@dataclass(slots=True)
class Rec:
    step: int
    time: float
    member: str
    kind: str
    data: tuple = ()


@dataclass(slots=True)
class Trace:
    """A whole run: records plus what the liveness checks need to know about its end."""

    records: list[Rec] = field(default_factory=list)
    seed: int | None = None
    replay: str = ""
    total: bool = True
    #: members alive, unpaused and mutually connected when the run ended (liveness applies to them)
    live: tuple[str, ...] = ()
    #: virtual time of the last injected fault; liveness is judged from here
    quiet_since: float = 0.0
    end_time: float = 0.0
    #: True when the run was long enough after quiet_since for liveness to be required
    liveness: bool = False

    def add(self, time: float, member: str, kind: str, *data: Any) -> None:
        self.records.append(Rec(len(self.records), time, member, kind, tuple(data)))

    def dumps(self) -> str:
        """JSON lines: a header line, then one line per record (bytes as latin-1 strings)."""
        head = {
            "seed": self.seed,
            "replay": self.replay,
            "total": self.total,
            "live": list(self.live),
            "quiet_since": self.quiet_since,
            "end_time": self.end_time,
            "liveness": self.liveness,
        }
        lines = [json.dumps(head)]
        lines += [
            json.dumps([r.step, r.time, r.member, r.kind, to_json(r.data)]) for r in self.records
        ]
        return "\n".join(lines) + "\n"

    @classmethod
    def loads(cls, text: str) -> Trace:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        head = rows[0]
        t = cls(
            seed=head["seed"],
            replay=head["replay"],
            total=head["total"],
            live=tuple(head["live"]),
            quiet_since=head["quiet_since"],
            end_time=head["end_time"],
            liveness=head["liveness"],
        )
        for step, time, member, kind, data in rows[1:]:
            t.records.append(Rec(step, time, member, kind, from_json(data)))
        return t


def to_json(x: Any) -> Any:
    """Record data as JSON-able values: bytes become {"b": latin-1 text}, tuples lists."""
    if isinstance(x, bytes):
        return {"b": x.decode("latin-1")}
    if isinstance(x, tuple | list):
        return [to_json(y) for y in x]
    return x


def from_json(x: Any) -> Any:
    """The inverse of `to_json` (lists come back as tuples)."""
    if isinstance(x, dict) and "b" in x:
        return x["b"].encode("latin-1")
    if isinstance(x, list):
        return tuple(from_json(y) for y in x)
    return x
