"""`cohort sim` (random fault scenarios through the real layers, every trace checked), the simulated
demo (`cohort demo --simulated`) and `cohort bench sim` (stack CPU per delivered message).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

from cohort.replication.cli.options import UsageError, add_param_option, parse_params, stack_help
from cohort.stack import check
from cohort.stack.compose import StackConfigError, compose
from cohort.stack.sim import ALL_FAULTS, Net, Sim, run_scenario

#: faults that need a membership service (gms) in the stack
_VIEW_FAULTS = {"crash", "pause", "partition", "join", "leave"}


def parse_faults(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return ALL_FAULTS
    faults = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in faults if f not in ALL_FAULTS]
    if unknown:
        raise UsageError(
            f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(ALL_FAULTS)} or 'all'"
        )
    return faults


def sim_command(
    *,
    scenarios: int,
    seed_start: int,
    members: int,
    faults: str,
    stack: str,
    params: dict,
    trace_dir: str | None,
    verbose: bool,
    fd_notify: bool = False,
) -> int:
    """Run scenarios, print one line per failing seed and a summary; non-zero exit on violation.

    `fd_notify` models fast crash detection (cohort.stack.transport.fdsock): a crash is reported at once to the
    member watching the crashed one, which excludes it without waiting out its lease."""
    from cohort.stack.sim import Sim

    Sim.fd_notify = fd_notify
    fault_set = parse_faults(faults)
    try:
        spec = compose(stack, params or None)
    except StackConfigError as e:
        raise UsageError(f"--stack: {e}") from None
    if not spec.provides("views"):
        dropped = sorted(set(fault_set) & _VIEW_FAULTS)
        if dropped:
            print(f"note: stack {stack!r} has no membership layer; skipping {', '.join(dropped)}")
        fault_set = tuple(f for f in fault_set if f not in _VIEW_FAULTS)
    bad = 0
    t0 = time.perf_counter()
    for seed in range(seed_start, seed_start + scenarios):
        try:
            r = run_scenario(seed, members, fault_set, stack=stack, params=params)
        except Exception as e:  # a crash of the stack is a finding, not a reason to stop
            bad += 1
            print(f"seed={seed} CRASH {type(e).__name__}: {e}")
            continue
        if r.ok:
            continue
        bad += 1
        props = sorted({v.prop for v in r.violations})
        first = r.violations[0]
        print(f"seed={seed} {','.join(props)}: {first.describe()}")
        if verbose:
            print(check.report(r.trace, r.violations))
            print("  scenario:", "; ".join(r.notes))
        if trace_dir:
            os.makedirs(trace_dir, exist_ok=True)
            path = os.path.join(trace_dir, f"seed-{seed}.jsonl")
            with open(path, "w") as f:
                f.write(r.trace.dumps())
            print(f"  trace written to {path}")
    took = time.perf_counter() - t0
    print(f"{scenarios} scenarios, {bad} violations ({took:.1f}s, stack {spec.spec})")
    return 1 if bad else 0


def demo() -> int:
    """A 5-member simulated group: traffic, the coordinator crashes, a member joins; then verdict."""
    print("Cohort demo (simulated network: the group stack alone, no replicated object)\n")
    sim = Sim(seed=2026, n=5, net=Net(loss=0.05, reorder=0.05), replay="cohort demo")
    names = list(sim.seeds)
    for k in range(40):
        for m in names:
            sim.at(0.01 + k * 0.02, lambda m=m, k=k: sim.cast(m, f"{m}:{k}".encode()))
    sim.at(0.30, lambda: sim.crash("m0"))
    sim.at(0.50, lambda: sim.join("m5"))
    for k in range(10):
        sim.at(1.5 + k * 0.01, lambda k=k: sim.cast("m5", f"m5:{k}".encode()))
    sim.run(1.2)
    sim.run_until(lambda: sim.converged(), within=5.0)
    sim.run(sim.now + 1.0)
    print("view history (virtual seconds):")
    seen: set = set()
    last: tuple = ()
    for rec in sim.trace.records:
        if rec.kind == "install" and rec.data[0] not in seen:
            seen.add(rec.data[0])
            vid, members, primary = rec.data[0], rec.data[1], rec.data[2]
            flag = "primary" if primary else "non-primary"
            why = "  (same members: the joiner now votes)" if members == last else ""
            last = members
            print(
                f"  t={rec.time:6.3f}  view ({vid[0]},{vid[1]})  {', '.join(members)}  {flag}{why}"
            )
        elif rec.kind == "crash":
            print(f"  t={rec.time:6.3f}  {rec.member} crashes")
    print("\ndelivered per member:")
    for m, d in sim.delivered.items():
        state = "crashed" if not sim.eps[m].alive else "alive"
        print(f"  {m}: {len(d):4d} messages ({state})")
    sim.trace.live = tuple(sim.live())
    sim.trace.liveness = True
    violations = check.check(sim.trace)
    print("\nchecker:", check.report(sim.trace, violations).splitlines()[0])
    return 1 if violations else 0


def bench_sim(*, members: int, messages: int, size: int, stack: str, profile: bool) -> int:
    """CPU per delivered message per member through `stack`, no faults, no I/O, no trace."""
    sim = Sim(seed=1, n=members, stack=stack, net=Net(delay=(0.0001, 0.0002)), record=False)
    names = list(sim.seeds)
    payload_pad = b"x" * max(0, size - 16)
    per_tick = 50  # casts per member per virtual millisecond
    ticks = max(1, messages // (per_tick * members))
    total = ticks * per_tick * members

    def burst(m: str, k: int) -> None:
        for j in range(per_tick):
            sim.cast(m, b"%s:%d:%d:" % (m.encode(), k, j) + payload_pad)

    for k in range(ticks):
        for m in names:
            sim.at(0.001 * k, lambda m=m, k=k: burst(m, k))

    def done() -> bool:
        return all(sim.delivered_count.get(m, 0) >= total for m in names)

    prof = cProfile.Profile() if profile else None
    c0, w0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    sim.run_until(done, within=ticks * 0.001 + 30)
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    delivered = min(sim.delivered_count.get(m, 0) for m in names)
    n_dlv = max(1, delivered * members)
    print(f"stack {compose(stack).spec}, {members} members, {total} casts of {size} B")
    print(f"delivered at every member: {delivered} / {total}")
    print(f"stack CPU per delivered message per member: {sim.stack_time / n_dlv * 1e6:.2f} us")
    print(f"  with the simulator's own work: {cpu / n_dlv * 1e6:.2f} us")
    print(
        f"deliveries/s per member, stack only, one core for all members: {delivered / sim.stack_time:,.0f}"
    )
    print(
        f"wall {wall:.2f}s, cpu {cpu:.2f}s"
        + ("  (profiler on: several times slower)" if prof else "")
    )
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        print("\ntop functions by own time:")
        start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
        for ln in lines[start : start + 13]:
            print("  " + ln.replace(os.getcwd() + "/", ""))
    return 0 if delivered == total else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim",
        help="run random fault scenarios in the simulator and check them",
        description="Run SCENARIOS seeded random scenarios (crashes, pauses, loss, partitions, "
        "joins, leaves) through the real layers of a stack, check every trace, and print one line "
        "per failing seed with the command that replays it. Exit status 1 if any failed.",
    )
    p.add_argument("--scenarios", type=int, default=100, help="how many (default %(default)s)")
    p.add_argument("--seed-start", type=int, default=0, help="the first seed")
    p.add_argument("--members", type=int, default=5, help="group size")
    p.add_argument(
        "--faults",
        default="all",
        help="comma list of " + ",".join(ALL_FAULTS) + " or 'all' (default)",
    )
    p.add_argument("--stack", default="total", help=stack_help())
    add_param_option(p)
    p.add_argument("--trace-dir", help="write the trace of every failing seed here")
    p.add_argument("-v", "--verbose", action="store_true", help="print every violation")
    p.add_argument(
        "--fd-notify", action="store_true", help="model fast crash detection (TCP watchers)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return sim_command(
        scenarios=args.scenarios,
        seed_start=args.seed_start,
        members=args.members,
        faults=args.faults,
        stack=args.stack,
        params=parse_params(args.param),
        trace_dir=args.trace_dir,
        verbose=args.verbose,
        fd_notify=args.fd_notify,
    )
