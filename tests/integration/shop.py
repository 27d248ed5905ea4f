"""A replicated stock that raises an exception class of its own, for the error tests: a client
that imported this module gets `OutOfStock` back, one that did not gets a `RemoteError` that is
also a `KeyError`."""

from __future__ import annotations

from cohort import query, replicated


class OutOfStock(KeyError):
    """Not enough of an item."""


@replicated
class Shop:
    def __init__(self) -> None:
        self.stock: dict[str, int] = {"apple": 2}

    def take(self, item: str, n: int) -> int:
        have = self.stock.get(item, 0)
        if have < n:
            raise OutOfStock(f"{item}: {have} left, {n} wanted")
        self.stock[item] = have - n
        return have - n

    @query
    def count(self, item: str) -> int:
        return self.stock.get(item, 0)


@replicated
class Fragile:
    """A class whose constructor raises when told to (`cohort serve ... --kwargs '{"fail": true}'`)."""

    def __init__(self, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("no database configured")
        self.n = 0

    def add(self, n: int) -> int:
        self.n += n
        return self.n
