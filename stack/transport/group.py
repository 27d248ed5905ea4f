"""Real groups on asyncio: the same `Endpoint` the simulator drives, fed by sockets and the loop.

Why a thin driver: every protocol decision stays in the sans-I/O layers; this module only moves
datagrams, turns `Endpoint.next_deadline()` into one `loop.call_at`, and hands application events
to the caller. Time is the loop's monotonic clock.

Several groups in one process share one UDP socket per listen address; each datagram starts with a
4-byte tag of the group name, so a datagram for an unknown group is counted and dropped. A member's
address is "host:port" and is its identity in views.

    group = await cohort.stack.transport.group.join("demo", listen="127.0.0.1:7001", seeds=[...])
    await group.cast(b"hello")      # awaits while the flow layer's window is full (Backpressure)
    async for ev in group:          # Deliver / View / Block / Safe / Exit, origins as addresses
        ...
    await group.leave()
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from cohort.stack.compose import StackSpec, compose
from cohort.stack.events import Backpressure, Exit, Refused
from cohort.stack.events import View as ViewEv
from cohort.stack.record import Recorder
from cohort.stack.runtime import Endpoint
from cohort.stack.trace import Trace, from_json, to_json
from cohort.stack.transport import fdsock
from cohort.stack.transport.tcp import PREAMBLE as TCP_PREAMBLE
from cohort.stack.transport.tcp import TcpTransport
from cohort.stack.transport.udp import SOCKET_BUFFER, UdpSocket

from cohort.errors import CohortError
from cohort.net import parse_addr

if TYPE_CHECKING:
    from cohort.stack.transport.testing import Faults

#: timing for real networks (the simulator uses a faster profile)
REAL_PARAMS: dict[str, dict[str, Any]] = {
    "suspect": {"interval": 0.1, "timeout": 1.0, "lease": 0.5, "verify": 0.5},
    "gms": {"retry_interval": 0.05, "flush_timeout": 1.0, "join_interval": 0.2},
    "nak": {"xmit_interval": 0.02},
}


#: at most this many peers are remembered as heard from (`JoinTimeout`'s message)
HEARD_LIMIT = 256


class JoinTimeout(CohortError, TimeoutError):
    """No primary view admitted us in time. The message says what we know: which seeds we heard
    from in this group, which sent datagrams for another group (another name), which said
    nothing (down, or not reachable at that address), and whether a majority of the seeds,
    which a group needs to form, was up."""


class JoinRefused(CohortError, PermissionError):
    """The group refused us: our group secret is not the group's, or our stack does not match the
    group's (a secure group admits only members that run the same stack and protection), or the
    group is secure and we joined without its secret. The message says which."""


def group_tag(name: str) -> bytes:
    return zlib.crc32(name.encode()).to_bytes(4, "big")


_sockets: dict[str, Any] = {}  # listen address (or 'tcp:' + it) -> the transport there
#: (loop, listen address) -> the TCP listener for watchers of members there (None: port taken)
_fd_servers: dict[tuple[int, str], Any] = {}


def tcp_handlers(listen: str) -> dict[bytes, Any]:
    """What a TCP listener on `listen` must dispatch (by the connection's first 4 bytes): watchers
    (fast crash detection) and, for groups on the TCP transport, peers' frames. A process with its
    own server on that port (a replica) registers these; otherwise `join` listens itself."""

    async def transport_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = _sockets.get(f"tcp:{listen}")
        if isinstance(t, TcpTransport):
            await t.accept(reader, writer)
        else:
            writer.close()

    return {fdsock.PREAMBLE: fdsock.accept, TCP_PREAMBLE: transport_accept}


async def _listen_tcp(listen: str) -> Any:
    handlers = tcp_handlers(listen)

    async def dispatch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            handler = handlers.get(await reader.readexactly(4))
        except (asyncio.IncompleteReadError, ConnectionError):
            handler = None
        if handler is None:
            writer.close()
            return
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:  # the loop is shutting down: not an error of this peer
            writer.close()

    host, port = parse_addr(listen)
    try:
        return await asyncio.start_server(dispatch, host, port, reuse_address=True)
    except OSError:
        return None  # the port is taken: its owner dispatches `tcp_handlers` (a replica does)


async def _socket_for(listen: str, transport: str = "udp") -> Any:
    if transport == "tcp":
        key = f"tcp:{listen}"
        t = _sockets.get(key)
        if t is None or t.is_closing():
            t = _sockets[key] = TcpTransport(listen)
        return t
    if transport != "udp":
        raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
    sock = _sockets.get(listen)
    if sock is None or sock.transport is None or sock.transport.is_closing():
        loop = asyncio.get_running_loop()
        transport, sock = await loop.create_datagram_endpoint(
            UdpSocket, local_addr=parse_addr(listen)
        )
        raw = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                raw.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass  # best effort: the kernel's default still works, only slower under bursts
        _sockets[listen] = sock
    return sock


class Group:
    """A member of one group, driven by the running asyncio loop."""

    def __init__(
        self,
        name: str,
        listen: str,
        spec: StackSpec,
        sock: UdpSocket,
        seeds: Iterable[str],
        trace_path: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.addr = listen
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._tag = group_tag(name)
        self._events: asyncio.Queue = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._trace_file = open(trace_path, "a") if trace_path else None  # noqa: SIM115
        recorder = Recorder(self._write) if self._trace_file else None
        self.view: Any = None
        self._views: asyncio.Queue = asyncio.Queue()
        self._room = asyncio.Event()  # clear while the flow layer says its window is full
        self._room.set()
        self.backpressure_waits = 0  # casts that had to wait for room (tests, diagnostics)
        self.refused: str | None = None  # why the group refused to admit us (see JoinRefused)
        self.heard: set[str] = set()  # peers a datagram of this group came from (JoinTimeout)
        self._max_size = spec.param("frag").max_size if "frag" in spec.names else None
        self.ep = Endpoint(
            listen,
            spec,
            seeds=tuple(seeds),
            seed=seed if seed is not None else int.from_bytes(os.urandom(4), "big"),
            now=self._loop.time(),
            recorder=recorder,
        )
        sock.groups[self._tag] = self
        #: fast crash detection (cohort.stack.transport.fdsock): set by `join`, None to rely on heartbeats only
        self.watcher: fdsock.RingMonitor | None = None
        self._pump()

    # --- application side ------------------------------------------------------------------------

    async def cast(self, payload: bytes) -> None:
        """Multicast in total order (held while the group changes view).

        Awaits while the flow layer reports its window of unstable casts full (`Backpressure`),
        so a fast sender cannot outrun the slowest member. Raises ValueError for a payload larger
        than the frag layer's `max_size`.
        """
        self._check_size(payload)
        if not self._room.is_set():
            self.backpressure_waits += 1
            while not self._room.is_set() and self.ep.alive:
                await self._room.wait()
        self.ep.cast(payload)
        self._pump()

    @property
    def max_message(self) -> int | None:
        """The largest payload `cast` accepts (the frag layer's max_size), None without frag."""
        return self._max_size

    def cast_nowait(self, payload: bytes) -> bool:
        """`cast` without waiting: False (nothing sent) while the flow window is full, then the
        caller awaits `cast`. Raises ValueError for a payload larger than `max_message`."""
        self._check_size(payload)
        if not self._room.is_set():
            return False
        self.ep.cast(payload)
        self._pump()
        return True

    def _check_size(self, payload: bytes) -> None:
        if self._max_size is not None and len(payload) > self._max_size:
            raise ValueError(
                f"a cast of {len(payload)} bytes exceeds the stack's limit of {self._max_size} "
                "(frag max_size)"
            )

    def send(self, member: str, payload: bytes) -> None:
        self.ep.send(member, payload)
        self._pump()

    async def leave(self, timeout: float = 5.0) -> None:
        self.ep.leave()
        self._pump()
        deadline = self._loop.time() + timeout
        while self.ep.alive and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        self.close()

    def suspect(self, member: str) -> None:
        """An external failure notice (e.g. a closed TCP connection to that member)."""
        self.ep.suspect(member)
        self._pump()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        while True:
            ev = await self._events.get()
            yield ev
            if type(ev) is Exit:
                return

    async def next_event(self, timeout: float | None = None) -> Any:
        return await asyncio.wait_for(self._events.get(), timeout)

    async def wait_view(self, pred, timeout: float) -> Any:
        """Wait until the installed view satisfies `pred(view)`; return it."""
        deadline = self._loop.time() + timeout
        while self.view is None or not pred(self.view):
            left = deadline - self._loop.time()
            if left <= 0:
                raise TimeoutError(f"{self.addr}: view {self.view} never satisfied the condition")
            try:
                await asyncio.wait_for(self._views.get(), left)
            except asyncio.TimeoutError:
                pass
        return self.view

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        self._room.set()  # nobody waits for credits of a closed member
        if self._timer is not None:
            self._timer.cancel()
        self._sock.groups.pop(self._tag, None)
        self.ep.crash()
        if self._trace_file:
            self._trace_file.close()
            self._trace_file = None

    # --- driver side -----------------------------------------------------------------------------

    def _on_datagram(self, src: str, data: bytes) -> None:
        if len(self.heard) < HEARD_LIMIT:
            self.heard.add(src)
        self.ep.receive_datagram(src, data, self._loop.time())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._deadline = None
        self.ep.fire_timers(self._loop.time())
        self._pump()

    def _pump(self) -> None:
        """Ship what the endpoint produced and re-arm the one timer it needs."""
        sock, tag = self._sock, self._tag
        for dest, data in self.ep.take_packets():
            sock.send(tag, dest, data)
        for ev in self.ep.take_events():
            cls = type(ev)
            if cls is Refused:  # wake `join`, which raises JoinRefused
                self.refused = ev.reason
                self._views.put_nowait(self.view)
            if cls is Backpressure:  # for cast() only, not the application's event stream
                if ev.blocked:
                    self._room.clear()
                else:
                    self._room.set()
                continue
            if cls is ViewEv:
                self.view = ev.view
                self._views.put_nowait(ev.view)
                self._room.set()  # a new view starts with a fresh, empty window
                if self.watcher is not None:
                    self.watcher.on_view(ev.view)
            self._events.put_nowait(ev)
        deadline = self.ep.next_deadline()
        if deadline != self._deadline:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._deadline = deadline
            if deadline is not None:
                self._timer = self._loop.call_at(deadline, self._on_timer)

    def _write(self, kind: str, *data: Any) -> None:
        """Trace record stamped with the time the stack decided (the endpoint's `now`, the loop's
        monotonic clock, which is system-wide on Linux, so one machine's traces merge). Not the
        time of writing: a process stopped between deciding and writing would look like a zombie."""
        row = [self.ep.now, self.addr, kind, to_json(data)]
        self._trace_file.write(json.dumps(row) + "\n")
        self._trace_file.flush()


async def join(
    name: str,
    listen: str,
    seeds: Iterable[str],
    stack: str = "total",
    params: dict | None = None,
    timeout: float = 10.0,
    trace_path: str | None = None,
    faults: Faults | None = None,
    fast_detection: bool = True,
    transport: str = "udp",
) -> Group:
    """Join the group `name` (or form it, with any majority of the seeds).

    Returns once we are an acceptor of a primary view (we took part in a flush), so the group can
    already lose a minority without waiting for us; raises `JoinTimeout` otherwise, and
    `JoinRefused` when the group refuses us.
    A secure group (stack "secure": authenticated joins, encrypted packets, a new key at every
    view) needs its secret, the same on every member: `params={"auth": {"secret": b"<at least 16
    random bytes>"}}`; the group name is bound into every key (docs/security.md).
    `transport` is "udp" (default) or "tcp" (every member of a group must use the same);
    `fast_detection` watches the member ranked above us over TCP (see cohort.stack.transport.fdsock).
    """
    merged = {k: dict(v) for k, v in REAL_PARAMS.items()}
    for k, v in (params or {}).items():
        merged.setdefault(k, {}).update(v)
    names = set(compose(stack).names)
    if "auth" in names:
        merged.setdefault("auth", {}).setdefault("group", name)
    spec = compose(stack, {k: v for k, v in merged.items() if k in names})
    sock = await _socket_for(listen, transport)
    if transport == "tcp" or fast_detection:
        key = (id(asyncio.get_running_loop()), listen)
        if key not in _fd_servers:  # None: the port is taken, e.g. by a replica's server,
            _fd_servers[key] = await _listen_tcp(listen)  # which dispatches tcp_handlers itself
    if faults is not None:
        sock.faults = faults
    group = Group(name, listen, spec, sock, seeds, trace_path)
    if fast_detection:
        group.watcher = fdsock.RingMonitor(group)
        if group.view is not None:
            group.watcher.on_view(group.view)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while group.refused is None and not (
        group.view is not None and group.view.primary and listen in group.view.last_primary
    ):
        left = deadline - loop.time()
        if left <= 0:
            group.close()
            why = join_timeout_message(name, listen, seeds, timeout, group.heard, sock.strangers)
            raise JoinTimeout(why)
        try:
            await asyncio.wait_for(group._views.get(), left)
        except asyncio.TimeoutError:
            pass
    if group.refused is not None:
        group.close()
        raise JoinRefused(f"{listen} was refused by group {name!r}: {group.refused}")
    return group


def join_timeout_message(
    name: str,
    listen: str,
    seeds: Iterable[str],
    timeout: float,
    heard_from: set[str],
    strangers: set[str],
) -> str:
    """What `join` knows when it gives up: the seeds it heard from in this group (`heard_from`),
    those that sent datagrams of other groups only (`strangers`), the silent ones, and whether
    a majority of the seeds, which a group needs to form, was up."""
    seeds = list(dict.fromkeys(seeds))
    others = [s for s in seeds if s != listen]
    heard = [s for s in others if s in heard_from]
    foreign = [s for s in others if s not in heard_from and s in strangers]
    silent = [s for s in others if s not in heard_from and s not in strangers]
    up, n = len(heard) + (listen in seeds), len(seeds)
    us = ", counting us" if listen in seeds else ""
    msg = f"{listen} could not join group {name!r} within {timeout}s (seeds {', '.join(seeds)})."
    if heard:
        msg += f" Heard from {', '.join(heard)} in this group, but no primary view admitted us."
    if foreign:
        msg += (
            f" {', '.join(foreign)} sent datagrams for another group only: do they use the "
            f"group name {name!r}?"
        )
    if silent:
        msg += f" Nothing from {', '.join(silent)}: not running, or not reachable there."
    if 2 * up <= len(seeds):
        msg += f" A group forms once a majority of its seeds runs it; here {up} of {n} did{us}."
    else:
        msg += (
            f" A majority of the seeds runs it ({up} of {n}{us}), which is enough to form it: "
            "check that every member has the same seed list, stack and group secret, or wait "
            "longer."
        )
    return msg


def merge_traces(paths: Iterable[str]) -> Trace:
    """One trace from the per-process files of real members on one machine, in time order."""
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    rows.sort(key=lambda r: r[0])
    trace = Trace()
    for t, member, kind, data in rows:
        trace.add(t, member, kind, *from_json(data))
    return trace
