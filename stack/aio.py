"""Real groups on asyncio: the same `Endpoint` the simulator drives, fed by sockets and the loop.

Why a thin driver: every protocol decision stays in the sans-I/O layers; this module only moves
datagrams, turns `Endpoint.next_deadline()` into one `loop.call_at`, and hands application events
to the caller. Time is the loop's monotonic clock.

Several groups in one process share one UDP socket per listen address; each datagram starts with a
4-byte tag of the group name, so a datagram for an unknown group is counted and dropped. A member's
address is "host:port" and is its identity in views.

    group = await stack.aio.join("demo", listen="127.0.0.1:7001", seeds=[...])
    await group.cast(b"hello")      # awaits while the flow layer's window is full (Backpressure)
    async for ev in group:          # Deliver / View / Block / Safe / Exit, origins as addresses
        ...
    await group.leave()
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from stack import fdsock
from stack.compose import StackSpec, compose
from stack.events import Backpressure, Exit, Refused
from stack.events import View as ViewEv
from stack.record import Recorder
from stack.runtime import Endpoint
from stack.tcp import PREAMBLE as TCP_PREAMBLE
from stack.tcp import TcpTransport
from stack.tick import TickSender
from stack.trace import Trace, from_json, to_json

#: timing for real networks (the simulator uses a faster profile)
REAL_PARAMS: dict[str, dict[str, Any]] = {
    "suspect": {"interval": 0.1, "timeout": 1.0, "lease": 0.5, "verify": 0.5},
    "gms": {"retry_interval": 0.05, "flush_timeout": 1.0, "join_interval": 0.2},
    "nak": {"xmit_interval": 0.02},
}


#: socket buffer sizes asked for (the kernel caps them at net.core.rmem_max / wmem_max): a burst of
#: a flow-control window (stack.layers.flow, 2 MiB by default) to each peer should fit, or most of it
#: is dropped on arrival and recovered by NAKs at a crawl
SOCKET_BUFFER = 8 << 20


class JoinTimeout(TimeoutError):
    """No primary view admitted us in time: check that a majority of the seeds is running and
    reachable at the addresses given, and that every member uses the same group name."""


class JoinRefused(PermissionError):
    """The group refused us: our group secret is not the group's, or our stack does not match the
    group's (a secure group admits only members that run the same stack and protection), or the
    group is secure and we joined without its secret. The message says which."""


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an address is host:port, got {addr!r}")
    return host, int(port)


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_udp_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n ports free right now on `host` for both UDP and TCP (a member's group traffic and its
    TCP listeners share the number), for tests and benchmarks on one machine.

    Chosen outside the kernel's ephemeral range: a port the kernel hands out to outgoing TCP
    connections (clients, watchers) could otherwise be taken before a late member binds it."""
    lo, hi = _ephemeral_range()
    low_range = (10000, lo - 1) if lo > 11000 else (hi + 1, 65535)
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randint(*low_range)
        if port in ports:
            continue
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((host, port))
        except OSError:
            continue
        ports.append(port)
    return ports


def group_tag(name: str) -> bytes:
    return zlib.crc32(name.encode()).to_bytes(4, "big")


@dataclass
class Faults:
    """Seeded packet faults on a real socket, for tests (this machine has no netem): each datagram
    leaving is lost with `loss`, sent twice with `dup`; `blocked` peers ("host:port") receive
    nothing from us (a partition, one way per side)."""

    loss: float = 0.0
    dup: float = 0.0
    blocked: set[str] = field(default_factory=set)
    seed: int = 0
    dropped: int = 0
    #: each datagram arriving is lost with this probability (inbound loss at this member, as an
    #: iptables `statistic` rule on INPUT makes it; `cohort bench stack` measures with it)
    rx_loss: float = 0.0
    rx_dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def copies(self, dest: str) -> int:
        if dest in self.blocked or (self.loss and self.rng.random() < self.loss):
            self.dropped += 1
            return 0
        return 2 if self.dup and self.rng.random() < self.dup else 1


class _Socket(TickSender, asyncio.DatagramProtocol):
    """One UDP socket and the groups multiplexed on it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.groups: dict[bytes, Group] = {}
        self.unknown_group = 0
        self.short = 0
        super().__init__()
        self.faults: Faults | None = None
        self.datagrams_sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        faults = self.faults
        if faults is not None and faults.rx_loss and faults.rng.random() < faults.rx_loss:
            faults.rx_dropped += 1
            return
        group = self.groups.get(data[:4])
        if group is None:
            if len(data) < 4:
                self.short += 1
            else:
                self.unknown_group += 1
            return
        group._on_datagram(f"{addr[0]}:{addr[1]}", data[4:])

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: peers may be down
        pass

    def flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing():
            self.batcher.pending.clear()
            return
        faults = self.faults
        for (tag, dest), data in self.batcher.drain():
            for _ in range(1 if faults is None else faults.copies(dest)):
                try:
                    transport.sendto(tag + data, parse_addr(dest))
                    self.datagrams_sent += 1
                except (OSError, ValueError):
                    pass  # a peer that went away: the protocol copes


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
            _Socket, local_addr=parse_addr(listen)
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
        sock: _Socket,
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
        #: fast crash detection (stack.fdsock): set by `join`, None to rely on heartbeats only
        self.watcher: fdsock.RingMonitor | None = None
        self._pump()

    # --- application side ------------------------------------------------------------------------

    async def cast(self, payload: bytes) -> None:
        """Multicast in total order (held while the group changes view).

        Awaits while the flow layer reports its window of unstable casts full (`Backpressure`),
        so a fast sender cannot outrun the slowest member. Raises ValueError for a payload larger
        than the frag layer's `max_size`.
        """
        if self._max_size is not None and len(payload) > self._max_size:
            raise ValueError(
                f"a cast of {len(payload)} bytes exceeds the stack's limit of {self._max_size} "
                "(frag max_size)"
            )
        if not self._room.is_set():
            self.backpressure_waits += 1
            while not self._room.is_set() and self.ep.alive:
                await self._room.wait()
        self.ep.cast(payload)
        self._pump()

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
    """Join (or, as the first seed, form) the group `name`.

    Returns once we are an acceptor of a primary view (we took part in a flush), so the group can
    already lose a minority without waiting for us; raises `JoinTimeout` otherwise, and
    `JoinRefused` when the group refuses us.
    A secure group (stack "secure": authenticated joins, encrypted packets, a new key at every
    view) needs its secret, the same on every member: `params={"auth": {"secret": b"<at least 16
    random bytes>"}}`; the group name is bound into every key (docs/security.md).
    `transport` is "udp" (default) or "tcp" (every member of a group must use the same);
    `fast_detection` watches the member ranked above us over TCP (see stack.fdsock).
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
            raise JoinTimeout(
                f"{listen} could not join group {name!r} within {timeout}s via seeds "
                f"{', '.join(seeds)}: is a majority of the seeds running?"
            )
        try:
            await asyncio.wait_for(group._views.get(), left)
        except asyncio.TimeoutError:
            pass
    if group.refused is not None:
        group.close()
        raise JoinRefused(f"{listen} was refused by group {name!r}: {group.refused}")
    return group


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
