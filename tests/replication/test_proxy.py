"""cohort.orb.proxy.GroupProxy against scripted fake replicas (real cohort.orb.wire.WireServer on 127.0.0.1).

Each fake replica runs a WireServer on its own asyncio loop thread and exposes `cohort.<group>`
with `invoke` and `describe` handlers whose behaviour the test scripts: answer OK with a view,
NO_QUORUM, RETRY, sleep past the attempt timeout, or drop the connection. Every fake records the
(client id, request id, method, done, local) of each call it receives.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cohort.orb import errors
from cohort.orb.connection import Connection
from cohort.orb.framing import _frame
from cohort.orb.proxy import GroupProxy, close_proxy, proxy_info
from cohort.orb.refs import DESCRIBE, INVOKE
from cohort.orb.wire import WireServer
from cohort.state import codec
from cohort.state.codec import SerializationError
from Pyro5 import protocol

GROUP = "g"
METHODS = {"add": "update", "echo": "update", "slow": "update", "get": "query", "size": "local"}


class Opaque:
    """A value msgpack cannot carry."""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def dead_addr() -> str:
    """An address nobody listens on (connection refused)."""
    return f"127.0.0.1:{free_port()}"


@dataclass
class Call:
    cid: bytes
    rid: int
    method: str
    args: list
    done: int
    local: int
    vid: Any


Behaviour = Callable[["FakeReplica", Call], Any]


def ok(r: FakeReplica, call: Call) -> list:
    """Echo the first argument (or the replica's address for no arguments)."""
    value = call.args[0] if call.args else r.addr
    return [errors.OK, codec.dumps(value), r.view]


def no_quorum(r: FakeReplica, call: Call) -> list:
    return [errors.NO_QUORUM, f"{r.addr} is cut off from a majority", r.view]


def retry(r: FakeReplica, call: Call) -> list:
    return [errors.RETRY, f"{r.addr} is joining", r.view]


def hang(seconds: float) -> Behaviour:
    async def behave(r: FakeReplica, call: Call) -> list:
        await asyncio.sleep(seconds)
        return ok(r, call)

    return behave


def close(r: FakeReplica, call: Call) -> list:
    for w in list(r.server._writers):  # drop the client's connection mid-call
        w.transport.abort()
    return ok(r, call)


class FakeReplica:
    def __init__(self, behave: Behaviour = ok, view: list | None = None) -> None:
        self.behave = behave
        self.view = view
        self.calls: list[Call] = []
        self.describes = 0
        self.loop_errors: list[dict] = []
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.server = WireServer(
            {f"cohort.{GROUP}": {INVOKE: self._invoke, DESCRIBE: self._describe}}
        )
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            self.server.start("127.0.0.1", self.port), self.loop
        ).result(5)

    def _invoke(self, cid, rid, method, payload, done, local, vid) -> Any:
        args, _kwargs = codec.loads(payload)
        call = Call(cid, rid, method, args, done, local, vid)
        self.calls.append(call)
        return self.behave(self, call)

    def _describe(self) -> dict:
        self.describes += 1
        return {"methods": METHODS, "view": self.view}

    def ids(self) -> list[tuple[bytes, int]]:
        return [(c.cid, c.rid) for c in self.calls]

    def stop(self) -> None:
        # cancelling connection tasks below makes asyncio 3.11 log from its own callback: keep
        # only what happened while the test ran
        self.loop_errors = list(self.loop_errors)
        self.loop.set_exception_handler(lambda loop, ctx: None)

        async def shutdown() -> None:
            self.server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def replicas() -> Iterator[Callable[..., FakeReplica]]:
    started: list[FakeReplica] = []

    def start(behave: Behaviour = ok, view: list | None = None) -> FakeReplica:
        r = FakeReplica(behave, view)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
    # bad input and dropped clients are handled inside the server: nothing reaches the loop
    assert [ctx.get("message") for r in started for ctx in r.loop_errors] == []


@pytest.fixture
def proxies() -> Iterator[Callable[..., GroupProxy]]:
    made: list[GroupProxy] = []

    def make(*addrs: str, **options: Any) -> GroupProxy:
        options.setdefault("timeout", 5.0)
        options.setdefault("attempt_timeout", 1.0)
        p = GroupProxy(f"PYROGROUP:{GROUP}@{','.join(addrs)}", **options)
        made.append(p)
        return p

    yield make
    for p in made:
        close_proxy(p)


