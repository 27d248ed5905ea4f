"""Seeded bugs in the replica engine, for the simulator's sweep to catch (tests only).

Why one-line edits of the live source and not hand-copied methods: a copy goes stale as the
engine evolves and is then "caught" for the wrong reason. `EngineMutant.apply()` takes the
method's current source, replaces the one line containing `old` by `new` (more lines take its
indentation), compiles it in `cohort.replication.engine`'s namespace and patches it onto `Engine` for a
`with` block; a line that is gone raises `StaleMutant` (the tests/mutants discipline, for the
replication layer).

The third seeded bug of the issue, "snapshot on the loop", is not an engine edit but the old
architecture: `ReplicaWorld(core="loop")`, where the engine's work stalls the member's endpoint.
"""

from __future__ import annotations
import __future__

import inspect
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

from cohort.replication import custody
from cohort.replication.divergence import Checker
from cohort.replication.engine import Engine


class StaleMutant(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineMutant:
    name: str
    description: str
    attr: str
    #: (old, new) pairs: the one line containing `old` gets `old` replaced by `new`
    edits: tuple[tuple[str, str], ...]
    #: what holds `attr`: the Engine class, or a module the engine calls through (custody)
    owner: Any = Engine

    def build(self):
        func = getattr(self.owner, self.attr)
        lines = textwrap.dedent(inspect.getsource(func)).split("\n")
        for old, new in self.edits:
            hits = [i for i, line in enumerate(lines) if old in line]
            if len(hits) != 1:
                raise StaleMutant(f"{self.name}: {old!r} is on {len(hits)} lines of {self.attr}")
            i = hits[0]
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            first, *rest = new.split("\n")
            lines[i : i + 1] = [lines[i].replace(old, first), *(indent + r for r in rest)]
        flags = __future__.annotations.compiler_flag
        code = compile("\n".join(lines), f"<mutant {self.name}>", "exec", flags=flags)
        namespace: dict = {}
        exec(code, sys.modules[func.__module__].__dict__, namespace)
        return namespace[self.attr]

    @contextmanager
    def apply(self) -> Iterator[None]:
        with patch.object(self.owner, self.attr, self.build()):
            yield


DROP_ON_MISSED_VIEWS = EngineMutant(
    "drop_state_on_missed_views",
    "a replica that missed views drops its state, as the engine did before custody",
    "on_view",
    (("self.ready = False", "self.ready = False\nself.obj = None"),),
)

STALE_HOLDER = EngineMutant(
    "resume_from_any_holder",
    "when nobody is ready, the first member (by rank) holding some state resumes from it, "
    "whether or not it is the latest: a view with no holder of the latest state counts as "
    "having one",
    "resolve",
    (
        ("statuses[m][0] == latest", "statuses[m][0] is not None"),
        ("donor = max(holders, key=", "donor = holders[0] or max(holders, key="),
    ),
    owner=custody,
)

SKIP_CHECK = EngineMutant(
    "skip_divergence_check",
    "no position is ever due: the replicas never compare their digests",
    "on_update",
    (
        ("due = bool(p.every) and pos % p.every == 0", "due = False"),
        ("if not due and p.interval and prev is not None:", "if False:"),
    ),
    owner=Checker,
)

WRONG_POSITION = EngineMutant(
    "report_at_the_position_reached",
    "a digest is reported under the position the replica has reached when its hash comes back, "
    "not the position it was cut at: digests of different positions are compared",
    "on_digest",
    (
        (
            "_pack([DIG, pos, digest, [*e.views[0], epoch], resync])",
            "_pack([DIG, e.applied, digest, [*e.views[0], epoch], resync])",
        ),
    ),
    owner=Checker,
)

NO_CUT = EngineMutant(
    "hash_the_live_state",
    "the state is handed to the hasher as it is, not frozen at the position: the hash, which runs "
    "later, sees updates applied after the position",
    "_cut",
    (("frozen = stream.freeze([state, e.cache.dump(), e.applied])", "frozen = [state, 0, 0]"),),
    owner=Checker,
)

CATALOG = (DROP_ON_MISSED_VIEWS, STALE_HOLDER, SKIP_CHECK, WRONG_POSITION, NO_CUT)
