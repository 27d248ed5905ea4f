"""The root of Cohort's error tree: every exception the project raises derives from `CohortError`.

Why a leaf module of its own: the errors are defined beside the code that raises them (the stack's
`StackConfigError`, the codec's `DecodeError`, the client's `NoQuorum`, ...), and those packages
must not import each other (`cohort.stack` imports nothing of ours but leaf modules, the ORB's
client side never imports the stack). This module imports nothing, so all of them can share one
base. Each error also derives from the builtin closest to it (`ValueError`, `TypeError`,
`TimeoutError`, `ConnectionError`, ...), so `except` clauses written for those keep working.
`import cohort` re-exports every public error; `docs/errors.md` lists the tree.
"""

from __future__ import annotations


class CohortError(Exception):
    """Base class of every error Cohort raises: `except cohort.CohortError` catches them all."""


__all__ = ["CohortError"]
