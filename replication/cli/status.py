"""`cohort status REF`: every replica of a group, its view, readiness and why it does not serve."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cohort.replication.cli.options import REF_HELP, add_client_options, client_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="view, members, readiness and counters of every replica",
        description="Ask the replicas named in REF, and every member their views name, how they "
        "are. Exit status 0 if some replica answered, 1 if none did.",
    )
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("--json", action="store_true", help="print the replicas' status as JSON")
    add_client_options(p)
    p.set_defaults(run=run)


def role(r: dict[str, Any]) -> str:
    if "error" in r:
        return "down"
    if not r["primary"]:
        return "minority"
    return "coord" if r["members"] and r["members"][0] == r["addr"] else "member"


def run(args: argparse.Namespace) -> int:
    from cohort.orb.status import group_status

    group, rows = group_status(args.ref, **client_options(args))
    up = [r for r in rows if "error" not in r]
    if args.json:
        print(json.dumps({"group": group, "replicas": rows}, default=repr, indent=1))
        return 0 if up else 1
    print(f"group {group!r}")
    head = f"{'replica':<22}{'role':<9}{'view':<26}{'members':>8}{'ready':>7}{'applied':>9}  digest"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['addr']:<22}{'down':<9}{r['error']}")
            continue
        vid = f"({r['vid'][0]},{r['vid'][1]})" if r["vid"] else "-"
        digest = (r["digest"] or "-")[:12]
        print(
            f"{r['addr']:<22}{role(r):<9}{vid:<26}{len(r['members']):>8}{str(r['ready']):>7}"
            f"{r['applied']:>9}  {digest}"
        )
    for r in up:
        counters = {k: v for k, v in r["counters"].items() if "bad" in k or "malformed" in k}
        orb = r.get("orb") or {}  # inputs the client port refused (cohort.orb.wire.WireServer)
        print(
            f"{r['addr']}: stack {r['stack']}, style {r['style']}, stats {r['stats']}, "
            f"cache {r['cache_entries']}, dropped {counters or 'none'}, "
            f"client port dropped {orb or 'none'}"
        )
        why = [r.get("cut_off"), r.get("unavailable")]  # the reasons a replica does not serve
        if r.get("custody"):
            why.append(f"keeps the state it held in view {r.get('held_vid')} (custody)")
        if r.get("core_hung"):
            why.append(f"left the group {r['core_hung']} time(s) with its core busy too long")
        if r.get("core_busy_s", 0) > 1:
            why.append(f"core busy for {r['core_busy_s']:.1f} s")
        for w in filter(None, why):
            print(f"{r['addr']}: {w}")
    return 0 if up else 1
