"""The replica core's own thread: user code never runs on the event loop that keeps the group alive.

Why: the event loop runs the group stack (heartbeats, the failure detector, retransmissions) and
the client server. When user methods, snapshots or the install of a large state ran on it, a 3 s
method or a 400 MiB snapshot stopped the heartbeats and got a healthy replica excluded, and with
it the state. The `Engine` is single-threaded and sans-I/O; this thread feeds it its inputs in
the order they were posted, and runs the callbacks it schedules for the end of a batch (the
calls of one batch leave as one cast) once the queue is empty. The loop stays responsive as long
as the core's work releases the GIL now and then, which Python code does every few milliseconds
(snapshots are encoded a chunk at a time for that reason, `cohort.state.stream`).

`busy_for()` tells the driver how long the current task has run: a core busy beyond the
replica's bound counts as hung (`Replica(busy_limit=...)`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("cohort.replica")

_STOP = object()
#: inputs handled at most before the end-of-tick callbacks run (under sustained load)
TICK = 64


class CoreThread:
    """Runs posted callables one at a time, in order, on one thread."""

    def __init__(self, name: str, nice: int = 0) -> None:
        """`nice`: the thread's scheduling priority below the process's (Linux: per thread), so
        that under CPU contention the event loops (heartbeats) of this and other replicas on the
        host run before the core's bulk work (snapshots, state installs)."""
        self._nice = nice
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._tick_end: list[Callable[[], None]] = []
        self._busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the core thread, after everything posted before it."""
        self._queue.put((fn, args, None))

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Like `post`, with a future for the result (await it with `asyncio.wrap_future`)."""
        fut: Future = Future()
        self._queue.put((fn, args, fut))
        return fut

    def schedule(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the queue is drained (the engine's end-of-tick hook); core thread only."""
        self._tick_end.append(fn)

    def busy_for(self) -> float:
        """Seconds the current task has been running (0.0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        if self._nice and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except OSError:
                pass  # not permitted here: run at the process's priority
        q = self._queue
        since_tick = 0
        while True:
            item = q.get()
            if item is _STOP:
                return
            self._one(item)
            since_tick += 1
            # a tick ends when the queue is drained, or after TICK items under sustained load
            while self._tick_end and (since_tick >= TICK or q.empty()):
                ends, self._tick_end = self._tick_end, []
                for fn in ends:
                    self._one((fn, (), None))
                since_tick = 0

    def _one(self, item: tuple) -> None:
        fn, args, fut = item
        self._busy_since = time.monotonic()
        try:
            self._call(fn, args, fut)
        finally:
            self._busy_since = None

    @staticmethod
    def _call(fn: Callable[..., Any], args: tuple, fut: Future | None) -> None:
        if fut is not None and not fut.set_running_or_notify_cancel():
            return  # the caller gave up waiting (a status call that timed out): skip the work
        try:
            result = fn(*args)
        except BaseException as e:  # the core must survive a bug in one input
            if fut is not None:
                fut.set_exception(e)
            else:
                log.exception("replica core: %r raised", fn)
            return
        if fut is not None:
            fut.set_result(result)
