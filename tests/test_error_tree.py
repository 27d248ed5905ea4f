"""One error tree: every exception class the project defines derives from `cohort.CohortError`,
and every public one is exported by the façade."""

from __future__ import annotations

import importlib
import inspect

import pytest
from layout import MODULES

import cohort

PUBLIC = [
    "StackConfigError",
    "JoinTimeout",
    "JoinRefused",
    "SerializationError",
    "DecodeError",
    "SnapshotError",
    "ReplicationError",
    "GroupUnavailable",
    "NoQuorum",
    "StaleRequest",
    "RemoteError",
    "GroupNotServed",
    "TLSMismatch",
    "MessageTooLarge",
]
#: the builtin each error also derives from, so `except ValueError` and the like keep working
BUILTIN = {
    "StackConfigError": ValueError,
    "JoinTimeout": TimeoutError,
    "JoinRefused": PermissionError,
    "SerializationError": TypeError,
    "DecodeError": ValueError,
    "SnapshotError": ValueError,
    "ReplicationError": TypeError,
    "GroupUnavailable": ConnectionError,
    "NoQuorum": ConnectionError,
    "StaleRequest": LookupError,
    "GroupNotServed": LookupError,
    "TLSMismatch": ConnectionError,
    "MessageTooLarge": ValueError,
}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_every_exception_class_we_define_is_a_cohort_error(name):
    module = importlib.import_module(name)
    for attr, obj in vars(module).items():
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
            assert issubclass(obj, cohort.CohortError), f"{name}.{attr} is not a CohortError"


@pytest.mark.parametrize("name", PUBLIC)
def test_public_errors_are_exported_and_keep_their_builtin(name):
    assert name in cohort.__all__
    err = getattr(cohort, name)
    assert issubclass(err, cohort.CohortError)
    if name in BUILTIN:
        assert issubclass(err, BUILTIN[name])
