"""Hunt the seeded bugs of `mutant_catalog` with random simulator scenarios and the explorer.

Why: a checker that passes every trace of the correct stack proves little until it is shown to
fail traces of broken ones. For each mutant, `hunt` runs `cohort.stack.sim.run_scenario` (strict: with
the fault-aware properties) over consecutive seeds (cycling the group size) with the bug patched
in, until the checker reports a violation or the stack raises (caught as 'CRASH'), and says how
many scenarios that took: a cheap, repeatable measure of how quickly the scenario generator and
the checker find each kind of bug. Then the bounded explorer (tests/explore) gets a time budget
per mutant over its scenarios: does exhaustive search of the schedules find the bug too?

    python tests/mutants/run.py [--budget N] [--only NAME[,NAME...]] [--jobs J] [-v] [--show]
        [--explore-seconds S] [--explore-states N] [--members M] [--seed-start SEED]

prints the table: mutant | caught | property | scenarios needed | seed/members | targeted |
explorer. `caught` is yes when random scenarios, the mutant's targeted scenario or the explorer
caught it; `property` is the first violation of the first of those that did. To replay a catching
seed: `run.py --only NAME --seed-start SEED --members M --budget 1 -v`. A scenario the mutant fails
counts as a catch only if the real stack passes it (seeds the real stack fails are listed at the
end: they are stack bugs); an explorer path counts only if it is clean on the real code. Exit
status 1 if some mutant escaped everything. `make mutants` runs budget 2000 (two processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _d in (_HERE, _HERE.parent / "explore"):  # the catalog and the explorer, as scripts or tests
    if str(_d) not in sys.path:
        sys.path.insert(0, str(_d))

import explorer as ex  # noqa: E402
from cohort.stack import check  # noqa: E402
from cohort.stack.sim import ALL_FAULTS, run_scenario  # noqa: E402
from mutant_catalog import CATALOG, Mutant, by_name  # noqa: E402

#: first seed of a hunt: away from test_sim's sweeps (100_000...) and `cohort sim`'s default (0)
SEED_START = 1_000_000
MEMBERS_CYCLE = (3, 5, 7)
#: the explorer column: states per explorer scenario, and at most seconds per mutant in all; the
#: scenarios in this order (the cheapest catches first, when the time budget cuts the rest)
EXPLORE_STATES = 800
EXPLORE_SECONDS = 25.0
EXPLORE_ORDER = (
    "coordinator-naps-mid-flush",
    "origin-dies-after-partial-cast",
    "coordinator-dies-mid-flush",
    "flush-after-crash",
    "join",
)


@dataclass
class Hunt:
    """The outcome of hunting one mutant: what caught it, on which run, and how to replay it."""

    mutant: str
    caught: bool
    scenarios: int  # runs made; when caught, the index (1-based) of the catching run
    prop: str = ""
    seed: int | None = None
    members: int | None = None
    detail: str = ""
    seconds: float = 0.0
    #: scenarios the mutant failed but the real stack fails too: not counted as catches
    baseline_failures: list[tuple[int, int, str]] = field(default_factory=list)
    explored: Explored | None = None


@dataclass
class Explored:
    """The explorer's verdict on one mutant."""

    caught: bool
    states: int = 0
    seconds: float = 0.0
    scenario: str = ""
    detail: str = ""
    #: the violating path on the unmutated code: "clean", "diverges", or its violation (then the
    #: path is a stack bug, not a catch)
    on_real_code: str = ""

    def cell(self) -> str:
        if self.caught:
            return f"yes ({self.scenario}, {self.states} states, {self.seconds:.0f}s)"
        return f"no ({self.states} states, {self.seconds:.0f}s)"


def scenario_params(
    i: int, seed_start: int = SEED_START, members_cycle: Sequence[int] = MEMBERS_CYCLE
) -> tuple[int, int]:
    """(seed, members) of the i-th scenario (0-based) of a hunt."""
    return seed_start + i, members_cycle[i % len(members_cycle)]


def run_one(seed: int, members: int) -> tuple[str, str]:
    """One random scenario with whatever code is patched in: ('', '') if the trace is clean,
    else (property id, description); an exception from the stack is ('CRASH', repr)."""
    try:
        r = run_scenario(seed, members, ALL_FAULTS, strict=True)
    except Exception as e:  # a crash of the stack is a finding
        return "CRASH", f"{type(e).__name__}: {e}"
    if r.ok:
        return "", ""
    first = r.violations[0]
    return first.prop, first.describe()


#: (seed, members) -> run_one result on the real stack, computed once per process
_BASELINE: dict[tuple[int, int], tuple[str, str]] = {}


def baseline(seed: int, members: int) -> tuple[str, str]:
    """`run_one` on the unmutated stack (call outside any `apply()`), cached."""
    key = (seed, members)
    if key not in _BASELINE:
        _BASELINE[key] = run_one(seed, members)
    return _BASELINE[key]


