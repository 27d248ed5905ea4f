"""A running replica: an asyncio loop for the group and the server, and a thread for the core.

Why two threads: the loop runs the group stack (heartbeats, failure detection, retransmission)
and the Pyro5-protocol server; the `Engine` (ordered execution, user methods, snapshots, state
installs) runs on its own `CoreThread`, fed in order. A slow method or a large snapshot then
delays only the calls behind it, never the heartbeats: a busy replica stays a member. A core
busy for longer than `busy_limit` (default 5 s) counts as hung: the replica leaves the group and
rejoins once it is free (keeping its state). The cost is a thread hand-off each way on the call
path, batched under load.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from cohort.orb import errors as st
from cohort.orb.limits import ServerLimits
from cohort.orb.refs import GroupRef, object_id, register, unregister
from cohort.orb.wire import WireServer, parse_addr
from cohort.replication.api import class_info
from cohort.replication.core_thread import CoreThread
from cohort.replication.divergence import OffCoreHasher, Policy
from cohort.replication.engine import Engine
from cohort.stack.events import Block, Deliver, DeliverSend, Exit, Safe
from cohort.stack.events import View as ViewEv
from cohort.stack.transport import Group, JoinTimeout, tcp_handlers
from cohort.stack.transport import join as join_group
from cohort.state import codec, stream

log = logging.getLogger("cohort.replica")
#: seconds; see `Replica.start`
SWITCH_INTERVAL = 0.001
#: seconds after a view's install before an expired lease counts as cut off: the first
#: heartbeat echoes of the new view renew it (suspect.interval 0.1 s)
LEASE_GRACE = 0.5
#: the core thread's priority below the loop's (`cohort.replication.core_thread`)
CORE_NICE = 10


class Replica:
    """One replica of a replicated class, embeddable: `Replica(Counter, ...).start()` / `.stop()`.

    `listen` ("host:port") is both the replica's identity in the group (UDP) and the address of its
    Pyro5-protocol server (TCP, same port number). `seeds` are the addresses of the group's founding
    replicas; a group forms when a majority of them has started. `busy_limit`: seconds one
    input (a method, a snapshot, a state install) may keep the core busy before the replica
    counts as hung and leaves (it rejoins with its state when free; docs/replication.md).
    `server_limits`: what the client port accepts (`cohort.orb.limits.ServerLimits`, defaults if None).
    Divergence checks (`cohort.replication.divergence`): `check_every` (updates), `check_interval`
    (s), `on_divergence` ("resync"/"stop": `failed` says why it left), `query_guard`.
    """

    def __init__(
        self,
        cls: type,
        group: str,
        listen: str,
        seeds: list[str] | tuple[str, ...] | str,
        *,
        stack: str = "total",
        params: dict | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
        join_timeout: float = 30.0,
        quorum_timeout: float = 3.0,
        trace_path: str | None = None,
        ns_host: str | None = None,
        ns_port: int | None = None,
        ssl_context: Any = None,
        rejoin: bool = True,
        transport: str = "udp",
        busy_limit: float = 5.0,
        server_limits: ServerLimits | None = None,
        on_divergence: str = "resync",
        check_every: int | None = 1000,
        check_interval: float | None = 10.0,
        query_guard: str = "shallow",
    ) -> None:
        class_info(cls)  # fail now, not in the loop thread
        parse_addr(listen)
        if isinstance(seeds, str):
            seeds = [s for s in seeds.split(",") if s]
        self.cls = cls
        self.group_name = group
        self.listen = listen
        self.seeds = list(seeds) or [listen]
        self.stack = stack
        self.params = params
        self.args = args
        self.kwargs = kwargs
        self.join_timeout = join_timeout
        self.quorum_timeout = quorum_timeout
        self.trace_path = trace_path
        self.ns = (ns_host, ns_port) if ns_host or ns_port else None
        self.ssl_context = ssl_context
        self.rejoin = rejoin
        self.transport = transport
        if busy_limit <= 0:
            raise ValueError(f"busy_limit must be positive seconds, got {busy_limit!r}")
        self.busy_limit = busy_limit
        self.server_limits = server_limits
        self.checks = Policy(check_every, check_interval, on_divergence, query_guard)
        self.failed: str | None = None  # why the replica stopped (on_divergence="stop")
        self.hasher: OffCoreHasher | None = None
        self.core: CoreThread | None = None
        self.hung = 0  # times the core was busy beyond busy_limit
        self.loop_lag_max = 0.0  # seconds: the longest the loop was late for a timer
        self.engine: Engine | None = None
        self.group: Group | None = None
        self.view_history: list[tuple] = []
        self._blocked_since: float | None = None
        self._view_since = 0.0  # when the current view was installed (loop time)
        self._digesting: tuple | None = None  # (engine, version, future): one hash at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: WireServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> Replica:
        """Join the group, receive the state, start serving; return when calls can be answered."""
        # With the core busy in Python code, the loop thread waits for the GIL at each of its
        # system calls; CPython's default 5 ms switch interval makes that a convoy (a 32 KiB
        # state chunk is ~20 sendto calls) that delayed heartbeats past the failure detector's
        # timeout. 1 ms keeps the loop responsive at a small cost in switching.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._thread = threading.Thread(
            target=self._run, name=f"replica-{self.listen}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout if timeout is not None else self.join_timeout + 30):
            self.kill()
            raise TimeoutError(f"replica {self.listen} of {self.group_name!r} did not become ready")
        if self._error is not None:
            raise self._error
        if self.ns:
            register(self.group_name, self.listen, *self.ns)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Leave the group gracefully (the others install a view without us) and shut down."""
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        if self.ns:
            unregister(self.group_name, self.listen, *self.ns)
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(graceful=True), self._loop)
        try:
            fut.result(timeout + 1)
        except Exception:
            pass
        self._join_thread()

    def kill(self) -> None:
        """Stop dead, without leaving (the others detect a crash): for tests and demos."""
        if self._loop is None:
            return
        self._stopping = True
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(graceful=False), self._loop)
            fut.result(2)
        except Exception:
            pass
        self._join_thread()

    def _join_thread(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    @property
    def ref(self) -> GroupRef:
        members = self.engine.view.members if self.engine and self.engine.view else self.seeds
        return GroupRef(self.group_name, tuple(members))

    def status(self, digest: bool = True) -> dict:
        """A snapshot of this replica for `cohort status` (thread-safe); `digest=False` skips
        hashing the state, which costs about 3 ms per MiB of CPU."""
        if self._loop is None or not self._loop.is_running():
            return {"addr": self.listen, "running": False}
        fut = asyncio.run_coroutine_threadsafe(self._status(digest), self._loop)
        return fut.result(5)

    # --- the loop thread -------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._boot())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
        if self._error is None:
            loop.run_forever()
        for t in asyncio.all_tasks(loop):
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        if self.core is not None:
            self.core.stop()
        if self.hasher is not None:
            self.hasher.close()

    async def _boot(self) -> None:
        host, port = parse_addr(self.listen)
        methods = {name: self._plain_call(name) for name in class_info(self.cls).methods}
        methods.update(invoke=self._invoke, describe=self._describe, status=self._status)
        self._server = WireServer({object_id(self.group_name): methods}, limits=self.server_limits)
        # watchers (fast crash detection) and, on the TCP transport, group peers connect here too
        self._server.raw_handlers.update(tcp_handlers(self.listen))
        await self._server.start(host, port, ssl=self.ssl_context)
        self.core = CoreThread(f"replica-core-{self.listen}", nice=CORE_NICE)
        self.hasher = OffCoreHasher(f"replica-digest-{self.listen}", self.core.post, CORE_NICE)
        await self._join()
        self._spawn(self._watch_quorum())
        self._spawn(self._watch_core())

    async def _join(self) -> None:
        self.group = await join_group(
            self.group_name,
            self.listen,
            self.seeds,
            stack=self.stack,
            params=self.params,
            timeout=self.join_timeout,
            trace_path=self.trace_path,
            transport=self.transport,
        )
        group = self.group
        loop = asyncio.get_running_loop()

        def cast_here(payload: bytes) -> None:
            if group.ep.alive:
                group.ep.cast(payload)
                group._pump()

        def send_here(member: str, payload: bytes) -> None:
            try:
                group.send(member, payload)
            except ValueError:
                pass  # the member left the view: the transfer restarts in the next one

        def cast(payload: bytes) -> None:  # called on the core thread
            loop.call_soon_threadsafe(cast_here, payload)

        def send(member: str, payload: bytes) -> None:
            loop.call_soon_threadsafe(send_here, member, payload)

        core = self.core
        assert core is not None
        if self.engine is None:
            self.engine = Engine(
                self.cls,
                self.listen,
                cast,
                send,
                self.args,
                self.kwargs or {},
                schedule=core.schedule,  # calls of one batch leave as one cast
                policy=self.checks,
                hasher=self.hasher,
                leave=lambda why: loop.call_soon_threadsafe(self._leave_diverged, why),
            )
        else:  # a rejoin: same core, same kept state (custody)
            core.post(self.engine.reattach, cast, send)
        self._spawn(self._pump(group, self.engine))

    def _leave_diverged(self, reason: str) -> None:  # on_divergence="stop": leave for good
        self.failed, self.rejoin = reason, False
        if self.group is not None and self.group.ep.alive:
            self._spawn(self.group.leave(timeout=3.0))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _note_ready(self) -> None:  # core thread, after each input that may make us ready
        if self.engine is not None and self.engine.ready and not self._ready.is_set():
            self._ready.set()

    async def _pump(self, group: Group, engine: Engine) -> None:
        """Feed the group's events to the core, in order."""
        loop = asyncio.get_running_loop()
        post = self.core.post
        async for ev in group:
            cls = type(ev)
            if cls is Deliver:
                post(engine.on_deliver, ev.origin, ev.payload)
            elif cls is Safe:
                post(engine.on_safe, ev.count)
            elif cls is DeliverSend:
                post(engine.on_send, ev.origin, ev.payload)
                post(self._note_ready)
            elif cls is ViewEv:
                self._blocked_since = None
                self._view_since = loop.time()
                post(engine.on_view, ev.view)
                post(self._note_ready)
                self.view_history.append((tuple(ev.view.vid), tuple(ev.view.members)))
                log.info("%s: view %s", self.listen, ev.view)
            elif cls is Block:
                self._blocked_since = loop.time()
            elif cls is Exit:
                post(engine.on_exit, ev.reason)
                log.warning("%s: left the group: %s", self.listen, ev.reason)
            if cls is Deliver and not self._ready.is_set():
                post(self._note_ready)
        if not self._stopping and self.rejoin:
            group.close()
            await asyncio.wrap_future(self.core.call(lambda: None))  # the core is free again
            log.warning("%s: rejoining the group as a new member", self.listen)
            await asyncio.sleep(0.2)
            try:
                await self._join()
            except JoinTimeout as e:
                log.error("%s: could not rejoin: %s", self.listen, e)

    def _cut_off(self) -> str | None:
        """Why this replica cannot answer now although its view may say primary, or None.

        Its lease expired (no majority of the view echoed its heartbeats within the lease: the
        stack holds deliveries, and the others may already have excluded it), or it has been
        blocked in a view change for longer than `quorum_timeout`."""
        group, now = self.group, time.monotonic()
        fresh = now - self._view_since < LEASE_GRACE  # a new view's first lease is on its way
        if group is not None and group.ep.alive and not fresh and group.ep.lease_until() < now:
            return f"{self.listen} is cut off from a majority (its lease expired); retry elsewhere"
        since = self._blocked_since
        if since is not None and now - since > self.quorum_timeout:
            return f"{self.listen} is cut off from a majority (blocked in a view change)"
        return None

    async def _watch_quorum(self) -> None:
        """A replica cut off from the majority fails its waiting calls at once (their clients
        retry elsewhere with the same request ids), instead of holding them until a timeout."""
        while True:
            await asyncio.sleep(min(0.1, self.quorum_timeout / 4))
            why = self._cut_off()
            if why is not None and self.engine is not None:
                self.core.post(self.engine.fail_waiters, st.NO_QUORUM, why)

    async def _watch_core(self) -> None:
        """A core busy beyond `busy_limit` is hung: leave the group (the others go on without
        us); once the core is free again, the pump rejoins with the state kept."""
        loop = asyncio.get_running_loop()
        period = min(0.25, self.busy_limit / 4)
        while True:
            before = loop.time()
            await asyncio.sleep(period)
            lag = loop.time() - before - period
            if lag > self.loop_lag_max:
                self.loop_lag_max = lag
                if lag > 0.2:
                    log.warning("%s: the event loop ran %.0f ms late", self.listen, lag * 1000)
            busy = self.core.busy_for()
            if busy > self.busy_limit and self.group is not None and self.group.ep.alive:
                self.hung += 1
                log.error(
                    "%s: the replica core has been busy for %.1f s (busy_limit %.1f s): leaving "
                    "the group as hung; it rejoins when the core is free",
                    self.listen,
                    busy,
                    self.busy_limit,
                )
                self.group.close()
                self.group._events.put_nowait(Exit(f"core busy {busy:.1f} s"))

    async def _shutdown(self, graceful: bool) -> None:
        if self.group is not None:
            if graceful:  # leave before closing the server: watchers must not think us dead
                try:
                    await self.group.leave(timeout=3.0)
                except Exception:
                    self.group.close()
            else:
                self.group.close()
        if self._server is not None:
            self._server.close()

    # --- the dispatcher object -------------------------------------------------------------------

    async def _invoke(
        self, cid: bytes, rid: int, method: str, payload: bytes, done: int, local: int, vid: Any
    ) -> list:
        engine = self.engine
        if engine is None:
            return [st.RETRY, f"{self.listen} is joining", None]
        fut = asyncio.get_running_loop().create_future()

        def reply(status: int, body: Any) -> None:
            if not fut.done():
                fut.set_result((status, body))

        why = self._cut_off()
        if why is not None:
            reply(st.NO_QUORUM, why)
        else:
            loop = asyncio.get_running_loop()

            def reply_from_core(status: int, body: Any) -> None:
                loop.call_soon_threadsafe(reply, status, body)

            self.core.post(
                engine.submit, cid, rid, method, payload, done, bool(local), reply_from_core
            )
        status, body = await fut
        view = engine.view  # the client's view is stale: tell it the current one
        fresh = view is None or (vid and tuple(vid) == tuple(view.vid))
        return [status, body, None if fresh else [list(view.vid), list(view.members)]]

    def _plain_call(self, method: str):
        """A user method for plain Pyro5 proxies (`Pyro5.api.Proxy("PYRO:cohort.<group>@host:port")`):
        ordered and answered once uniform like any call, but a retry after a lost reply is a new
        call, since a plain proxy has no request ids (GroupProxy gives exactly-once)."""
        kind = class_info(self.cls).methods[method].kind

        async def call(*args: Any, **kwargs: Any) -> Any:
            payload = codec.dumps([list(args), kwargs], root=f"{method}()")
            cid = os.urandom(8)
            status, body, _view = await self._invoke(
                cid, 1, method, payload, 0, kind == "local", None
            )
            if status == st.OK:
                return codec.loads(body)
            if status == st.ERROR:
                raise st.decode_exception(body)
            raise (
                st.NoQuorum(str(body))
                if status == st.NO_QUORUM
                else st.RemoteError("Cohort", str(body))
            )

        return call

    def _describe(self) -> dict:
        view = self.engine.view if self.engine else None
        return {
            "methods": class_info(self.cls).describe(),
            "view": [list(view.vid), list(view.members)] if view else None,
            "primary": bool(view and view.primary),  # proxies' probes skip minority views
        }

    async def _status(self, with_digest: bool = False) -> dict:
        """Read on the loop (plain attribute reads), so a busy core does not delay it. The state
        digest only when asked (`cohort status` and convergence checks ask; polls for readiness
        do not: hashing a 100 MiB state on every poll took the CPU the others' calls needed); it is
        hashed off the core and the loop, or reported as None if the core is busy."""
        e = self.engine
        view = e.view if e else None
        cut_off = self._cut_off()
        digest, entries = None, None
        if e is not None and self.core is not None:
            try:
                want = bool(with_digest) and e.ready
                fut = self.core.call(lambda: (e.digest_source() if want else None, len(e.cache)))
                source, entries = await asyncio.wait_for(asyncio.wrap_future(fut), 2.0)
                if isinstance(source, tuple):  # hash the frozen copy off the core and the loop
                    version, frozen = source
                    pending = self._digesting
                    if pending is None or pending[0] is not e or pending[1] != version:
                        loop = asyncio.get_running_loop()
                        task = loop.run_in_executor(None, stream.digest, frozen)
                        self._digesting = pending = (e, version, task)
                    digest = await asyncio.shield(pending[2])
                    self.core.post(e.remember_digest, version, digest)
                else:
                    digest = source
            except asyncio.TimeoutError:
                pass
        return {
            "addr": self.listen,
            "group": self.group_name,
            "running": True,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "style": class_info(self.cls).style,
            "stack": self.stack,
            "vid": list(view.vid) if view else None,
            "members": list(view.members) if view else [],
            "primary": bool(view and view.primary) and cut_off is None,
            "cut_off": cut_off,
            "ready": bool(e and e.ready),
            "custody": bool(e and not e.ready and e.obj is not None),
            "unavailable": e.unavailable if e else None,
            "held_vid": list(e.held_vid) if e and e.held_vid else None,
            "core_busy_s": round(self.core.busy_for(), 3) if self.core else 0.0,
            "core_hung": self.hung,
            "loop_lag_max_s": round(self.loop_lag_max, 3),
            "applied": e.applied if e else 0,
            "digest": digest,
            "check": e.checks.summary if e else None,  # divergence checks (the last positions)
            "cache_entries": entries,
            "stats": dict(e.stats) if e else {},
            "transfers": list(e.xfer_log) if e else [],
            "views": [[list(v), list(m)] for v, m in self.view_history],
            "counters": dict(self.group.ep.counters) if self.group else {},
            "orb": dict(self._server.counters) if self._server else {},
        }


def serve(cls: type, group: str, listen: str, seeds: list[str] | str, **options: Any) -> int:
    """Run a replica until SIGINT/SIGTERM, then leave the group gracefully; 0, or 3 if it left
    because its state diverged (on_divergence="stop")."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    replica = Replica(cls, group, listen, seeds, **options).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("serving %s as %s at %s", cls.__name__, group, listen)
    while not stop.wait(0.2) and replica.failed is None:
        pass
    replica.stop()
    return 3 if replica.failed else 0
