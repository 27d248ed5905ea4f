"""A counter whose `slow_add` takes a while, so a test can kill a replica mid-call."""

import time

from cohort.replication import query, replicated


@replicated
class Slow:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    def slow_add(self, n: int, seconds: float) -> int:
        time.sleep(seconds)  # blocks the replica's loop: only for this test
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value
