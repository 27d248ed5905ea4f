"""Shared fixtures for the layer unit tests: a view of three members and timer helpers."""

from __future__ import annotations

from cohort.stack.events import Timer
from cohort.stack.layer import RecordingContext
from cohort.stack.view import View

VIEW = View((1, "a"), ("a", "b", "c"), True, ("a", "b", "c"), (1, "a"))


def make(cls, me: str = "a", view: View = VIEW, now: float = 0.0, **params):
    """A layer of class `cls` for member `me`, with its RecordingContext."""
    ctx = RecordingContext(me, now=now)
    layer = cls(ctx, view, cls.Params(**params))
    return layer, ctx


def fire(layer, ctx: RecordingContext, token) -> None:
    """Fire the earliest pending timer with `token` at its deadline (and forget it)."""
    when = min(t for t, tok in ctx.timers if tok == token)
    ctx.timers.remove((when, token))
    ctx.now = max(ctx.now, when)
    layer.up(Timer(ctx.now, token))


def at(layer, ctx: RecordingContext, now: float, token) -> None:
    """Deliver a timer firing at virtual time `now`."""
    ctx.now = now
    layer.up(Timer(now, token))
