"""A replicated bank: transfers must conserve money on every replica, through crashes and joins."""

from cohort import query, replicated


@replicated
class Bank:
    def __init__(self) -> None:
        self.accounts: dict[str, int] = {}

    def open(self, account: str, initial: int = 0) -> int:
        if account in self.accounts:
            raise KeyError(f"account {account!r} already exists")
        self.accounts[account] = initial
        return initial

    def deposit(self, account: str, amount: int) -> int:
        self._check(account, amount)
        self.accounts[account] += amount
        return self.accounts[account]

    def withdraw(self, account: str, amount: int) -> int:
        self._check(account, amount)
        if self.accounts[account] < amount:
            raise ValueError(f"overdraft: {account} has {self.accounts[account]}, needs {amount}")
        self.accounts[account] -= amount
        return self.accounts[account]

    def transfer(self, a: str, b: str, amount: int) -> bool:
        """Move `amount` from a to b; False (and nothing moves) if a lacks the money."""
        self._check(a, amount)
        self._check(b, amount)
        if self.accounts[a] < amount:
            return False
        self.accounts[a] -= amount
        self.accounts[b] += amount
        return True

    @query
    def balance(self, account: str) -> int:
        if account not in self.accounts:
            raise KeyError(f"no account {account!r}")
        return self.accounts[account]

    @query
    def total(self) -> int:
        return sum(self.accounts.values())

    def _check(self, account: str, amount: int) -> None:
        if account not in self.accounts:
            raise KeyError(f"no account {account!r}")
        if not isinstance(amount, int) or amount < 0:
            raise ValueError(f"amount must be a non-negative int, got {amount!r}")
