"""`cohort bench sim|stack|calls`: the benchmarks, each against a baseline measured in the same run."""

from __future__ import annotations

import argparse

from cohort.replication.cli.options import stack_help


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (simulator CPU, the stack, replicated calls)")
    bsub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    p_bs = bsub.add_parser("sim", help="CPU cost per delivered message in the simulator")
    p_bs.add_argument("--members", type=int, default=3)
    p_bs.add_argument("--messages", type=int, default=100_000)
    p_bs.add_argument("--size", type=int, default=64, help="payload bytes")
    p_bs.add_argument("--stack", default="total", help=stack_help())
    p_bs.add_argument("--no-profile", action="store_true", help="skip the profile of the run")
    p_bs.set_defaults(run=_sim)
    p_bk = bsub.add_parser(
        "stack",
        help="ordered multicast across member processes (real UDP) against raw batched UDP",
    )
    p_bk.add_argument("--members", type=int, default=3)
    p_bk.add_argument("--size", type=int, default=64, help="payload bytes")
    p_bk.add_argument("--seconds", type=float, default=10)
    p_bk.add_argument("--window", type=int, default=500, help="own casts in flight per member")
    p_bk.add_argument("--stack", default="total-batch", help=stack_help())
    p_bk.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p_bk.add_argument(
        "--failover",
        action="store_true",
        help="measure SIGKILL detection (kill -> new view) instead",
    )
    p_bk.set_defaults(run=_stack)
    p_bc = bsub.add_parser("calls", help="replicated Counter.add vs plain Pyro5 (and PySyncObj)")
    p_bc.add_argument("--replicas", type=int, default=3)
    p_bc.add_argument("--clients", default="1,32", help="comma list of client counts")
    p_bc.add_argument("--seconds", type=float, default=5.0)
    p_bc.add_argument("--failover", action="store_true", help="kill a replica mid-run")
    p_bc.add_argument("--plot", metavar="FILE", help="with --failover: latency-over-time PNG")
    p_bc.add_argument("--secure", action="store_true", help="also a group on the secure stack")
    p_bc.set_defaults(run=_calls)


def _sim(args: argparse.Namespace) -> int:
    from cohort.replication.cli.sim import bench_sim

    return bench_sim(
        members=args.members,
        messages=args.messages,
        size=args.size,
        stack=args.stack,
        profile=not args.no_profile,
    )


def _stack(args: argparse.Namespace) -> int:
    from cohort.replication.cli.bench_stack import bench_failover, bench_stack

    if args.failover:
        return bench_failover(args.members)
    return bench_stack(
        args.members, args.size, args.seconds, args.window, args.stack, args.transport
    )


def _calls(args: argparse.Namespace) -> int:
    from cohort.replication.cli.bench_calls import bench_calls

    clients = [int(c) for c in args.clients.split(",") if c]
    return bench_calls(args.replicas, clients, args.seconds, args.failover, args.plot, args.secure)
