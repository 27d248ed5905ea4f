"""`cohort serve`, `cohort call` and `cohort status`: a replicated class from the shell."""

from __future__ import annotations

import importlib
import json
import sys
from collections import Counter
from typing import Any

from cohort.orb.refs import object_id, parse_ref
from cohort.orb.wire import Connection


def load_class(spec: str) -> type:
    """`package.module:Class` -> the class (the current directory is importable, like `python -m`)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise SystemExit(
            f"give the class as MODULE:CLASS (e.g. cohort.samples.counter:Counter), not {spec!r}"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise SystemExit(f"cannot import {module!r}: {e}") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SystemExit(f"{module!r} has no attribute {name!r}")
    return obj


def serve_command(cls_spec: str, group: str, listen: str, seeds: str, **options: Any) -> int:
    from cohort.replication.replica import serve

    return serve(load_class(cls_spec), group, listen, seeds or listen, **options)


def call_command(ref: str, method: str, args: list[str], timeout: float, ns: dict) -> int:
    from cohort.replication import connect

    values = []
    for a in args:
        try:
            values.append(json.loads(a))
        except json.JSONDecodeError:
            values.append(a)  # a bare word is a string: `cohort call REF put key value`
    with connect(ref, timeout=timeout, **ns) as proxy:
        result = getattr(proxy, method)(*values)
    print(json.dumps(result, default=repr))
    return 0


def status_command(ref: str, ns: dict) -> int:
    ns = dict(ns)
    ssl_context = ns.pop("ssl_context", None)
    gref = parse_ref(ref, **ns)
    rows = []
    members = list(gref.members)
    seen: set[str] = set()
    while members:
        addr = members.pop(0)
        if addr in seen:
            continue
        seen.add(addr)
        try:
            conn = Connection(addr, object_id(gref.group), 2.0, ssl_context)
            st = conn.call("status", [True], 5.0)
            conn.close()
        except Exception as e:
            rows.append({"addr": addr, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(st)
        members += [m for m in st.get("members", []) if m not in seen]
    marks = diverged(rows)
    print(f"group {gref.group!r}")
    head = f"{'replica':<22}{'role':<8}{'view':<26}{'members':>8}{'ready':>7}{'applied':>9}  digest"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['addr']:<22}{'down':<8}{r['error']}")
            continue
        role = "coord" if r["members"] and r["members"][0] == r["addr"] else "member"
        vid = f"({r['vid'][0]},{r['vid'][1]})" if r["vid"] else "-"
        if not r["primary"]:
            role = "minority"
        digest = (r["digest"] or "-")[:12]
        print(
            f"{r['addr']:<22}{role:<8}{vid:<26}{len(r['members']):>8}{str(r['ready']):>7}"
            f"{r['applied']:>9}  {digest}{marks.get(r['addr'], '')}"
        )
    for r in rows:
        if "error" in r:
            continue
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
    up = [r for r in rows if "error" not in r]
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
