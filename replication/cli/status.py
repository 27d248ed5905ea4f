"""`cohort status REF`: every replica of a group, its view, readiness and why it does not serve."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from cohort.replication.cli.options import REF_HELP, add_client_options, client_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="view, members, readiness and counters of every replica",
        description="Ask the replicas named in REF, and every member their views name, how they "
        "are. Exit status 0 if some replica answered, 1 if none did, 3 if a replica's state "
        "diverged from the majority's.",
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
    marks = diverged(rows)
    if args.json:
        out = {"group": group, "replicas": rows, "diverged": marks}
        print(json.dumps(out, default=repr, indent=1))
        return 3 if marks else 0 if up else 1
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
            f"{r['applied']:>9}  {digest}{marks.get(r['addr'], '')}"
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
        if (r.get("check") or {}).get("diverged"):
            d = r["check"]["diverged"]  # this replica's own finding (cohort.replication.divergence)
            why.append(
                f"diverged at update {d['position']} (methods since {d['since']}: {d['methods']})"
            )
        for w in filter(None, why):
            print(f"{r['addr']}: {w}")
    return 3 if marks else 0 if up else 1


def diverged(rows: list[dict]) -> dict[str, str]:
    """addr -> "  DIVERGED ..." for each replica whose state digest at its latest divergence check
    disagrees with the majority's at the same position: digests of different positions are never
    compared. A position counts once a majority of the replicas that answered reported it (each
    reports its last few); a replica is judged at its latest such position."""
    up = [r for r in rows if "error" not in r and r.get("check")]
    at: dict[int, dict[str, str]] = {}  # position -> addr -> digest
    for r in up:
        for pos, digest in r["check"]["recent"]:
            at.setdefault(pos, {})[r["addr"]] = digest
    need = len(up) // 2 + 1
    marks = {}
    for r in up:
        for pos, digest in reversed(r["check"]["recent"]):
            reports = at[pos]
            if len(reports) < need:
                continue  # the others have not checked this position yet (or forgot it)
            top, n = Counter(reports.values()).most_common(1)[0]
            if n < need:
                marks[r["addr"]] = f"  DIVERGED at update {pos} (no majority agrees)"
            elif digest != top:
                marks[r["addr"]] = f"  DIVERGED at update {pos}"
                mine = r["check"].get("diverged") or {}
                if mine.get("position") == pos and mine.get("donor") and r.get("ready"):
                    marks[r["addr"]] += f" (resynced from {mine['donor']} since)"
            break
        if r["check"].get("stopped"):
            marks[r["addr"]] = "  DIVERGED: " + r["check"]["stopped"]
    return marks
