"""Asking replicas how they are: one replica's status, or every replica of a group found from the
views of those that answer. What `cohort status`, the demo and the tests read.

Why in the ORB's client side: it speaks only the replicas' Pyro5 protocol (`status` on the group's
dispatcher object), so a monitoring process needs neither the stack nor replication.
"""

from __future__ import annotations

from typing import Any

from cohort.orb.connection import Connection
from cohort.orb.refs import STATUS, object_id, parse_ref


def replica_status(
    group: str,
    addr: str,
    timeout: float = 2.0,
    digest: bool = False,
    ssl_context: Any = None,
) -> dict[str, Any] | None:
    """One replica's status, or None if it does not answer; `digest=True` also hashes its state
    (a few ms per MiB of state, off the replica's core: ask only when comparing states)."""
    try:
        conn = Connection(addr, object_id(group), timeout, ssl_context)
        try:
            return conn.call(STATUS, [digest], timeout)
        finally:
            conn.close()
    except Exception:
        return None


def group_status(
    ref: str, digest: bool = True, timeout: float = 2.0, **options: Any
) -> tuple[str, list[dict[str, Any]]]:
    """(group name, one row per replica): the replicas named by `ref` and every member their views
    name, each row a replica's status or {"addr", "error"} for one that did not answer."""
    ssl_context = options.pop("ssl_context", None)
    gref = parse_ref(ref, **options)
    rows: list[dict[str, Any]] = []
    members = list(gref.members)
    seen: set[str] = set()
    while members:
        addr = members.pop(0)
        if addr in seen:
            continue
        seen.add(addr)
        try:
            conn = Connection(addr, object_id(gref.group), timeout, ssl_context)
            try:
                st = conn.call(STATUS, [digest], timeout + 3.0)
            finally:
                conn.close()
        except Exception as e:
            rows.append({"addr": addr, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(st)
        members += [m for m in st.get("members", []) if m not in seen]
    return gref.group, rows
