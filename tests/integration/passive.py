"""A passively replicated counter: the coordinator runs calls, backups apply its deltas."""

from cohort.replication import query, replicated


@replicated(style="passive")
class PassiveCounter:
    def __init__(self) -> None:
        self.value = 0
        self._last = 0

    def add(self, n: int) -> int:
        self.value += n
        self._last = self.value
        return self.value

    @query
    def get(self) -> int:
        return self.value

    def get_update(self) -> int:
        """The delta backups apply: here simply the new value."""
        return self._last

    def set_update(self, value: int) -> None:
        self.value = self._last = value
