"""The layer interface: a sans-I/O state machine between two neighbours.

Why sans-I/O: a layer whose only effects are `ctx.up`, `ctx.down` and `ctx.set_timer` can be driven
by the deterministic simulator, by an exhaustive explorer and by the asyncio runtime alike, and a unit
test can feed it events and read back a list of actions (RecordingContext).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from cohort.stack.view import View


class Context(Protocol):
    """What a layer may touch. `now` is virtual or monotonic time; `rng` is seeded by the driver."""

    now: float
    rng: random.Random
    me: str

    def up(self, ev: Any) -> None: ...
    def down(self, ev: Any) -> None: ...
    def set_timer(self, delay: float, token: Any) -> None: ...
    def count(self, name: str, n: int = 1) -> None: ...
    def trace(self, msg: str) -> None: ...


@dataclass(frozen=True, slots=True)
class NoParams:
    """Params of a layer with nothing to configure."""


class Layer:
    """Base class. Subclasses set `name`, `provides`, `requires`, `Params` and handle `up`/`down`.

    A layer instance lives for one view; the runtime builds fresh instances at every installation.
    """

    name: ClassVar[str] = "?"
    provides: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()
    #: properties a layer needs from layers *above* it (gms hands the flush to the layer above)
    requires_above: ClassVar[frozenset[str]] = frozenset()
    #: event classes this layer forwards untouched, up or down: the runtime hands them straight
    #: to the next layer that cares (the fast path of a data message through the stack)
    passes_up: ClassVar[frozenset[type]] = frozenset()
    passes_down: ClassVar[frozenset[type]] = frozenset()
    Params: ClassVar[type] = NoParams

    def __init__(self, ctx: Context, view: View, params: Any) -> None:
        self.ctx = ctx
        self.view = view
        self.params = params
        self.me = view.rank(ctx.me)

    def up(self, ev: Any) -> None:
        self.ctx.up(ev)

    def down(self, ev: Any) -> None:
        self.ctx.down(ev)

    def dump(self) -> dict:
        return {}


class RecordingContext:
    """A context for unit tests: records what a layer emits instead of dispatching it."""

    def __init__(self, me: str = "a", now: float = 0.0, seed: int = 0) -> None:
        self.me = me
        self.now = now
        self.rng = random.Random(seed)
        self.ups: list[Any] = []
        self.downs: list[Any] = []
        self.timers: list[tuple[float, Any]] = []
        self.counters: Counter[str] = Counter()
        self.lines: list[str] = []

    def up(self, ev: Any) -> None:
        self.ups.append(ev)

    def down(self, ev: Any) -> None:
        self.downs.append(ev)

    def set_timer(self, delay: float, token: Any) -> None:
        self.timers.append((self.now + delay, token))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def trace(self, msg: str) -> None:
        self.lines.append(msg)

    def take(self) -> tuple[list[Any], list[Any]]:
        """Return and clear (ups, downs)."""
        ups, downs = self.ups, self.downs
        self.ups, self.downs = [], []
        return ups, downs
