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
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

from cohort.orb import errors as st
from cohort.orb.limits import ServerLimits
from cohort.orb.refs import DESCRIBE, INVOKE, STATUS, GroupRef, object_id, register, unregister
from cohort.orb.wire import WireServer
from cohort.replication.api import ReplicationError, class_info
from cohort.replication.core_thread import CoreThread
from cohort.replication.divergence import OffCoreHasher, Policy
from cohort.replication.engine import Engine
from cohort.replication.plain import plain_methods
from cohort.replication.status import replica_status
from cohort.stack.events import Block, Deliver, DeliverSend, Exit, Safe
from cohort.stack.events import View as ViewEv
from cohort.stack.transport import Group, JoinRefused, JoinTimeout, tcp_handlers
from cohort.stack.transport import join as join_group

from cohort.net import parse_addr

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
        full_tracebacks: bool = False,
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
        self.full_tracebacks = full_tracebacks
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
        self._fatal_event = threading.Event()  # set when the replica stopped itself (`_fatal`)
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
        methods = plain_methods(self.cls, self._invoke)
        methods.update({INVOKE: self._invoke, DESCRIBE: self._describe, STATUS: self._status})
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

        backlog: deque[bytes] = deque()  # casts waiting for the flow window, in order

        async def drain_backlog() -> None:
            while backlog and group.ep.alive:
                await group.cast(backlog[0])
                backlog.popleft()

        def cast_here(payload: bytes) -> None:
            """Through the group's checked path: the size limit (the engine refuses larger
            calls before this) and the flow window's backpressure, in the core's order."""
            if not group.ep.alive:
                return
            if backlog or not group.cast_nowait(payload):
                backlog.append(payload)
                if len(backlog) == 1:
                    self._spawn(drain_backlog())

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
                full_tracebacks=self.full_tracebacks,
                max_message=group.max_message,
                on_fatal=lambda kind, why: loop.call_soon_threadsafe(self._fatal, kind, why),
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

    def _fatal(self, kind: str, reason: str) -> None:
        """The core cannot go on (another class than the group's, a constructor or a state
        install that raised): leave the group, and make `start()` (or `serve`) raise."""
        if self._error is None:
            cls = JoinRefused if kind == "class" else ReplicationError
            self._error = cls(f"{self.listen} of group {self.group_name!r}: {reason}")
        self._ready.set()
        self._stopping = True
        self._spawn(self._shutdown(graceful=True))
        self._fatal_event.set()

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

    def _describe(self) -> dict:
        view = self.engine.view if self.engine else None
        return {
            "methods": class_info(self.cls).describe(),
            "view": [list(view.vid), list(view.members)] if view else None,
            "primary": bool(view and view.primary),  # proxies' probes skip minority views
            # a proxy refuses larger arguments itself, before sending them
            "max_message": self.engine.max_message if self.engine else None,
        }

    async def _status(self, with_digest: bool = False) -> dict:
        return await replica_status(self, with_digest)


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
        if replica._fatal_event.is_set():  # it stopped itself: say why, exit non-zero
            replica.stop()
            raise replica._error or ReplicationError("the replica stopped")
    replica.stop()
    return 3 if replica.failed else 0
