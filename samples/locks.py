"""A replicated lock service with leases: expiry uses `replication.now()`, the time chosen by the
replica that ordered the call, so every replica agrees on whether a lease has run out."""

from cohort import now, query, replicated


@replicated
class Locks:
    def __init__(self) -> None:
        self.held: dict[str, list] = {}  # name -> [owner, expires_at]

    def acquire(self, name: str, owner: str, lease: float = 10.0) -> bool:
        """Take `name` for `lease` seconds; True if we hold it now (renewing our own lease)."""
        t = now()
        cur = self.held.get(name)
        if cur is not None and cur[0] != owner and cur[1] > t:
            return False
        self.held[name] = [owner, t + lease]
        return True

    def release(self, name: str, owner: str) -> bool:
        cur = self.held.get(name)
        if cur is None or cur[0] != owner:
            return False
        del self.held[name]
        return True

    @query
    def holder(self, name: str) -> str | None:
        """The owner, if the lease has not run out at the time this read was ordered."""
        cur = self.held.get(name)
        return cur[0] if cur is not None and cur[1] > now() else None
