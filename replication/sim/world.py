"""The replica core on a simulated group: one `Engine` per `cohort.stack.sim.Sim` member, in virtual time.

Why: the engine's custody and transfer logic only fails in interleavings of views, pauses and
slow work (the 400 MiB cascade: a donor busy snapshotting was excluded, and every replica that
came back dropped its state). The stack's simulator reaches such interleavings by the thousand
and replays them from a seed; this module puts the real engine on top of it, with the engine's
work taking virtual time, so that a run shows what the group does while a replica is busy.

Theory of operation:

- Wiring. `sim.on_events` hands each endpoint's upward events (View, Deliver, Safe, DeliverSend,
  Exit) to that member's `Core`, which feeds them to its engine in order, as `replica.Replica`'s
  pump does. The engine's casts and sends go back through `Sim.cast` and `Sim.send`. The engine
  reads time and entropy only from the world: `clock` and `wallclock` are `sim.now`, `entropy`
  draws from a `random.Random` seeded by the world's seed (as `cohort.stack.runtime` gives layers
  `ctx.now` and `ctx.rng`). One seed, one run.
- The core. Each `Core` runs one input at a time (a group event, a client call, or the
  end-of-batch callbacks the engine schedules, as `core_thread.CoreThread` does). An input runs at
  once; what it costs (`Cost`, below) decides when its outputs (casts, sends, replies) leave and
  when the core takes its next input. Two architectures:
    core="thread" (today's): the endpoint keeps running while the core works; inputs queue
      behind the work and outputs leave when it is done.
    core="loop" (before the fix): the engine ran on the event loop, so while it works the
      member's endpoint is stalled too (`Sim.pause`): no packets processed, no timers fired, no
      heartbeats sent, exactly a blocked loop. Outputs leave when it resumes.
  A fault pause (a stopped process) stops both the endpoint and the core.
- The cost model. `Cost` charges virtual seconds by notional size (`sim_size()` of the user
  object, `cohort.replication.sim.model`): starting a snapshot session costs size / `rate` (the whole
  encoding, charged when the cut is taken; in the thread architecture it is spread over chunk
  sends, which changes only when the chunks leave, not whether the endpoint is responsive), an
  install costs size / `rate` (decoding), and a method call costs `method` seconds plus the
  notional bytes it added, at `rate`. Group events cost nothing else.
- Clients. A `Client` issues updates one at a time, each with its own (cid, rid), to a replica;
  on NO_QUORUM, RETRY or no answer within `timeout` it retries the same (cid, rid) at the next
  replica. Every OK is recorded in `world.acks`: what the checker (`cohort.replication.sim.check`)
  requires every surviving replica to reflect.
- Divergence checks, their hashing off the core, and state corruption: `cohort.replication.sim.diverge`.
"""

from __future__ import annotations

import random
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cohort.orb import errors as st
from cohort.replication.engine import Engine
from cohort.replication.sim import diverge
from cohort.replication.sim.model import Bulk
from cohort.stack.events import Deliver, DeliverSend, Exit, Safe
from cohort.stack.events import View as ViewEv
from cohort.stack.sim import Net, Sim
from cohort.state import codec

__all__ = ["Cost", "Core", "Client", "ReplicaWorld", "SimEngine"]

#: one-way latency between a client and a replica (virtual seconds)
CLIENT_LATENCY = 0.001


@dataclass(frozen=True)
class Cost:
    """Virtual seconds the engine's work takes (see the module docstring)."""

    #: bytes per second of snapshot encoding, state decoding and bulk method work
    rate: float = 300e6
    #: seconds per replicated method call, on top of the bytes it adds
    method: float = 0.0002
    #: each costed step takes its time times uniform(1 - jitter, 1 + jitter), drawn from the
    #: world's seeded generator (a shared host: other replicas' work, the collector)
    jitter: float = 0.0

    def size(self, obj: Any) -> int:
        """Notional bytes of the state: `obj.sim_size()`, else 0 (a small state)."""
        fn = getattr(obj, "sim_size", None)
        return int(fn()) if fn is not None else 0

    def bulk(self, nbytes: int) -> float:
        return max(0, nbytes) / self.rate


