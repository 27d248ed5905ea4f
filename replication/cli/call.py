"""`cohort call REF METHOD ARGS...`: call a method of a replicated object and print the result."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cohort.replication.cli.options import REF_HELP, UsageError, add_client_options, client_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "call",
        help="call a method of a replicated object",
        description="Call METHOD on the group's object through a failover proxy (exactly once, "
        "retried at another replica if one fails) and print the result.",
    )
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("method", metavar="METHOD")
    p.add_argument(
        "args",
        nargs="*",
        metavar="ARG",
        help="positional arguments as JSON (a bare word is a string: cohort call REF put key "
        'value); NAME=JSON is a keyword argument; {"$decimal": "1.5"} is a Decimal',
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="the whole call, failover included (default %(default)s)",
    )
    add_client_options(p)
    p.set_defaults(run=run)


def _value(text: str) -> Any:
    try:
        return _typed(json.loads(text))
    except json.JSONDecodeError:
        return text


def _typed(v: Any) -> Any:
    """JSON plus what JSON lacks: {"$decimal": "59.94"} is a Decimal, {"$bytes": "hex"} bytes."""
    if isinstance(v, dict):
        if set(v) == {"$decimal"}:
            from decimal import Decimal

            return Decimal(str(v["$decimal"]))
        if set(v) == {"$bytes"}:
            return bytes.fromhex(v["$bytes"])
        return {k: _typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_typed(x) for x in v]
    return v


def split_args(items: list[str]) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in items:
        name, eq, rest = item.partition("=")
        if eq and name.isidentifier():
            kwargs[name] = _value(rest)
        elif kwargs:
            raise UsageError(f"positional argument {item!r} after keyword arguments")
        else:
            args.append(_value(item))
    return args, kwargs


def readable(v: Any) -> Any:
    """A result as JSON can show it, without losing what it is: a Decimal stays exact, a record
    shows its type and fields."""
    import dataclasses
    from decimal import Decimal

    if isinstance(v, Decimal):
        return {"$decimal": str(v)}
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    from cohort.state.codec import Record

    if isinstance(v, Record):
        return {"$type": v.type_name, **{k: readable(x) for k, x in v.fields.items()}}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = {f.name: readable(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return {"$type": type(v).__qualname__, **fields}
    if isinstance(v, dict):
        return {str(k): readable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [readable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def run(args: argparse.Namespace) -> int:
    from cohort.orb.proxy import connect

    values, kwargs = split_args(args.args)
    with connect(args.ref, timeout=args.timeout, **client_options(args)) as proxy:
        result = getattr(proxy, args.method)(*values, **kwargs)
    print(json.dumps(readable(result)))
    return 0
