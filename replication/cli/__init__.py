"""The `cohort` command line.

Why one entry point: users meet Cohort through `cohort demo`, test their own stack specs with
`cohort sim`, and measure with `cohort bench`; later issues add `serve`, `call` and `status` here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cohort.replication.cli import sim as simtools


def _params(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """`layer.key=value` pairs into the nested dict `cohort.stack.compose` takes."""
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


def _secret_opts(path: str, stack: str, params: dict | None) -> dict:
    """`cohort serve --secret-file`: the group secret into params, and a secure stack."""
    try:
        with open(path, "rb") as f:
            secret = f.read().rstrip(b" \t\r\n")  # trailing whitespace (a newline) is ignored
    except OSError as e:
        raise SystemExit(f"cannot read --secret-file {path!r}: {e.strerror}") from None
    if len(secret) < 16:
        raise SystemExit(
            f"--secret-file {path!r} holds {len(secret)} bytes; a group secret needs at least 16 "
            "random bytes (make one with: head -c 32 /dev/urandom > FILE)"
        )
    stack = {"total": "secure", "total-batch": "secure-batch"}.get(stack, stack)
    from cohort.stack.compose import StackConfigError, compose

    try:
        if "auth" not in compose(stack).names:
            raise SystemExit(f"--secret-file needs a secure stack (e.g. 'secure'), not {stack!r}")
    except StackConfigError as e:
        raise SystemExit(f"--stack: {e}") from None
    return {"stack": stack, "params": {**(params or {}), "auth": {"secret": secret}}}


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
    p_sim.add_argument(
        "--fd-notify", action="store_true", help="model fast crash detection (TCP watchers)"
    )

    p_demo = sub.add_parser(
        "demo", help="a replicated bank in 3 processes through a coordinator crash and a join"
    )
    p_demo.add_argument("--simulated", action="store_true", help="the simulated-group demo instead")
    p_demo.add_argument("--seconds", type=float, default=12.0, help="how long the clients run")
    p_demo.add_argument("--clients", type=int, default=4)

    p_serve = sub.add_parser("serve", help="run one replica of a @replicated class")
    p_serve.add_argument("cls", metavar="MODULE:CLASS")
    p_serve.add_argument("--group", required=True)
    p_serve.add_argument("--listen", required=True, help="host:port (UDP group + TCP clients)")
    p_serve.add_argument("--seeds", default="", help="comma list of the founding replicas")
    p_serve.add_argument("--stack", default="total")
    p_serve.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p_serve.add_argument(
        "--busy-limit",
        type=float,
        default=5.0,
        help="seconds a single method, snapshot or state install may keep the replica core busy "
        "before the replica counts as hung and leaves the group (default 5; it rejoins, keeping "
        "its state, once the core is free)",
    )
    p_serve.add_argument(
        "--on-divergence",
        choices=["resync", "stop"],
        default="resync",
        help="when this replica's state digest disagrees with the majority's at a check: take a "
        "fresh state from a majority replica (resync, default) or leave the group and exit with "
        "status 3 (stop)",
    )
    p_serve.add_argument(
        "--check-every",
        type=int,
        default=1000,
        help="compare state digests every N updates (default 1000; 0: never)",
    )
    p_serve.add_argument(
        "--check-interval",
        type=float,
        default=10.0,
        help="and every S seconds of the updates' agreed time (default 10; 0: never)",
    )
    p_serve.add_argument(
        "--query-guard",
        choices=["shallow", "digest", "off"],
        default="shallow",
        help="how @query methods are checked for changing the state: attribute bindings and "
        "container sizes (shallow, default), the whole state's digest (digest: slow, for "
        "debugging), or not at all",
    )
    p_serve.add_argument(
        "--secret-file",
        help="group secret (16+ random bytes, the same file on every replica): admit only members "
        "that hold it, encrypt the group's traffic, new key at every view (stack 'secure')",
    )
    p_serve.add_argument("--param", action="append", default=[], help="layer.key=value")
    p_serve.add_argument("--trace", help="append this replica's group trace to this file")
    p_serve.add_argument("--ns", action="store_true", help="register in the Pyro5 name server")
    p_serve.add_argument("--ns-host")
    p_serve.add_argument("--ns-port", type=int)
    p_serve.add_argument("--tls-cert", help="serve clients over TLS with this certificate (PEM)")
    p_serve.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p_serve.add_argument("--tls-ca", help="CA that signs client certificates")
    p_serve.add_argument(
        "--tls-require-client-cert", action="store_true", help="refuse clients without one"
    )

    p_call = sub.add_parser("call", help="call a method of a replicated object")
    p_call.add_argument("ref", help="PYROGROUP:name@host:port,... or PYROGROUPNAME:name")
    p_call.add_argument("method")
    p_call.add_argument("args", nargs="*", help="JSON values (bare words are strings)")
    p_call.add_argument("--timeout", type=float, default=30.0)
    p_call.add_argument("--ns-host")
    p_call.add_argument("--ns-port", type=int)
    p_call.add_argument("--tls-ca", help="talk TLS; trust replicas signed by this CA")
    p_call.add_argument("--tls-cert", help="our client certificate (PEM)")
    p_call.add_argument("--tls-key", help="its private key (PEM)")

    p_status = sub.add_parser("status", help="view, members and counters of every replica")
    p_status.add_argument("ref")
    p_status.add_argument("--ns-host")
    p_status.add_argument("--ns-port", type=int)
    p_status.add_argument("--tls-ca", help="talk TLS; trust replicas signed by this CA")
    p_status.add_argument("--tls-cert", help="our client certificate (PEM)")
    p_status.add_argument("--tls-key", help="its private key (PEM)")

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
    p_bk.add_argument(
        "--stack", default="total-batch", help="preset or spec (default: total-batch)"
    )
    p_bk.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p_bk.add_argument(
        "--failover",
        action="store_true",
        help="measure SIGKILL detection (kill -> new view) instead",
    )
    p_bc = bsub.add_parser("calls", help="replicated Counter.add vs plain Pyro5 (and PySyncObj)")
    p_bc.add_argument("--replicas", type=int, default=3)
    p_bc.add_argument("--clients", default="1,32", help="comma list of client counts")
    p_bc.add_argument("--seconds", type=float, default=5.0)
    p_bc.add_argument("--failover", action="store_true", help="kill a replica mid-run")
    p_bc.add_argument("--plot", metavar="FILE", help="with --failover: latency-over-time PNG")
    p_bc.add_argument("--secure", action="store_true", help="also a group on the secure stack")

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
            fd_notify=args.fd_notify,
        )
    if args.cmd == "demo":
        if args.simulated:
            return simtools.demo()
        from cohort.replication.cli.demo import run_demo

        return run_demo(seconds=args.seconds, clients=args.clients)
    ns = {
        k: v
        for k, v in (
            ("ns_host", getattr(args, "ns_host", None)),
            ("ns_port", getattr(args, "ns_port", None)),
        )
        if v
    }
    if args.cmd == "serve":
        from cohort.replication.cli.commands import serve_command

        opts = dict(stack=args.stack, params=_params(args.param) or None, trace_path=args.trace)
        opts["transport"] = args.transport
        opts["busy_limit"] = args.busy_limit
        opts.update(on_divergence=args.on_divergence, query_guard=args.query_guard)
        opts.update(
            check_every=args.check_every or None, check_interval=args.check_interval or None
        )
        if args.secret_file:
            opts.update(_secret_opts(args.secret_file, args.stack, opts["params"]))
        if args.tls_cert:
            from cohort.orb.tls import server_context

            opts["ssl_context"] = server_context(
                args.tls_cert, args.tls_key, args.tls_ca, args.tls_require_client_cert
            )
        if args.ns or ns:
            opts.update(ns_host=args.ns_host or "localhost", ns_port=args.ns_port)
        return serve_command(args.cls, args.group, args.listen, args.seeds, **opts)
    if getattr(args, "tls_ca", None) and args.cmd in ("call", "status"):
        from cohort.orb.tls import client_context

        ns["ssl_context"] = client_context(args.tls_ca, args.tls_cert, args.tls_key)
    if args.cmd == "call":
        from cohort.replication.cli.commands import call_command

        return call_command(args.ref, args.method, args.args, args.timeout, ns)
    if args.cmd == "status":
        from cohort.replication.cli.commands import status_command

        return status_command(args.ref, ns)
    if args.cmd == "bench" and args.what == "calls":
        from cohort.replication.cli.bench_calls import bench_calls

        clients = [int(c) for c in args.clients.split(",") if c]
        return bench_calls(
            args.replicas, clients, args.seconds, args.failover, args.plot, args.secure
        )
    if args.cmd == "bench" and args.what == "sim":
        return simtools.bench_sim(
            members=args.members,
            messages=args.messages,
            size=args.size,
            stack=args.stack,
            profile=not args.no_profile,
        )
    if args.cmd == "bench" and args.what == "stack":
        from cohort.replication.cli.bench_stack import bench_failover, bench_stack

        if args.failover:
            return bench_failover(args.members)
        return bench_stack(
            args.members, args.size, args.seconds, args.window, args.stack, args.transport
        )
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
