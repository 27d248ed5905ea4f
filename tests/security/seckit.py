"""Shared fixtures of the security tests: a secure group in the simulator, a wire tap, rogues,
and an attacker's decryption attempt (an encrypt layer built from whatever key the attacker has).

The attacker is assumed to know everything on the wire (view tags, view ids and members from the
installs, ranks, sequence numbers) and the code; only keys are secret.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
from cohort.stack import check, wire
from cohort.stack.compose import compose
from cohort.stack.events import ControlIn, Deliver, DeliverSend
from cohort.stack.events import View as ViewEv
from cohort.stack.layer import RecordingContext
from cohort.stack.layers.encrypt import Encrypt
from cohort.stack.layers.encrypt import Params as EncParams
from cohort.stack.runtime import Endpoint
from cohort.stack.sim import SIM_PARAMS, Net, Sim
from cohort.stack.view import View

SECRET = bytes(range(100, 132))  # the group's secret in these tests
WRONG = bytes(range(200, 232))  # a rogue's guess
GROUP = ""  # Sim runs one unnamed group


def params(secret: bytes = SECRET, **extra: dict) -> dict:
    p: dict[str, dict] = {"auth": {"secret": secret}}
    for k, v in extra.items():
        p.setdefault(k, {}).update(v)
    return p


def secure_sim(
    seed: int,
    n: int = 3,
    form: str = "join",
    stack: str = "secure",
    net: Net | None = None,
    **extra: dict,
) -> Sim:
    """A formed secure group m0..m{n-1} (formed by authenticated joins unless form="initial")."""
    sim = Sim(
        seed, n, stack=stack, params=params(**extra), net=net, form=form, replay=f"seed={seed}"
    )
    assert sim.run_until(lambda: settled(sim), within=5.0), f"seed={seed}: no group: {sim.views()}"
    return sim


def settled(sim: Sim, members: Iterable[str] | None = None) -> bool:
    """Converged, every member an acceptor (a joiner becomes one in the flush after its join)."""
    members = list(sim.live() if members is None else members)
    if not sim.converged(members):
        return False
    v = sim.eps[members[0]].view
    return set(v.last_primary) == set(v.members)


def finish(sim: Sim, live: Iterable[str], settle: float = 0.5) -> None:
    """Let the group settle, then check the whole trace (rogues record nothing)."""
    live = tuple(live)
    assert sim.run_until(lambda: sim.converged(list(live)), within=10.0), sim.views()
    sim.run(sim.now + settle)
    sim.trace.live = live
    sim.trace.liveness = True
    check.assert_ok(sim.trace)


def cast_all(sim: Sim, members: Iterable[str], count: int, label: str, gap: float = 0.003) -> list:
    """Each member casts `count` payloads `label:m:k`; returns them."""
    out = []
    t0 = sim.now + 0.001
    for k in range(count):
        for m in members:
            p = f"{label}:{m}:{k}".encode()
            out.append(p)
            sim.at(t0 + k * gap, lambda m=m, p=p: sim.cast(m, p))
    return out


def delivered_everywhere(sim: Sim, members: Iterable[str], payloads: list) -> bool:
    want = set(payloads)
    return all(want <= set(sim.delivered[m]) for m in members)


class Tap:
    """A passive wiretap on the simulated network: every packet, (time, src, dst, bytes).

    `drop(pred)` turns it into an on-path attacker that removes packets, `rewrite(fn)` one that
    changes them (fn returns the new bytes, or None to leave the packet alone).
    """

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.packets: list[tuple[float, str, str, bytes]] = []
        self.droppers: list[Callable[[str, str, bytes], bool]] = []
        self.rewriters: list[Callable[[str, str, bytes], bytes | None]] = []
        push = sim._push

        def tapped(t: float, item: tuple) -> None:
            if item[0] == "pkt":
                _, src, dst, data = item
                for fn in self.rewriters:
                    new = fn(src, dst, data)
                    if new is not None:
                        data = new
                        item = ("pkt", src, dst, data)
                self.packets.append((sim.now, src, dst, data))
                if any(fn(src, dst, data) for fn in self.droppers):
                    return
            push(t, item)

        sim._push = tapped  # type: ignore[method-assign]

    def drop(self, pred: Callable[[str, str, bytes], bool]) -> Callable:
        self.droppers.append(pred)
        return pred

    def rewrite(self, fn: Callable[[str, str, bytes], bytes | None]) -> Callable:
        self.rewriters.append(fn)
        return fn

    def decoded(self, since: float = 0.0) -> list[tuple[str, str, list, bytes]]:
        """(src, dst, packet as decoded by cohort.stack.wire, raw) for every frame (batches split)."""
        out = []
        for t, src, dst, data in self.packets:
            if t < since:
                continue
            pkt = wire.decode(data)
            if pkt is not None:
                out.append((src, dst, pkt, data))
        return out

    def in_view(self, view: View, since: float = 0.0) -> list[tuple[str, str, list, bytes]]:
        return [x for x in self.decoded(since) if x[2][0] != wire.OOB and x[2][1] == view.tag]

    def oob(self, since: float = 0.0) -> list[tuple[str, str, list, bytes]]:
        return [x for x in self.decoded(since) if x[2][0] == wire.OOB]


def unsealed(pkt: list) -> list | None:
    """The body of a sealed out-of-band message (sealing authenticates; it does not hide)."""
    env = pkt[2]
    if type(env) is list and env and env[0] == "sealed":
        return msgpack.unpackb(env[1], raw=False)
    return None


def inject(sim: Sim, src: str | None, dst: str, data: bytes) -> None:
    """A packet arrives at `dst` claiming to come from `src` (UDP source addresses are forgeable)."""
    sim.eps[dst].receive(src, data, sim.now)
    sim._flush(dst)


def add_rogue(
    sim: Sim,
    addr: str,
    stack: str = "secure",
    secret: bytes | None = WRONG,
    seeds: Iterable[str] | None = None,
    **extra: dict,
) -> Endpoint:
    """A process that is not a member tries to join (its own stack, secret and seeds)."""
    p: dict[str, dict] = {k: dict(v) for k, v in SIM_PARAMS.items()}
    if secret is not None:
        p["auth"] = {"secret": secret}
    for k, v in extra.items():
        p.setdefault(k, {}).update(v)
    names = set(compose(stack).names)
    spec = compose(stack, {k: v for k, v in p.items() if k in names})
    ep = Endpoint(
        addr,
        spec,
        seeds=tuple(seeds) if seeds is not None else tuple(sim.seeds),
        seed=7,
        now=sim.now,
        strict=True,
    )
    ep.seen = []  # type: ignore[attr-defined]  # its application events (the simulator drops them)
    take = ep.take_events

    def take_events() -> list:
        events = take()
        ep.seen.extend(events)  # type: ignore[attr-defined]
        return events

    ep.take_events = take_events  # type: ignore[method-assign]
    sim.eps[addr] = ep
    sim.delivered[addr] = []
    sim._flush(addr)
    return ep


def attacker_reader(view: View, ring: Any, me: str) -> Callable[[list], bytes | None]:
    """An encrypt layer for `view`, receiving as `me`, holding `ring` (maybe a stolen or stale
    keyring): feed it a decoded packet, get the payload back if it opens."""
    ctx = RecordingContext(me)
    layer = Encrypt(ctx, dataclasses.replace(view, keys=ring), EncParams())

    def read(pkt: list) -> bytes | None:
        kind, _, rank, hdrs, payload = pkt
        cls = {wire.CAST: Deliver, wire.SEND: DeliverSend}.get(kind, ControlIn)
        ctx.ups.clear()
        layer.up(cls(rank, payload, [list(h) for h in hdrs]))
        return ctx.ups[-1].payload if ctx.ups else None

    return read


def attacker_writer(view: View, ring: Any, me: str, seq: int = 10**6) -> Callable[[bytes], bytes]:
    """An encrypt layer for `view` sending as member `me` under `ring`: a cast's wire bytes
    (sequence numbers from `seq`, above what the member really sent, so no replay check hides
    the authentication failure)."""
    from cohort.stack.events import Cast

    ctx = RecordingContext(me)
    layer = Encrypt(ctx, dataclasses.replace(view, keys=ring), EncParams())
    layer.seq = seq

    def write(payload: bytes) -> bytes:
        ctx.downs.clear()
        layer.down(Cast(payload, [None]))
        ev = ctx.downs[-1]
        return wire.encode(wire.CAST, view.tag, view.rank(me), ev.hdrs, ev.payload)

    return write


class KeyLog:
    """Every view each member installs, with the key it holds for it: (member, vid, key)."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.rows: list[tuple[str, tuple, bytes]] = []
        for addr in list(sim.eps):
            self.watch(addr)
            ep = sim.eps[addr]
            if ep.view.keys is not None and ep.view.primary:
                self.rows.append((addr, ep.view.vid, ep.view.keys.key))

    def watch(self, addr: str) -> None:
        ep = self.sim.eps[addr]
        take = ep.take_events

        def take_events() -> list:
            events = take()
            for ev in events:
                if type(ev) is ViewEv and ev.view.keys is not None and ev.view.n > 1:
                    self.rows.append((addr, ev.view.vid, ev.view.keys.key))
            return events

        ep.take_events = take_events  # type: ignore[method-assign]

    def keys_by_view(self) -> dict[tuple, set[bytes]]:
        out: dict[tuple, set[bytes]] = {}
        for _, vid, key in self.rows:
            out.setdefault(vid, set()).add(key)
        return out

    def assert_consistent_and_independent(self) -> None:
        """One key per view, held by every member that installed it; no key in two views."""
        by_view = self.keys_by_view()
        split = {vid: len(keys) for vid, keys in by_view.items() if len(keys) > 1}
        assert not split, f"members of one view hold different keys: {split}"
        keys = [next(iter(k)) for k in by_view.values()]
        assert len(set(keys)) == len(keys), "a key was used in two views"


def counters(ep: Endpoint, prefix: str = "") -> dict[str, int]:
    return {k: v for k, v in ep.counters.items() if k.startswith(prefix) and v}
