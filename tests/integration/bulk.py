"""A replicated store of large values made where they live, and a method that computes for a while.

`fill` builds its values at every replica from a seed (active replication runs it everywhere), so
a test gets hundreds of MiB of replicated state in a second without pushing it through a client.
`crunch` keeps the core busy in Python code (it holds the GIL in short slices, like user code).
"""

import hashlib
import time

from cohort.replication import query, replicated

MiB = 1 << 20


@replicated
class Bulk:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.n = 0

    def fill(self, start: int, count: int, size: int = MiB) -> int:
        for i in range(start, start + count):
            block = hashlib.blake2b(str(i).encode()).digest() * (size // 64)
            self.data[f"v{i}"] = block
        return len(self.data)

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def crunch(self, seconds: float) -> int:
        end = time.monotonic() + seconds  # the same work at every replica; not part of the state
        x = 0
        while time.monotonic() < end:
            x += 1
        self.n += 1
        return self.n

    @query
    def get(self) -> int:
        return self.n

    @query(local=True)
    def size(self) -> int:
        return len(self.data)
