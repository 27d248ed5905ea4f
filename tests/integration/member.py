"""A group member in its own process, for the real-process tests.

Usage: member.py NAME LISTEN SEEDS COUNT TRACE [PARAMS_JSON]   (COHORT_TRANSPORT=tcp for TCP)
Joins, prints JOINED, casts COUNT messages (one every 5 ms), prints CAST, then keeps serving
until SIGTERM, when it leaves gracefully and exits 0. Every record goes to TRACE.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from cohort.stack.transport import join as join_group


async def main() -> None:
    name, listen, seeds, count, trace = sys.argv[1:6]
    params = json.loads(sys.argv[6]) if len(sys.argv) > 6 else None
    transport = os.environ.get("COHORT_TRANSPORT", "udp")
    group = await join_group(
        name, listen, seeds.split(","), params=params, trace_path=trace, transport=transport
    )
    print("JOINED", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def drain() -> None:
        async for _ in group:
            pass

    drainer = asyncio.create_task(drain())
    for i in range(int(count)):
        await group.cast(f"{listen}:{i}".encode())
        await asyncio.sleep(0.005)
    print("CAST", flush=True)
    await stop.wait()
    await group.leave()
    drainer.cancel()


if __name__ == "__main__":
    asyncio.run(main())
