"""A replicated class with the bug divergence detection exists for: `roll` calls `random.random()`
directly, so every replica draws its own number (`replication.random()` is the right call).

The generator is seeded from `DICE_SEED` when the process starts (unset: from the OS, as
usual): a test gives two replicas the same seed, so they agree with each other and the third is
the minority.
"""

import os
import random

from cohort.replication import query, replicated

random.seed(os.environ.get("DICE_SEED"))


@replicated
class Dice:
    def __init__(self) -> None:
        self.total = 0.0
        self.n = 0

    def roll(self) -> float:
        x = random.random()  # the bug: not the same value at every replica
        self.total += x
        self.n += 1
        return x

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    @query
    def get(self) -> list:
        return [self.total, self.n]
