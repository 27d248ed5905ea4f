"""A replicated key-value store with compare-and-set."""

from typing import Any

from cohort import query, replicated


@replicated
class KVStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    @query
    def get(self, key: str) -> Any:
        return self.data.get(key)

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def cas(self, key: str, expected: Any, new: Any) -> bool:
        """Set `key` to `new` if it currently holds `expected` (None = absent)."""
        if self.data.get(key) != expected:
            return False
        self.data[key] = new
        return True

    @query(local=True)
    def size(self) -> int:
        """Answered by the replica reached, without ordering (may lag the latest updates)."""
        return len(self.data)