def wait_until(pred: Callable[[], bool], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# --- the basic call ---------------------------------------------------------------------------------


def test_call_returns_the_decoded_result_and_numbers_requests(replicas, proxies) -> None:
    r = replicas()
    p = proxies(r.addr)
    assert p.add(5) == 5
    assert p.echo({"k": (1, 2)}) == {"k": (1, 2)}  # the codec keeps tuples
    assert r.describes == 1  # metadata fetched once, lazily
    assert [(c.method, c.rid, c.done, c.local) for c in r.calls] == [
        ("add", 1, 0, 0),
        ("echo", 2, 1, 0),
    ]
    assert len({c.cid for c in r.calls}) == 1 and len(r.calls[0].cid) == 8
    assert proxy_info(p).failovers == 0


def test_two_proxies_have_distinct_client_ids(replicas, proxies) -> None:
    r = replicas()
    proxies(r.addr).add(1)
    proxies(r.addr).add(1)
    assert r.calls[0].cid != r.calls[1].cid
    assert r.calls[0].rid == r.calls[1].rid == 1


# --- failover with the same request id ----------------------------------------------------------------


def test_failover_on_refused_timeout_and_retry_keeps_the_request_id(replicas, proxies) -> None:
    slow = replicas(hang(3.0))
    joining = replicas(retry)
    good = replicas(ok)
    dead = dead_addr()
    p = proxies(dead, slow.addr, joining.addr, good.addr, attempt_timeout=0.3)
    t0 = time.monotonic()
    assert p.add(7) == 7
    assert time.monotonic() - t0 < 2.0  # one attempt timeout, not the call timeout
    assert slow.ids() == joining.ids() == good.ids()
    assert len(good.ids()) == 1
    assert proxy_info(p).failovers >= 3
    # the next call starts over from the first candidate and gets a new request id
    p2_ids = good.ids()[0]
    assert p.add(8) == 8
    assert good.ids()[-1][1] == p2_ids[1] + 1


def test_failover_when_the_replica_drops_the_connection(replicas, proxies) -> None:
    flaky = replicas(close)
    good = replicas(ok)
    p = proxies(flaky.addr, good.addr)
    assert p.add(3) == 3
    assert flaky.ids() == good.ids()
    assert proxy_info(p).failovers == 1


def test_retry_status_is_retried_until_a_replica_serves(replicas, proxies) -> None:
    state = {"n": 0}

    def joining_then_ok(r: FakeReplica, call: Call) -> list:
        state["n"] += 1
        return retry(r, call) if state["n"] <= 3 else ok(r, call)

    r = replicas(joining_then_ok)
    p = proxies(r.addr, timeout=5.0)
    assert p.add(4) == 4
    assert len(r.calls) == 4 and len(set(r.ids())) == 1


# --- NoQuorum and GroupUnavailable --------------------------------------------------------------------


def test_no_quorum_when_every_replica_says_so(replicas, proxies) -> None:
    rs = [replicas(no_quorum) for _ in range(3)]
    p = proxies(*(r.addr for r in rs), timeout=0.6, attempt_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(errors.NoQuorum) as ei:
        p.add(1)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.6  # five rounds of refusals end the call before its timeout
    msg = str(ei.value)
    assert "majority" in msg and "Restart the missing replicas or heal the network" in msg
    assert "may be retried safely" in msg
    for r in rs:
        assert r.addr in msg
        assert r.calls and len(set(r.ids())) == 1  # retried, always with the same request id
    assert len({r.ids()[0] for r in rs}) == 1


def test_a_stranded_replica_and_dead_ones_are_no_quorum_naming_each(replicas, proxies) -> None:
    """The group is up (one replica answers) but has no majority: NoQuorum, with what each
    replica said, well before the call's timeout."""
    nq = replicas(no_quorum)
    dead = dead_addr()
    p = proxies(nq.addr, dead, timeout=10, attempt_timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(errors.NoQuorum) as ei:
        p.add(1)
    assert time.monotonic() - t0 < 2.0
    msg = str(ei.value)
    assert f"{nq.addr}: no quorum" in msg and f"{dead}: connect failed" in msg, msg


def test_group_unavailable_when_no_replica_runs(proxies) -> None:
    addrs = [dead_addr(), dead_addr()]
    p = proxies(*addrs, timeout=30, attempt_timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(errors.GroupUnavailable) as ei:
        p.add(1)
    assert time.monotonic() - t0 < 2.0  # refused everywhere is definitive: no 30 s wait
    msg = str(ei.value)
    for a in addrs:
        assert a in msg
    assert "connect failed" in msg and "no replica is running" in msg


def test_group_unavailable_when_every_replica_hangs(replicas, proxies) -> None:
    rs = [replicas(hang(5.0)) for _ in range(2)]
    p = proxies(*(r.addr for r in rs), timeout=0.8, attempt_timeout=0.2)
    with pytest.raises(errors.GroupUnavailable) as ei:
        p.add(1)
    msg = str(ei.value)
    for r in rs:
        assert r.addr in msg
    assert "timed out" in msg
    assert len({i for r in rs for i in r.ids()}) == 1


def test_a_server_without_the_group_object_is_skipped(replicas, proxies) -> None:
    good = replicas()
    other = FakeReplica()
    other.server.objects = {"cohort.someone-else": other.server.objects[f"cohort.{GROUP}"]}
    try:
        p = proxies(other.addr, good.addr)
        assert p.add(2) == 2
        assert other.calls == [] and len(good.calls) == 1
        lonely = proxies(other.addr, timeout=30, attempt_timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(errors.GroupNotServed) as ei:
            lonely.add(1)
        assert time.monotonic() - t0 < 2.0
        assert f"no replica serves group {GROUP!r}" in str(ei.value)
        assert "it serves: 'someone-else'" in str(ei.value)
    finally:
        other.stop()


# --- learning the view --------------------------------------------------------------------------------


def test_stale_reference_learns_the_members_from_a_reply(replicas, proxies) -> None:
    b = replicas(ok)
    c = replicas(ok)
    a = replicas(retry)  # still joining, but it knows the view
    view = [[7, b.addr], [b.addr, c.addr, a.addr]]
    for r in (a, b, c):
        r.view = None
    a.behave = lambda r, call: [errors.RETRY, "joining", view]
    p = proxies(a.addr)  # a reference naming only a
    assert proxy_info(p).members == (a.addr,)
    assert p.add(9) == 9
    assert proxy_info(p).members == (b.addr, c.addr, a.addr)
    assert a.ids() == b.ids()  # same request at the member it learned of
    assert c.calls == []


def test_updates_go_to_the_coordinator_first(replicas, proxies) -> None:
    a, b, c = replicas(), replicas(), replicas()
    view = [[5, c.addr], [c.addr, a.addr, b.addr]]
    for r in (a, b, c):
        r.view = view
    p = proxies(a.addr, b.addr, c.addr)
    for i in range(5):
        assert p.add(i) == i
    assert p.get() == c.addr  # a linearizable query also goes to the coordinator
    assert len(c.calls) == 6 and a.calls == [] and b.calls == []
    assert proxy_info(p).members == (c.addr, a.addr, b.addr)
    # the replica learns that the proxy knows its view
    assert c.calls[-1].vid == [5, c.addr]


def test_local_queries_are_spread_over_the_members(replicas, proxies) -> None:
    rs = [replicas() for _ in range(3)]
    p = proxies(*(r.addr for r in rs))
    for _ in range(6):
        p.size()
    assert [len(r.calls) for r in rs] == [2, 2, 2]
    assert all(c.local == 1 for r in rs for c in r.calls)


def test_an_older_view_does_not_replace_a_newer_one(replicas, proxies) -> None:
    a, b = replicas(), replicas()
    a.view = [[9, b.addr], [b.addr, a.addr]]
    b.view = [[3, a.addr], [a.addr, b.addr]]  # b reports an older view
    p = proxies(a.addr, b.addr)
    for _ in range(3):
        p.add(1)
    assert proxy_info(p).members == (b.addr, a.addr)
    assert len(b.calls) == 3 and a.calls == []


def test_failover_from_a_dead_coordinator(replicas, proxies) -> None:
    a, b = replicas(), replicas()
    view = [[4, a.addr], [a.addr, b.addr]]
    a.view = b.view = view
    p = proxies(a.addr, b.addr, attempt_timeout=0.3)
    assert p.add(1) == 1 and len(a.calls) == 1
    a.behave = close  # the coordinator dies mid-call
    assert p.add(2) == 2
    assert a.calls[-1].rid == b.calls[-1].rid == 2


# --- threads and the done watermark -------------------------------------------------------------------


def test_one_proxy_shared_by_20_threads(replicas, proxies) -> None:
    lock = threading.Lock()
    answered: set[int] = set()
    violations: list[tuple[int, int]] = []

    def checked(r: FakeReplica, call: Call) -> list:
        with lock:
            # everything at or below the watermark must have been answered already
            if call.done >= call.rid or any(x not in answered for x in range(1, call.done + 1)):
                violations.append((call.rid, call.done))
            answered.add(call.rid)
        return ok(r, call)

    rs = [replicas(checked) for _ in range(3)]
    p = proxies(*(r.addr for r in rs), timeout=30.0, attempt_timeout=10.0)
    results: dict[int, list] = {}
    failures: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            results[t] = [p.echo([t, i]) for i in range(50)]
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert failures == []
    assert all(results[t] == [[t, i] for i in range(50)] for t in range(20))
    rids = [c.rid for r in rs for c in r.calls]
    assert sorted(rids) == list(range(1, 1001))  # distinct, no gaps, no retries needed
    assert violations == []
    assert len({c.cid for r in rs for c in r.calls}) == 1


def test_done_watermark_stays_below_an_outstanding_request(replicas, proxies) -> None:
    started = threading.Event()

    def behave(r: FakeReplica, call: Call) -> Any:
        if call.method == "slow":
            started.set()
            return hang(0.6)(r, call)
        return ok(r, call)

    r = replicas(behave)
    p = proxies(r.addr, attempt_timeout=3.0)
    p.add(0)  # rid 1, completed
    slow_result: list = []
    t = threading.Thread(target=lambda: slow_result.append(p.slow("s")))
    t.start()
    try:
        assert started.wait(5)
        for i in range(3):
            p.add(i)  # rids 3, 4, 5 while rid 2 is outstanding
    finally:
        t.join(10)
    assert slow_result == ["s"]
    p.add(9)  # rid 6: everything before it completed
    got = {c.rid: c.done for c in r.calls}
    assert got == {1: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 5}


# --- client-side checks ---------------------------------------------------------------------------------


def test_unserializable_argument_fails_on_the_client(replicas, proxies) -> None:
    r = replicas()
    p = proxies(r.addr)
    with pytest.raises(SerializationError) as ei:
        p.add(Opaque())
    msg = str(ei.value)
    assert "argument of add() cannot be sent" in msg
    assert "'Opaque'" in msg and "add()[0][0]" in msg
    with pytest.raises(SerializationError) as ei:
        p.echo(1, key={"inner": [object()]})
    assert "'object'" in str(ei.value) and "['key']['inner'][0]" in str(ei.value)
    assert r.calls == [] and r.describes == 0  # nothing went over the wire


def test_unknown_method_is_an_attribute_error(replicas, proxies) -> None:
    r = replicas()
    p = proxies(r.addr)
    with pytest.raises(AttributeError) as ei:
        p.subtract(1)
    msg = str(ei.value)
    assert "'subtract'" in msg and f"{GROUP!r}" in msg and "add" in msg and "size" in msg
    assert r.calls == []
    with pytest.raises(AttributeError):
        p._private  # noqa: B018  (internal names are never remote methods)


def test_error_statuses_are_raised(replicas, proxies) -> None:
    class Custom(Exception):
        pass

    outcomes = iter(
        [
            [errors.ERROR, errors.encode_exception(ValueError("bad value"), ""), None],
            [errors.ERROR, errors.encode_exception(Custom("mine"), "tb"), None],
            [errors.STALE, "request 1 already completed and was forgotten", None],
        ]
    )
    r = replicas(lambda r, call: next(outcomes))
    p = proxies(r.addr)
    with pytest.raises(ValueError, match="bad value"):
        p.add(1)
    with pytest.raises(errors.RemoteError) as ei:
        p.add(1)
    assert ei.value.remote_type.endswith("Custom") and ei.value.remote_traceback == "tb"
    with pytest.raises(errors.StaleRequest, match="already completed"):
        p.add(1)
    assert len(r.calls) == 3  # errors are answers: no failover


# --- the wire -------------------------------------------------------------------------------------------


def test_plain_pyro5_proxy_talks_to_a_wire_server(replicas) -> None:
    import Pyro5.api

    r = replicas()
    r.view = [[1, r.addr], [r.addr]]
    with Pyro5.api.Proxy(f"PYRO:cohort.{GROUP}@{r.addr}") as px:
        px._pyroSerializer = "msgpack"
        px._pyroTimeout = 5.0
        described = getattr(px, DESCRIBE)()  # our dispatcher, under its reserved prefix
        assert described == {"methods": METHODS, "view": r.view}
        status, body, view = getattr(px, INVOKE)(
            b"pyro5-cid", 1, "add", codec.dumps([[11], {}]), 0, 0, None
        )
        assert status == errors.OK and codec.loads(body) == 11 and view == r.view
        with pytest.raises(AttributeError):
            px.nonexistent()
    assert r.ids() == [(b"pyro5-cid", 1)]


def test_connection_reports_unknown_exposed_methods(replicas) -> None:
    r = replicas()
    conn = Connection(r.addr, f"cohort.{GROUP}", timeout=2.0)
    try:
        assert conn.call(DESCRIBE, [], 2.0)["methods"] == METHODS
        with pytest.raises(AttributeError, match="no exposed method 'nope'"):
            conn.call("nope", [], 2.0)
        assert conn.call(DESCRIBE, [], 2.0)["methods"] == METHODS  # still usable
    finally:
        conn.close()
    with pytest.raises(
        errors.GroupNotServed, match=f"serves no group 'other'; it serves: '{GROUP}'"
    ):
        Connection(r.addr, "cohort.other", timeout=2.0)


def _raw_send(addr: str, data: bytes) -> bytes:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2.0) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_garbage_is_counted_and_the_server_keeps_serving(replicas, proxies) -> None:
    r = replicas()
    counters = r.server.counters
    assert _raw_send(r.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert wait_until(lambda: counters.get("orb.bad_connection") == 1)
    assert _raw_send(r.addr, b"PYRO" + bytes(range(60))) == b""  # a broken header
    assert wait_until(lambda: counters.get("orb.bad_message") == 1)
    marshal = _frame(protocol.MSG_CONNECT, 0, 2, b"\x00")  # serializer 2 (marshal) is refused
    refusal = protocol.ReceivingMessage(_raw_send(r.addr, marshal)[:40])  # a readable refusal:
    assert refusal.type == protocol.MSG_CONNECTFAIL and refusal.serializer_id == 3  # in JSON
    assert wait_until(lambda: counters.get("orb.refused_serializer") == 1)
    invoke_first = _frame(protocol.MSG_INVOKE, 1, 4, b"\x90")  # INVOKE before CONNECT
    assert _raw_send(r.addr, invoke_first) == b""
    assert wait_until(lambda: counters.get("orb.bad_message") == 2)
    assert _raw_send(r.addr, b"") == b""  # connect and hang up: not an error
    p = proxies(r.addr)
    assert p.add(5) == 5
    assert r.loop_errors == []
    assert counters == {"orb.bad_connection": 1, "orb.bad_message": 2, "orb.refused_serializer": 1}


def test_undecodable_connect_body_is_counted() -> None:
    r = FakeReplica()
    try:
        reply = _raw_send(r.addr, _frame(protocol.MSG_CONNECT, 0, 4, b"\xc1\xc1"))
        assert protocol.ReceivingMessage(reply[:40]).type == protocol.MSG_CONNECTFAIL
        wait_until(lambda: bool(r.loop_errors or r.server.counters), within=1.0)
        assert r.loop_errors == []
        assert r.server.counters.get("orb.bad_message") == 1
    finally:
        r.stop()
