"""`cohort serve MODULE:CLASS --group G --listen HOST:PORT --seeds ...`: run one replica."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from cohort.replication.cli.options import (
    UsageError,
    add_param_option,
    parse_params,
    secret_options,
    stack_help,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run one replica of a @replicated class",
        description="Run one replica of a @replicated class until SIGINT/SIGTERM (then it leaves "
        "the group gracefully). Start one per seed; a replica started later joins and receives "
        "the state from the group.",
    )
    p.add_argument(
        "cls",
        metavar="MODULE:CLASS",
        help="the class, as an importable module and a name in it, e.g. "
        "cohort.samples.counter:Counter or myservice:Inventory (the current directory is "
        "importable, as with python -m)",
    )
    p.add_argument("--group", required=True, help="the group's name (the same on every replica)")
    p.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="this replica's address and identity: UDP there for the group, TCP with Pyro5's "
        "protocol for clients",
    )
    p.add_argument(
        "--seeds",
        default="",
        metavar="HOST:PORT,...",
        help="the founding replicas (a majority of them forms the group); empty: this replica "
        "alone, a group of one",
    )
    p.add_argument("--stack", default="total", help=stack_help())
    p.add_argument("--transport", choices=["udp", "tcp"], default="udp", help="group transport")
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="JSON",
        help="a positional constructor argument (JSON; a bare word is a string); repeat for more",
    )
    p.add_argument(
        "--kwargs", metavar="JSON", help='constructor keyword arguments, e.g. {"capacity": 10}'
    )
    p.add_argument(
        "--busy-limit",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds a single method, snapshot or state install may keep the replica core busy "
        "before the replica counts as hung and leaves the group (default 5; it rejoins, keeping "
        "its state, once the core is free)",
    )
    p.add_argument(
        "--on-divergence",
        choices=["resync", "stop"],
        default="resync",
        help="when this replica's state digest disagrees with the majority's at a check: take a "
        "fresh state from a majority replica (resync, default) or leave the group and exit with "
        "status 3 (stop)",
    )
    p.add_argument(
        "--check-every",
        type=int,
        default=1000,
        metavar="N",
        help="compare state digests every N updates (default 1000; 0: never)",
    )
    p.add_argument(
        "--check-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="and every SECONDS of the updates' agreed time (default 10; 0: never)",
    )
    p.add_argument(
        "--query-guard",
        choices=["shallow", "digest", "off"],
        default="shallow",
        help="how @query methods are checked for changing the state: attribute bindings and "
        "container sizes (shallow, default), the whole state's digest (digest: slow, for "
        "debugging), or not at all",
    )
    p.add_argument(
        "--secret-file",
        help="group secret (16+ random bytes, the same file on every replica): admit only members "
        "that hold it, encrypt the group's traffic, new key at every view (stack 'secure')",
    )
    p.add_argument(
        "--full-tracebacks",
        action="store_true",
        help="send clients the tracebacks of their calls' exceptions with the server's file paths "
        "(by default file names only, so the replicas' reply caches hash alike)",
    )
    add_param_option(p)
    p.add_argument("--trace", metavar="FILE", help="append this replica's group trace to FILE")
    p.add_argument("--ns", action="store_true", help="register in the Pyro5 name server")
    p.add_argument("--ns-host", help="the name server's host (implies --ns)")
    p.add_argument("--ns-port", type=int, help="the name server's port")
    p.add_argument("--tls-cert", help="serve clients over TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.add_argument("--tls-ca", help="CA that signs client certificates (PEM)")
    p.add_argument(
        "--tls-require-client-cert", action="store_true", help="refuse clients without one"
    )
    p.set_defaults(run=run)


def load_class(spec: str) -> type:
    """`package.module:Class` -> the class; the current directory is importable, like `python -m`."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise UsageError(
            f"give the class as MODULE:CLASS (e.g. cohort.samples.counter:Counter), not {spec!r}"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        where = ", ".join(p or "." for p in sys.path[:6]) + (", ..." if len(sys.path) > 6 else "")
        raise UsageError(
            f"cannot import {module!r} ({e}); looked in the current directory "
            f"{os.getcwd()} and sys.path [{where}]"
        ) from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UsageError(f"module {module!r} has no attribute {name!r}")
    if not isinstance(obj, type):
        raise UsageError(f"{spec!r} is not a class")
    return obj


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word is a string


def run(args: argparse.Namespace) -> int:
    from cohort.replication.replica import serve

    cls = load_class(args.cls)
    opts: dict[str, Any] = dict(stack=args.stack, params=parse_params(args.param) or None)
    opts.update(trace_path=args.trace, transport=args.transport, busy_limit=args.busy_limit)
    opts["full_tracebacks"] = args.full_tracebacks
    opts.update(on_divergence=args.on_divergence, query_guard=args.query_guard)
    opts.update(check_every=args.check_every or None, check_interval=args.check_interval or None)
    opts["args"] = tuple(_json_arg(a) for a in args.arg)
    if args.kwargs:
        try:
            kwargs = json.loads(args.kwargs)
        except json.JSONDecodeError as e:
            raise UsageError(f"--kwargs takes a JSON object: {e}") from None
        if not isinstance(kwargs, dict):
            raise UsageError(f"--kwargs takes a JSON object, not {args.kwargs!r}")
        opts["kwargs"] = kwargs
    if args.secret_file:
        opts.update(secret_options(args.secret_file, args.stack, opts["params"]))
    if args.tls_cert:
        from cohort.orb.tls import server_context

        opts["ssl_context"] = server_context(
            args.tls_cert, args.tls_key, args.tls_ca, args.tls_require_client_cert
        )
    if args.ns or args.ns_host or args.ns_port:
        opts.update(ns_host=args.ns_host or "localhost", ns_port=args.ns_port)
    return serve(cls, args.group, args.listen, args.seeds or args.listen, **opts)
