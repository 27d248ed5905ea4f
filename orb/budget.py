"""A byte budget shared by a server's connections, so many large messages cannot add up.

Why: each connection's buffering is bounded by its limits, but hundreds of connections each sending
a message just under the limit would still multiply. A connection asks for the size of a large
body before reading it and waits (its socket unread, so TCP pushes back on the client) until the
bytes already granted to other connections are released. Grants are first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ByteBudget:
    """`capacity` bytes, acquired and released by coroutines on one event loop."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, n: int) -> None:
        """Wait until `n` bytes fit; `n` must not exceed the capacity."""
        assert n <= self.capacity, "the limits guarantee a message fits the budget"
        if not self._waiters and self.used + n <= self.capacity:
            self.used += n
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled
            else:
                try:
                    self._waiters.remove((n, fut))
                except ValueError:
                    pass  # _wake already skipped it
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.used += n
                fut.set_result(None)