def hunt_detail(
    mutant: Mutant,
    budget: int,
    members_cycle: Sequence[int] = MEMBERS_CYCLE,
    seed_start: int = SEED_START,
) -> Hunt:
    """`hunt`, keeping the catching seed and violation for the report.

    A scenario the mutant fails counts only if the real stack passes it: while the layers are
    being changed a seed may break without any mutant, and that is the stack's bug (listed in
    `baseline_failures`), not a catch.
    """
    t0 = time.perf_counter()
    h = Hunt(mutant.name, False, budget)
    for i in range(budget):
        seed, members = scenario_params(i, seed_start, members_cycle)
        with mutant.apply():  # every site of a mutant that changes several methods
            prop, detail = run_one(seed, members)
        if not prop:
            continue
        base_prop, _ = baseline(seed, members)
        if base_prop:
            h.baseline_failures.append((seed, members, base_prop))
            continue
        h.caught, h.scenarios, h.prop, h.seed, h.members, h.detail = (
            True,
            i + 1,
            prop,
            seed,
            members,
            detail,
        )
        break
    h.seconds = time.perf_counter() - t0
    return h


def hunt(
    mutant: Mutant,
    budget: int,
    members_cycle: Sequence[int] = MEMBERS_CYCLE,
    seed_start: int = SEED_START,
) -> tuple[bool, int, str]:
    """Run up to `budget` random scenarios with `mutant` applied, stopping at the first one the
    checker rejects (or where the stack raises: prop 'CRASH').

    Returns (caught, scenarios needed, property id of the first violation; '' if survived).
    Scenario i uses seed `seed_start + i` and `members_cycle[i % len(members_cycle)]` members.
    """
    h = hunt_detail(mutant, budget, members_cycle, seed_start)
    return h.caught, h.scenarios, h.prop


def replay_command(seed: int, members: int) -> str:
    """A shell command that reruns one hunt scenario on the real stack and prints the verdict."""
    code = (
        "from cohort.stack.sim import run_scenario; from stack import check; "
        f"r = run_scenario({seed}, {members}, strict=True); "
        "print(check.report(r.trace, r.violations)); print(*r.notes, sep='; ')"
    )
    return f'.venv/bin/python -c "{code}"'


def run_targeted(mutant: Mutant, mutated: bool = True) -> tuple[str, str, int | None]:
    """Run the mutant's hand-built scenario for each of its seeds, with the bug patched in (or,
    with `mutated=False`, on the real code), until the checker rejects a trace.

    Returns (property, description, seed) of the first violation ('CRASH' if the stack raised),
    or ('', '', None) if every seed passed.
    """
    if mutant.scenario is None:
        raise ValueError(f"mutant {mutant.name} has no targeted scenario")
    with mutant.apply() if mutated else nullcontext():
        for seed in mutant.seeds:
            try:
                trace = mutant.scenario(seed)
            except Exception as e:
                return "CRASH", f"{type(e).__name__}: {e}", seed
            violations = check.check(trace)
            if violations:
                return violations[0].prop, violations[0].describe(), seed
    return "", "", None


def explorer_bounds(scenario: str, states: int = EXPLORE_STATES) -> ex.Bounds:
    """The bounds of `make explore` (one cast per member, one crash, one loss, one packet held
    across timer firings, a join only in the join scenario), with `states` per scenario."""
    return dataclasses.replace(ex.main_bounds(scenario), max_states=states)


def explore_mutant(
    mutant: Mutant, states: int = EXPLORE_STATES, seconds: float = EXPLORE_SECONDS
) -> Explored:
    """Explore the explorer's scenarios with `mutant` applied (DFS, `states` per scenario, at most
    `seconds` in all), stopping at the first violation the real code does not also show on
    that path."""
    out = Explored(False)
    t0 = time.perf_counter()
    names = [n for n in EXPLORE_ORDER if n in ex.SCENARIOS]
    names += sorted(set(ex.SCENARIOS) - set(names))
    for name in names:
        left = seconds - (time.perf_counter() - t0)
        if left <= 0:
            break
        b = explorer_bounds(name, states)
        with mutant.apply():
            try:
                r = ex.explore(b, scenario=name, seconds=left)
            except Exception as e:  # the prefix itself broke: the mutant shows before branching
                r = ex.Report(violation=f"CRASH {type(e).__name__}: {e}")
        out.states += r.states
        if r.violation is None:
            continue
        real = ex.replay(r.path, b, scenario=name) if r.path else None
        if real:  # the real code fails the same path: a stack bug, not this mutant's doing
            out.detail = f"path also fails on the real code: {real}"
            continue
        out.caught, out.scenario, out.detail = True, name, r.violation
        out.on_real_code = "clean" if real == "" else "diverges"
        break
    out.seconds = time.perf_counter() - t0
    return out


