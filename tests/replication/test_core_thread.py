"""The replica core's thread: inputs in order, end-of-batch callbacks, busy time, cancelled work."""

from __future__ import annotations

import threading
import time

import pytest
from cohort.replication.core_thread import TICK, CoreThread

pytestmark = pytest.mark.timeout(20)


def test_inputs_run_in_order_and_batch_ends_run_once_the_queue_is_drained() -> None:
    core = CoreThread("t-order")
    gate = threading.Event()
    seen: list = []
    core.post(gate.wait)
    for i in range(5):
        core.post(seen.append, i)
        if i == 0:
            core.post(lambda: core.schedule(lambda: seen.append("end")))
    gate.set()
    core.call(lambda: None).result(5)
    assert seen == [0, 1, 2, 3, 4, "end"]  # the end of the batch waited for the whole queue
    core.stop()


def test_a_batch_end_runs_after_tick_inputs_under_sustained_load() -> None:
    core = CoreThread("t-tick")
    gate = threading.Event()
    seen: list = []
    core.post(gate.wait)
    core.post(lambda: core.schedule(lambda: seen.append("end")))
    for i in range(3 * TICK):
        core.post(seen.append, i)
    gate.set()
    core.call(lambda: None).result(5)
    assert seen.index("end") <= TICK + 1  # not postponed until the queue empties
    core.stop()


def test_busy_for_measures_the_running_input_and_a_raising_input_does_not_kill_the_core() -> None:
    core = CoreThread("t-busy")
    assert core.busy_for() == 0.0
    started, release = threading.Event(), threading.Event()
    core.post(lambda: (started.set(), release.wait(10)))
    assert started.wait(5)
    t0 = time.monotonic()
    while core.busy_for() < 0.05:  # it grows while the input runs
        assert time.monotonic() - t0 < 5
        release.wait(0.01)
    release.set()
    core.call(lambda: None).result(5)
    assert core.busy_for() == 0.0
    core.post(lambda: 1 / 0)  # logged, not fatal
    assert core.call(lambda: 42).result(5) == 42
    core.stop()


def test_a_call_whose_caller_gave_up_is_skipped() -> None:
    core = CoreThread("t-cancel")
    gate = threading.Event()
    ran: list = []
    core.post(gate.wait)
    fut = core.call(ran.append, 1)
    assert fut.cancel()
    gate.set()
    core.call(lambda: None).result(5)
    assert ran == []
    core.stop()