class SimEngine(Engine):
    """The real engine, metered: each costed step adds its virtual seconds to `work`."""

    cost: Cost = Cost()
    work: float = 0.0

    def _start_session(self) -> None:
        before = set(self.sessions)
        super()._start_session()
        if set(self.sessions) - before:
            self.work += self.cost.bulk(self.cost.size(self.obj))

    def _install(self, *args: Any) -> None:
        super()._install(*args)
        self.work += self.cost.bulk(self.cost.size(self.obj))

    def _run(self, method: str, payload: bytes, now: float, seed: int) -> tuple[int, bytes]:
        before = self.cost.size(self.obj)
        out = super()._run(method, payload, now, seed)
        self.work += self.cost.method + self.cost.bulk(self.cost.size(self.obj) - before)
        return out


class Core:
    """One member's engine driver: inputs in order, one at a time, each taking its cost."""

    def __init__(self, world: ReplicaWorld, addr: str) -> None:
        self.world = world
        self.addr = addr
        self.queue: deque[tuple[Callable, tuple]] = deque()
        self.tick_end: list[Callable[[], None]] = []
        self.out: list[Callable[[], None]] = []
        self.busy = False  # an input's work is under way (its outputs not yet out)
        self.frozen = False  # the process is stopped (a fault pause)
        self.dead = False
        self.running = False
        self.finish: list | None = None  # outputs of work that ended while frozen
        self.had_state = False
        self.lost = False
        self.engine = SimEngine(
            world.cls,
            addr,
            self._cast,
            self._send,
            world.init_args,
            {},
            schedule=self.tick_end.append,
            clock=world.now,
            wallclock=world.now,
            entropy=world.entropy,
            **diverge.driver(self),
        )
        self.engine.cost = world.cost

    # --- outputs, held until the current input's work is done --------------------------------

    def _cast(self, payload: bytes) -> None:
        self.output(lambda: self.world.sim.cast(self.addr, payload))

    def _send(self, dst: str, payload: bytes) -> None:
        self.output(lambda: self.world.sim.send(self.addr, dst, payload))

    def output(self, fn: Callable[[], None]) -> None:
        if self.running or self.busy:
            self.out.append(fn)
        else:
            fn()

    # --- inputs --------------------------------------------------------------------------------

    def post(self, fn: Callable, *args: Any) -> None:
        if not self.dead:
            self.queue.append((fn, args))

    def pump(self) -> None:
        """Run queued inputs until one takes time (or none is left)."""
        if self.running:
            return  # a nested call (an output fed the sim, which fed us): the loop goes on
        self.running = True
        try:
            while not (self.busy or self.frozen or self.dead) and (self.queue or self.tick_end):
                if self.queue:
                    fn, args = self.queue.popleft()
                    self._one(fn, args)
                else:  # the batch is over: the engine's end-of-tick callbacks
                    ends, self.tick_end[:] = list(self.tick_end), []
                    self.engine.work = 0.0
                    for fn in ends:
                        self._call(fn, ())
                    self._after()
        finally:
            self.running = False

    def _one(self, fn: Callable, args: tuple) -> None:
        self.engine.work = 0.0
        self._call(fn, args)
        self._after()

    def _call(self, fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception:
            self.world.errors.append((self.world.sim.now, self.addr, traceback.format_exc()))

    def _after(self) -> None:
        w = self.world
        obj = self.engine.obj
        if obj is not None:
            self.had_state = True
            self.lost = False
        elif self.had_state and not self.lost:  # once per loss, not per input after it
            self.lost = True
            w.dropped.append((w.sim.now, self.addr))
        d = self.engine.work
        if d > 0 and w.cost.jitter:
            d *= w.rng.uniform(1 - w.cost.jitter, 1 + w.cost.jitter)
        out, self.out = self.out, []
        if d <= 0:
            for fn in out:
                fn()
            return
        self.busy = True
        w.busy_time[self.addr] = w.busy_time.get(self.addr, 0.0) + d
        if w.core == "loop":
            w.stall(self.addr, "core")
        w.sim.at(w.sim.now + d, lambda: self._done(out))

    def _done(self, out: list) -> None:
        if self.dead:
            return
        if self.frozen:
            self.finish = out
            return
        if self.world.core == "loop":
            self.world.unstall(self.addr, "core")  # still busy: inputs this wakes up queue
        self.busy = False
        self.running = True
        try:
            for fn in out:
                fn()
        finally:
            self.running = False
        self.pump()

    def thaw(self) -> None:
        self.frozen = False
        if self.finish is not None:
            out, self.finish = self.finish, None
            self._done(out)
        else:
            self.pump()


@dataclass
class Client:
    """Issues updates one at a time; retries the same (cid, rid) elsewhere until it gets OK."""

    world: ReplicaWorld
    cid: bytes
    updates: int
    timeout: float = 2.0
    #: virtual seconds between an update's OK and the next update
    think: float = 0.0
    rid: int = 0
    attempt: int = 0
    target: int = 0
    done_at: float | None = None
    log: list = field(default_factory=list)

    def start(self, at: float) -> None:
        self.target = self.world.rng.randrange(1 << 16)
        self.world.sim.at(at, self._next)

    def _next(self) -> None:
        if self.rid >= self.updates:
            self.done_at = self.world.sim.now
            return
        self.rid += 1
        if self.think and self.rid > 1:
            self.world.sim.at(self.world.sim.now + self.think, self._try)
        else:
            self._try()

    def _try(self) -> None:
        w = self.world
        self.attempt += 1
        attempt, rid = self.attempt, self.rid
        names = w.names()
        addr = names[self.target % len(names)]
        uid = f"{self.cid.decode()}:{rid}"
        payload = codec.dumps([[uid], {}])

        def reply(status: int, body: Any) -> None:
            w.sim.at(
                w.sim.now + CLIENT_LATENCY, lambda: self._reply(attempt, rid, addr, status, body)
            )

        def submit() -> None:
            core = w.cores.get(addr)
            if core is None or core.dead:
                return
            core.post(core.engine.submit, self.cid, rid, "add", payload, rid - 1, False, reply)
            core.pump()

        w.sim.at(w.sim.now + CLIENT_LATENCY, submit)
        w.sim.at(w.sim.now + self.timeout, lambda: self._timeout(attempt))

    def _reply(self, attempt: int, rid: int, addr: str, status: int, body: Any) -> None:
        if attempt != self.attempt:
            if status == st.OK:  # a late answer of an earlier attempt: still an acknowledgement
                self.world.acks.append((self.cid, rid, addr, self.world.sim.now))
            return
        self.log.append((self.world.sim.now, addr, self.rid, status))
        if status == st.OK:
            self.world.acks.append((self.cid, self.rid, addr, self.world.sim.now))
            self._next()
        elif status in (st.NO_QUORUM, st.RETRY):
            self._elsewhere(0.05)
        elif status == st.STALE:
            self._next()  # completed elsewhere and forgotten: no result to record
        else:
            self.world.errors.append((self.world.sim.now, addr, f"client got {status}: {body!r}"))
            self._next()

    def _timeout(self, attempt: int) -> None:
        if attempt == self.attempt and self.done_at is None:
            self._elsewhere(0.0)

    def _elsewhere(self, delay: float) -> None:
        self.target += 1
        self.world.sim.at(self.world.sim.now + delay, self._try)


class ReplicaWorld:
    """A simulated group with one engine per member, clients, faults and a cost model."""

    def __init__(
        self,
        seed: int,
        n: int = 3,
        *,
        cls: type = Bulk,
        init_args: tuple = (),
        core: str = "thread",
        cost: Cost | None = None,
        params: dict | None = None,
        net: Net | None = None,
        replay: str = "",
        checks: diverge.Policy = diverge.CHECKS,
    ) -> None:
        assert core in ("thread", "loop"), core
        self.seed = seed
        self.cls = cls
        self.init_args = init_args
        self.core = core
        self.cost = cost or Cost()
        self.replay = replay
        diverge.setup(self, checks)  # .checks, .hash_rng, .corrupted, .stopped
        self.rng = random.Random(seed * 31 + 7)
        self._entropy = random.Random(seed * 31 + 11)
        self.acks: list[tuple[bytes, int, str, float]] = []  # (cid, rid, replica, time)
        self.errors: list[tuple[float, str, str]] = []  # engine exceptions, client errors
        self.dropped: list[tuple[float, str]] = []  # a replica's state became None (custody)
        self.busy_time: dict[str, float] = {}
        self.crashed: set[str] = set()
        self.clients: list[Client] = []
        self.views: list[tuple] = []  # (time, member, vid, members, primary) as installed
        self.notes: list[str] = []
        self._stalls: dict[str, set[str]] = {}
        self.sim = Sim(seed, n, stack="total", params=params, net=net, form="join", replay=replay)
        self.cores: dict[str, Core] = {a: Core(self, a) for a in self.sim.seeds}
        self.sim.on_events = self._on_events

    # --- the engine's environment --------------------------------------------------------------

    def now(self) -> float:
        return self.sim.now

    def entropy(self, n: int) -> bytes:
        return self._entropy.randbytes(n)

    def _on_events(self, addr: str, events: list) -> None:
        core = self.cores.get(addr)
        if core is None or core.dead:
            return
        e = core.engine
        for ev in events:
            cls = type(ev)
            if cls is Deliver:
                core.post(e.on_deliver, ev.origin, ev.payload)
            elif cls is Safe:
                core.post(e.on_safe, ev.count)
            elif cls is DeliverSend:
                core.post(e.on_send, ev.origin, ev.payload)
            elif cls is ViewEv:
                core.post(e.on_view, ev.view)
                self.views.append(
                    (self.sim.now, addr, ev.view.vid, ev.view.members, ev.view.primary)
                )
            elif cls is Exit:
                core.post(e.on_exit, ev.reason)
                self.sim.at(self.sim.now + 0.2, lambda a=addr: self._rejoin(a))
        core.pump()

    def _rejoin(self, addr: str) -> None:
        """As `Replica(rejoin=True)`: a member that left or was excluded joins as a new one."""
        core = self.cores[addr]
        if core.dead or self.sim.eps[addr].alive or addr in self.stopped:
            return
        core.post(core.engine.reattach, core._cast, core._send)
        self.sim.join(addr)
        core.pump()

    # --- faults and membership -----------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self.cores)

    def join(self, addr: str) -> None:
        self.cores[addr] = Core(self, addr)
        self.sim.join(addr)
        self.notes.append(f"{self.sim.now:.3f} join {addr}")

    def crash(self, addr: str) -> None:
        core = self.cores[addr]
        core.dead = True
        core.queue.clear()
        self.crashed.add(addr)
        self.sim.crash(addr)
        self.notes.append(f"{self.sim.now:.3f} crash {addr}")

    def pause(self, addr: str) -> None:
        """Stop the process: endpoint and core."""
        self.cores[addr].frozen = True
        self.stall(addr, "fault")
        self.notes.append(f"{self.sim.now:.3f} pause {addr}")

    def resume(self, addr: str) -> None:
        self.notes.append(f"{self.sim.now:.3f} resume {addr}")
        self.unstall(addr, "fault")
        self.cores[addr].thaw()

    def stall(self, addr: str, why: str) -> None:
        reasons = self._stalls.setdefault(addr, set())
        if not reasons:
            self.sim.pause(addr)
        reasons.add(why)

    def unstall(self, addr: str, why: str) -> None:
        reasons = self._stalls.get(addr, set())
        reasons.discard(why)
        if not reasons:
            self.sim.resume(addr)

    def partition(self, *groups: list[str]) -> None:
        self.sim.partition(*groups)
        self.notes.append(f"{self.sim.now:.3f} partition {groups}")

    def heal(self) -> None:
        self.sim.heal()
        self.notes.append(f"{self.sim.now:.3f} heal")

    # --- driving -------------------------------------------------------------------------------

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self.sim.at(t, fn)

    def call(self, addr: str, method: str, *args: Any, cid: bytes = b"setup", rid: int = 1):
        """Submit one call at `addr` (no retry); returns the list its replies land in."""
        got: list = []
        core = self.cores[addr]
        done = rid - 1
        payload = codec.dumps([list(args), {}])
        core.post(core.engine.submit, cid, rid, method, payload, done, False, _append(got))
        core.pump()
        return got

    def add_client(
        self, cid: bytes, updates: int, start: float, timeout: float = 2.0, think: float = 0.0
    ) -> Client:
        c = Client(self, cid, updates, timeout=timeout, think=think)
        self.clients.append(c)
        c.start(start)
        return c

    def live(self) -> list[str]:
        return [a for a in self.sim.live() if a in self.cores and not self.cores[a].dead]

    def settled(self) -> bool:
        """Every live member is in one primary view of exactly them, ready, with its core idle,
        and every client is done."""
        live = self.live()
        if not live or not self.sim.converged(live):
            return False
        for a in live:
            c = self.cores[a]
            if c.busy or c.queue or not c.engine.ready:
                return False
        return all(c.done_at is not None for c in self.clients)

    def run(self, until: float) -> None:
        self.sim.run(until)

    def run_until(self, pred: Callable[[], bool], within: float) -> bool:
        return self.sim.run_until(pred, within)

    def settle(self, within: float) -> bool:
        ok = self.sim.run_until(self.settled, within)
        self.sim.run(self.sim.now + 0.3)  # the last Safe and replies land
        return ok and self.settled()


def _append(got: list) -> Callable[[int, Any], None]:
    return lambda status, body: got.append((status, body))
