"""The mutation machinery: apply one-line deviations to the live source of layer methods.

Why apart from the catalog: how a mutant is built and applied (source of the method as loaded,
one line swapped, compiled in its own module, patched for a `with` block, `StaleMutant` when the
line is gone) is independent of which bugs the catalog seeds. See mutant_catalog.py for the why.

A higher-order mutant alters several methods at once: its `also` lists further one-line mutants
(unregistered) that `apply()` patches in together with it. `build()`, `target` and `attr` stay
those of its own (first) site, so a driver that patches `build()` itself gets that site alone;
use `apply()` to get them all.
"""

from __future__ import annotations
import __future__

import difflib
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

from cohort.stack.trace import Trace

#: a targeted scenario: build and run a specific `Sim` for `seed`, return its finished trace
Scenario = Callable[[int], Trace]


class StaleMutant(RuntimeError):
    """The line a mutant alters is no longer (uniquely) in the stack's source: update the mutant."""


@dataclass(frozen=True)
class Mutant:
    """One seeded bug: in `target.attr`, the line containing `old` gets `old` replaced by `new`.

    `new` may span several lines; continuation lines take the indentation of the altered line.
    """

    name: str
    description: str
    target: type  # a class of the stack
    attr: str
    old: str
    new: str
    scenario: Scenario | None = None
    #: seeds the scenario is run with (in order, until one is rejected)
    seeds: tuple[int, ...] = (1, 2, 3)
    #: why random scenarios miss this mutant even at budget 2000 (the analysis of `run.py`'s
    #: results); without a scenario, its test is a strict xfail with this reason
    known_gap: str = ""
    #: further sites of a higher-order mutant, applied together with this one (see the docstring)
    also: tuple[Mutant, ...] = ()

    def original(self) -> Callable:
        """The attribute as it is now (the mutant while `apply()` is active)."""
        return getattr(self.target, self.attr)

    def sources(self) -> tuple[str, str]:
        """(original, mutated) source of the method, dedented."""
        func = inspect.unwrap(self.original())
        src = loaded_source(func)
        lines = src.split("\n")
        hits = [i for i, line in enumerate(lines) if self.old in line]
        if len(hits) != 1:
            raise StaleMutant(
                f"mutant {self.name}: {self.old!r} is on {len(hits)} lines of "
                f"{func.__module__}.{func.__qualname__} (need exactly 1); the layer changed, "
                f"update the mutant"
            )
        i = hits[0]
        line = lines[i]
        indent = line[: len(line) - len(line.lstrip())]
        first, *rest = self.new.split("\n")
        lines[i : i + 1] = [line.replace(self.old, first), *(indent + r for r in rest)]
        return src, "\n".join(lines)

    def diff(self) -> str:
        """The mutation as a unified diff (for reports and reviewers), every site of it."""
        a, b = self.sources()
        name = f"{self.target.__name__}.{self.attr}"
        own = "".join(
            difflib.unified_diff(
                a.splitlines(True), b.splitlines(True), name, f"{name} [{self.name}]", n=1
            )
        )
        return own + "".join(m.diff() for m in self.also)

    def build(self) -> Callable:
        """Compile the mutated method in its own module's namespace."""
        func = inspect.unwrap(self.original())
        _, src = self.sources()
        if inspect.isclass(self.target):  # zero-argument super() needs the class cell
            src = src.replace("super()", f"super({self.target.__name__}, self)")
        return _compile(src, func, f"<mutant {self.name}>")

    @contextmanager
    def apply(self) -> Iterator[None]:
        """Patch the bug in (every site); the original code is back when the block exits, even
        on error."""
        with ExitStack() as stack:
            stack.enter_context(patch.object(self.target, self.attr, self.build()))
            for m in self.also:
                stack.enter_context(m.apply())
            yield


#: source text of each mutated method as it was when its module was loaded (see loaded_source)
_SOURCES: dict[Any, str] = {}


def _compile(src: str, like: Callable, filename: str) -> Callable:
    """Compile the function defined by `src` with the globals of `like`'s module."""
    flags = __future__.annotations.compiler_flag  # the stack's modules all use it
    code = compile(src, filename, "exec", flags=flags, dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(code, sys.modules[like.__module__].__dict__, namespace)  # the def lands in namespace
    return namespace[like.__name__]


def loaded_source(func: Callable) -> str:
    """The dedented source of `func` matching the code actually loaded.

    Why not plain `inspect.getsource`: it reads the file as it is *now*, at the line number the
    function had when it was imported; while the layers are being edited (hunts run for
    minutes) that can be another method's text. The first read is cached and checked against
    the loaded bytecode; a mismatch raises StaleMutant (restart the run) instead of mutating the
    wrong code.
    """
    src = _SOURCES.get(func)
    if src is None:
        src = textwrap.dedent(inspect.getsource(func))
        if not func.__code__.co_freevars:  # (zero-argument super() makes a class cell)
            again = _compile(src, func, "<source check>")
            if again.__code__.co_code != func.__code__.co_code:
                raise StaleMutant(
                    f"the source file of {func.__module__}.{func.__qualname__} changed since "
                    f"it was imported; restart"
                )
        _SOURCES[func] = src
    return src


CATALOG: list[Mutant] = []


def mutant(
    name: str,
    description: str,
    target: type,
    attr: str,
    old: str,
    new: str,
    scenario: Scenario | None = None,
    seeds: tuple[int, ...] = (1, 2, 3),
    known_gap: str = "",
    also: tuple[Mutant, ...] = (),
) -> Mutant:
    """Register one mutant (names are unique); `also`: further sites of a higher-order one."""
    if any(m.name == name for m in CATALOG):
        raise ValueError(f"duplicate mutant name {name!r}")
    m = Mutant(name, description, target, attr, old, new, scenario, seeds, known_gap, also)
    CATALOG.append(m)
    return m


def by_name(name: str) -> Mutant:
    """The catalog entry called `name` (KeyError lists the known names)."""
    for m in CATALOG:
        if m.name == name:
            return m
    raise KeyError(f"no mutant {name!r}; known: {', '.join(m.name for m in CATALOG)}")
