"""What a user writes: `@replicated`, `@query`, and `now()` / `random()` inside replicated methods.

Why the decorators only tag: the class stays a plain class (testable without a group), and every
mistake that can be found at import time is (private names, async methods, a query on a property).
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cohort.errors import CohortError

STYLES = ("active", "passive")
T = TypeVar("T")


class ReplicationError(CohortError, TypeError):
    """A class or method that cannot be replicated as written; the message says what to change."""


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str  # "update", "query" or "local"


@dataclass(frozen=True)
class ClassInfo:
    cls: type
    style: str
    methods: dict[str, MethodInfo]
    version: str | None = None

    def describe(self) -> dict[str, str]:
        return {name: m.kind for name, m in self.methods.items()}

    @property
    def name(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def fingerprint(self) -> str:
        """What replicas of one group must share, as 16 hex digits: the class's name and, unless
        the user gave a `version=`, its style, replicated methods and the state codecs
        registered (their ext codes and type names). Computed when asked, not at decoration:
        codecs are often registered after the class."""
        from cohort.state import codec

        if self.version is not None:
            basis: list = [self.name, "version", self.version]
        else:
            methods = sorted((m.name, m.kind) for m in self.methods.values())
            basis = [self.name, self.style, methods, codec.registered_names()]
        return hashlib.sha256(repr(basis).encode()).hexdigest()[:16]


def query(fn: Callable | None = None, *, local: bool = False) -> Any:
    """Mark a read-only method. Default: linearizable (ordered with the updates, answered by one
    replica, no reply-cache entry). `local=True`: answered at once by the replica the call reaches
    (sequentially consistent per replica, not linearizable), spread over replicas by the proxy."""

    def mark(f: Callable) -> Callable:
        if not callable(f) or isinstance(f, (property, staticmethod, classmethod)):
            raise ReplicationError(f"@query goes on a plain method, not on {f!r}")
        f.__cohort_query__ = "local" if local else "query"  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def _own_methods(c: type) -> set[str]:
    """Names defined by `c` itself or by a base class that is itself @replicated: what a class
    exposes without saying so. A plain base (a mixin) contributes only what `expose=` names."""
    own: set[str] = set()
    for klass in c.__mro__:
        if klass is c or "__cohort__" in vars(klass):
            own |= set(vars(klass))
    return own


def replicated(
    cls: type | None = None,
    *,
    style: str = "active",
    expose: tuple[str, ...] | list[str] = (),
    version: str | None = None,
) -> Any:
    """Make a class replicable. Its public methods become updates unless marked `@query`.

    Exposed are the public methods the class defines and those it inherits from @replicated
    base classes. Methods inherited from any other base (a mixin, a library class) are exposed
    only if named in `expose=("name", ...)`: a helper class's public API does not silently become
    a remote one.

    A replica joins only a group whose members serve the same class: the same qualified name and
    `version=` if given, else the same replicated methods, style and state codecs (see
    `ClassInfo.fingerprint`); give a `version` to let compatible changes of the methods join.
    """
    if style not in STYLES:
        raise ReplicationError(f"style must be one of {STYLES}, got {style!r}")
    if isinstance(expose, str):
        expose = (expose,)

    def wrap(c: type) -> type:
        if not isinstance(c, type):
            raise ReplicationError(f"@replicated goes on a class, not on {c!r}")
        own = _own_methods(c)
        for name in expose:
            if name.startswith("_") or not callable(getattr(c, name, None)):
                raise ReplicationError(
                    f"{c.__name__}: expose={name!r} names no public method of the class"
                )
        methods: dict[str, MethodInfo] = {}
        for name, attr in inspect.getmembers(c):
            if name not in own and name not in expose:
                continue
            if name.startswith("_") or name in (
                "get_state",
                "set_state",
                "get_update",
                "set_update",
            ):
                continue
            if name == "on_view_change":
                continue
            raw = inspect.getattr_static(c, name)
            if isinstance(raw, (staticmethod, classmethod, property)):
                continue
            if not callable(attr):
                continue
            if inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr):
                raise ReplicationError(
                    f"{c.__name__}.{name} is async: replicated methods run in delivery order on "
                    "every replica and must be plain functions"
                )
            kind = getattr(attr, "__cohort_query__", "update")
            methods[name] = MethodInfo(name, kind)
        for name, attr in vars(c).items():
            if name.startswith("_") and getattr(attr, "__cohort_query__", None):
                raise ReplicationError(
                    f"{c.__name__}.{name}: private methods cannot be called remotely"
                )
        if not methods:
            raise ReplicationError(f"{c.__name__} has no public methods to replicate")
        if style == "passive" and hasattr(c, "get_update") != hasattr(c, "set_update"):
            raise ReplicationError(
                f"{c.__name__}: define both get_update() and set_update(update), or neither"
            )
        if hasattr(c, "get_state") != hasattr(c, "set_state"):
            raise ReplicationError(
                f"{c.__name__}: define both get_state() and set_state(state), or neither"
            )
        c.__cohort__ = ClassInfo(c, style, methods, version)  # type: ignore[attr-defined]
        return c

    return wrap(cls) if cls is not None else wrap


def class_info(cls: type) -> ClassInfo:
    info = getattr(cls, "__cohort__", None)
    if info is None or info.cls is not cls:
        raise ReplicationError(f"{cls.__name__} is not @replicated: decorate the class first")
    return info


# --- deterministic time and randomness -----------------------------------------------------------


class CallContext:
    """The agreed values of one call; the generator is seeded only if `random()` is used."""

    __slots__ = ("now", "seed", "_rng")

    def __init__(self, now: float, seed: int) -> None:
        self.now = now
        self.seed = seed
        self._rng: _random.Random | None = None

    @property
    def rng(self) -> _random.Random:
        if self._rng is None:
            self._rng = _random.Random(self.seed)
        return self._rng


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "cohort_call", default=None
)


def _context(what: str) -> CallContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError(
            f"replication.{what}() is only meaningful inside a replicated method: outside one there "
            "is no agreed value (use time/random directly)"
        )
    return ctx


def now() -> float:
    """Wall-clock time chosen once by the replica that ordered this call (the same on every replica)."""
    return _context("now").now


def random() -> float:
    """A float in [0, 1) from a seed chosen by the replica that ordered this call."""
    return _context("random").rng.random()


def run_in_context(now_: float, seed: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    token = _current.set(CallContext(now_, seed))
    try:
        return fn(*args, **kwargs)
    finally:
        _current.reset(token)
