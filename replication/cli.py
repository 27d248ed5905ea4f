"""The `cohort` command line.

Why one entry point: users meet Cohort through `cohort demo`, test their own stack specs with
`cohort sim`, and measure with `cohort bench`; later issues add `serve`, `call` and `status` here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stack import tools as simtools


def _params(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """`layer.key=value` pairs into the nested dict `stack.compose` takes."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        try:
            key, value = item.split("=", 1)
            layer, name = key.split(".", 1)
            out.setdefault(layer, {})[name] = float(value)
        except ValueError:
            raise SystemExit(
                f"--param takes layer.key=value (e.g. nak.xmit_interval=0.05): {item!r}"
            ) from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cohort", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_sim = sub.add_parser("sim", help="run random fault scenarios in the simulator and check them")
    p_sim.add_argument("--scenarios", type=int, default=100)
    p_sim.add_argument("--seed-start", type=int, default=0)
    p_sim.add_argument("--members", type=int, default=5)
    p_sim.add_argument(
        "--faults",
        default="all",
        help="comma list of crash,pause,loss,dup,reorder,partition,join,leave or 'all'",
    )
    p_sim.add_argument("--stack", default="total", help="preset name or top:...:bottom spec")
    p_sim.add_argument("--param", action="append", default=[], help="layer.key=value")
    p_sim.add_argument("--trace-dir", help="write the trace of every failing seed here")
    p_sim.add_argument("-v", "--verbose", action="store_true", help="print every violation")

    sub.add_parser("demo", help="a simulated 5-member group through a crash and a join")

    p_bench = sub.add_parser("bench", help="benchmarks")
    bsub = p_bench.add_subparsers(dest="what", required=True)
    p_bs = bsub.add_parser("sim", help="CPU cost per delivered message in the simulator")
    p_bs.add_argument("--members", type=int, default=3)
    p_bs.add_argument("--messages", type=int, default=100_000)
    p_bs.add_argument("--size", type=int, default=64)
    p_bs.add_argument("--stack", default="total")
    p_bs.add_argument("--no-profile", action="store_true")
    p_bk = bsub.add_parser("stack", help="ordered multicast across member processes (real UDP)")
    p_bk.add_argument("--members", type=int, default=3)
    p_bk.add_argument("--size", type=int, default=64)
    p_bk.add_argument("--seconds", type=float, default=10)
    p_bk.add_argument("--window", type=int, default=500, help="own casts in flight per member")

    args = parser.parse_args(argv)
    if args.cmd == "sim":
        return simtools.sim_command(
            scenarios=args.scenarios,
            seed_start=args.seed_start,
            members=args.members,
            faults=args.faults,
            stack=args.stack,
            params=_params(args.param),
            trace_dir=args.trace_dir,
            verbose=args.verbose,
        )
    if args.cmd == "demo":
        return simtools.demo()
    if args.cmd == "bench" and args.what == "sim":
        return simtools.bench_sim(
            members=args.members,
            messages=args.messages,
            size=args.size,
            stack=args.stack,
            profile=not args.no_profile,
        )
    if args.cmd == "bench" and args.what == "stack":
        from stack.bench import bench_stack

        return bench_stack(args.members, args.size, args.seconds, args.window)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
