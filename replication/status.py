"""A replica's status, as `cohort status` and the tests read it (the dispatcher's `_cohort_status`).

Why apart from the replica: it is a report over the replica's parts (the view, the engine's
custody and checks, the core's load, the ORB's counters), read on the event loop with plain
attribute reads so a busy core does not delay it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cohort.replication.api import class_info
from cohort.state import stream

if TYPE_CHECKING:
    from cohort.replication.replica import Replica


async def replica_status(replica: Replica, with_digest: bool = False) -> dict[str, Any]:
    """Read on the loop (plain attribute reads), so a busy core does not delay it. The state
    digest only when asked (`cohort status` and convergence checks ask; polls for readiness
    do not: hashing a 100 MiB state on every poll took the CPU the others' calls needed); it is
    hashed off the core and the loop, or reported as None if the core is busy."""
    e = replica.engine
    view = e.view if e else None
    cut_off = replica._cut_off()
    digest, entries = None, None
    if e is not None and replica.core is not None:
        try:
            want = bool(with_digest) and e.ready
            fut = replica.core.call(lambda: (e.digest_source() if want else None, len(e.cache)))
            source, entries = await asyncio.wait_for(asyncio.wrap_future(fut), 2.0)
            if isinstance(source, tuple):  # hash the frozen copy off the core and the loop
                version, frozen = source
                pending = replica._digesting
                if pending is None or pending[0] is not e or pending[1] != version:
                    loop = asyncio.get_running_loop()
                    task = loop.run_in_executor(None, stream.digest, frozen)
                    replica._digesting = pending = (e, version, task)
                digest = await asyncio.shield(pending[2])
                replica.core.post(e.remember_digest, version, digest)
            else:
                digest = source
        except asyncio.TimeoutError:
            pass
    return {
        "addr": replica.listen,
        "group": replica.group_name,
        "running": True,
        "class": f"{replica.cls.__module__}.{replica.cls.__qualname__}",
        "style": class_info(replica.cls).style,
        "stack": replica.stack,
        "vid": list(view.vid) if view else None,
        "members": list(view.members) if view else [],
        "primary": bool(view and view.primary) and cut_off is None,
        "cut_off": cut_off,
        "ready": bool(e and e.ready),
        "custody": bool(e and not e.ready and e.obj is not None),
        "unavailable": e.unavailable if e else None,
        "held_vid": list(e.held_vid) if e and e.held_vid else None,
        "core_busy_s": round(replica.core.busy_for(), 3) if replica.core else 0.0,
        "core_hung": replica.hung,
        "loop_lag_max_s": round(replica.loop_lag_max, 3),
        "applied": e.applied if e else 0,
        "digest": digest,
        "check": e.checks.summary if e else None,  # divergence checks (the last positions)
        "cache_entries": entries,
        "stats": dict(e.stats) if e else {},
        "transfers": list(e.xfer_log) if e else [],
        "views": [[list(v), list(m)] for v, m in replica.view_history],
        "counters": dict(replica.group.ep.counters) if replica.group else {},
        "orb": dict(replica._server.counters) if replica._server else {},
    }
