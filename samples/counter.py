"""A replicated counter: the smallest useful replicated object (the README's first example)."""

from cohort import query, replicated


@replicated
class Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> int:
        """An update: totally ordered, run on every replica; returns the new value."""
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value
