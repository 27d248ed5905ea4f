"""Options several subcommands share: `--param`, the group secret, TLS, the name server.

Why apart: `serve`, `call`, `status` and `sim` read the same options the same way, and a wrong one
must fail the same way, as a `UsageError` that says what to write instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from cohort.errors import CohortError


class UsageError(CohortError, ValueError):
    """A command-line argument that cannot work; the message says what to write instead."""


REF_HELP = (
    "the group: PYROGROUP:NAME@HOST:PORT,HOST:PORT,... (any replicas of it; the others are found "
    "from their views) or PYROGROUPNAME:NAME (looked up in the Pyro5 name server)"
)


def _number(text: str) -> int | float:
    try:
        return int(text)  # sizes and counts stay integers
    except ValueError:
        return float(text)


def parse_params(items: Sequence[str]) -> dict[str, dict[str, int | float]]:
    """`layer.key=value` pairs into the nested dict `cohort.stack.compose` takes."""
    out: dict[str, dict[str, int | float]] = {}
    for item in items:
        try:
            key, value = item.split("=", 1)
            layer, name = key.split(".", 1)
            out.setdefault(layer, {})[name] = _number(value)
        except ValueError:
            raise UsageError(
                f"--param takes layer.key=value (e.g. nak.xmit_interval=0.05), not {item!r}"
            ) from None
    return out


def add_param_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="LAYER.KEY=VALUE",
        help="a layer parameter, e.g. suspect.timeout=2.0 (seconds); repeat for more",
    )


def stack_help() -> str:
    from cohort.stack.compose import PRESETS

    return (
        "the protocol stack: a preset ("
        + ", ".join(sorted(PRESETS))
        + ") or a spec top:LAYER:...:bottom; default %(default)s"
    )


def secret_options(path: str, stack: str, params: dict | None) -> dict[str, Any]:
    """`cohort serve --secret-file`: the group secret into params, and a secure stack."""
    try:
        with open(path, "rb") as f:
            secret = f.read().rstrip(b" \t\r\n")  # trailing whitespace (a newline) is ignored
    except OSError as e:
        raise UsageError(f"cannot read --secret-file {path!r}: {e.strerror}") from None
    if len(secret) < 16:
        raise UsageError(
            f"--secret-file {path!r} holds {len(secret)} bytes; a group secret needs at least 16 "
            "random bytes (make one with: head -c 32 /dev/urandom > FILE)"
        )
    stack = {"total": "secure", "total-batch": "secure-batch"}.get(stack, stack)
    from cohort.stack.compose import StackConfigError, compose

    try:
        names = compose(stack).names
    except StackConfigError as e:
        raise UsageError(f"--stack: {e}") from None
    if "auth" not in names:
        raise UsageError(f"--secret-file needs a secure stack (e.g. 'secure'), not {stack!r}")
    return {"stack": stack, "params": {**(params or {}), "auth": {"secret": secret}}}


def add_client_options(p: argparse.ArgumentParser) -> None:
    """What a client of the group needs: the name server (for PYROGROUPNAME refs) and TLS."""
    p.add_argument("--ns-host", help="the Pyro5 name server's host (for PYROGROUPNAME refs)")
    p.add_argument("--ns-port", type=int, help="the name server's port")
    p.add_argument("--tls-ca", help="talk TLS; trust replicas signed by this CA (PEM)")
    p.add_argument("--tls-cert", help="our client certificate (PEM), if replicas require one")
    p.add_argument("--tls-key", help="its private key (PEM)")


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """`connect`/`parse_ref` keyword arguments from `add_client_options`' flags."""
    out: dict[str, Any] = {}
    if args.ns_host:
        out["ns_host"] = args.ns_host
    if args.ns_port:
        out["ns_port"] = args.ns_port
    if args.tls_ca:
        from cohort.orb.tls import client_context

        out["ssl_context"] = client_context(args.tls_ca, args.tls_cert, args.tls_key)
    return out