def _hunt_by_name(args: tuple) -> Hunt:
    name, budget, seed_start, members_cycle, states, seconds = args
    m = by_name(name)
    h = hunt_detail(m, budget, members_cycle, seed_start)
    if seconds > 0:
        h.explored = explore_mutant(m, states, seconds)
    return h


def _table(rows: list[Hunt], targeted: dict[str, tuple[str, str]]) -> str:
    head = (
        "mutant",
        "caught",
        "property",
        "scenarios needed",
        "seed/members",
        "targeted scenario",
        "explorer",
    )
    body = []
    for h in rows:
        t_prop, t_cell = targeted.get(h.mutant, ("", "-"))
        e = h.explored
        prop = h.prop or t_prop or (e.detail.split("]")[0].lstrip("[") if e and e.caught else "")
        caught = h.caught or bool(t_prop) or bool(e and e.caught)
        body.append(
            (
                h.mutant,
                "yes" if caught else "NO",
                prop or "-",
                str(h.scenarios) if h.caught else f">{h.scenarios}",
                f"{h.seed}/{h.members}" if h.caught else "-",
                t_cell,
                e.cell() if e else "-",
            )
        )
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    lines += [fmt.format(*r).rstrip() for r in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=200, help="max scenarios per mutant")
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--seed-start", type=int, default=SEED_START)
    ap.add_argument("--members", type=int, default=0, help="fixed group size (default: 3,5,7)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--explore-states", type=int, default=EXPLORE_STATES)
    ap.add_argument(
        "--explore-seconds", type=float, default=EXPLORE_SECONDS, help="per mutant; 0: no explorer"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print each catching violation")
    ap.add_argument("--show", action="store_true", help="print the mutations as diffs and exit")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [m.name for m in CATALOG]
    for n in names:
        by_name(n)  # fail early on a typo
    if args.show:
        for n in names:
            m = by_name(n)
            print(f"# {m.name}: {m.description}\n{m.diff()}")
        return 0
    t0 = time.perf_counter()
    cycle = (args.members,) if args.members else MEMBERS_CYCLE
    work = [
        (n, args.budget, args.seed_start, cycle, args.explore_states, args.explore_seconds)
        for n in names
    ]
    rows: list[Hunt] = []

    def progress(h: Hunt) -> None:
        rows.append(h)
        verdict = f"caught by {h.prop} after {h.scenarios}" if h.caught else "survived"
        if h.explored is not None:
            verdict += f"; explorer: {h.explored.cell()}"
        print(
            f"[{len(rows)}/{len(work)}] {h.mutant}: {verdict} ({h.seconds:.0f}s)", file=sys.stderr
        )

    if args.jobs > 1:
        from multiprocessing import Pool

        with Pool(args.jobs) as pool:
            for h in pool.imap(_hunt_by_name, work):
                progress(h)
    else:
        for w in work:
            progress(_hunt_by_name(w))
    targeted: dict[str, tuple[str, str]] = {}
    for n in names:
        m = by_name(n)
        if m.scenario is not None:
            prop, detail, seed = run_targeted(m)
            targeted[n] = (prop, f"{prop} (seed {seed})" if prop else "missed")
            if args.verbose and prop:
                print(f"{n} (targeted): seed={seed} {detail}")
    print(_table(rows, targeted))
    caught = sum(h.caught for h in rows)
    by_explorer = sum(bool(h.explored and h.explored.caught) for h in rows)
    either = sum(
        h.caught or bool(targeted.get(h.mutant, ("",))[0]) or bool(h.explored and h.explored.caught)
        for h in rows
    )
    took = time.perf_counter() - t0
    print(
        f"\n{caught}/{len(rows)} mutants caught by random scenarios within {args.budget}; "
        f"{by_explorer}/{len(rows)} by the explorer; {either}/{len(rows)} caught in all "
        f"({took:.0f}s)"
    )
    if args.verbose:
        for h in rows:
            if h.caught:
                print(f"{h.mutant}: seed={h.seed} members={h.members} {h.detail}")
            if h.explored is not None and h.explored.detail:
                e = h.explored
                print(f"{h.mutant} (explorer, {e.scenario or '-'}): {e.detail}")
    broken = sorted({(seed, n, p) for h in rows for seed, n, p in h.baseline_failures})
    for seed, n, p in broken:
        print(
            f"\nthe REAL stack fails seed {seed} ({n} members, {p}): not counted as a catch; "
            f"replay: {replay_command(seed, n)}"
        )
    for h in rows:
        gap = by_name(h.mutant).known_gap
        if not h.caught and gap:
            print(f"\nsurvivor {h.mutant}: {gap}")
    return 0 if either == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
