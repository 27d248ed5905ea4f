"""Fuzzing a live member of a secure group (S7 at scale): random and mutated packets, no crash,
every packet accounted for.

The corpus is the real traffic of a group that formed by joins, cast, admitted and lost a member
(in-view packets of several views, joins, challenges, sealed installs). Each fuzzed packet is a
corpus frame with bits flipped, truncated, spliced or with one decoded field replaced by a random
value, or random bytes, or a random msgpack object, or an exact replay. It goes into one member
(`Endpoint.receive`, strict: any exception fails the test) claiming to come from a member, a
stranger or an unknown source.

Accounting: a packet is either dropped with a counter (wire, bottom, encrypt, auth, gms), held as
a possible packet of a future view (the runtime's bounded buffer), routed as a packet of the
previous view (answered by a relay of the current install), or an authentic out-of-band message
replayed unchanged (answered idempotently), or an authentic packet that was addressed to another
member, replayed unchanged (new to the target, so taken once). Anything else is a failure.

`make test` runs 200,000 packets into a member and 50,000 into a joiner; `make fuzz` runs
COHORT_FUZZ=5000000 (and more seeds with COHORT_FUZZ_SEED).
"""

from __future__ import annotations

import os
import random
import time

import msgpack
from cohort.stack import wire
from seckit import (
    SECRET,
    Tap,
    add_rogue,
    cast_all,
    delivered_everywhere,
    finish,
    secure_sim,
    settled,
)

N = int(os.environ.get("COHORT_FUZZ", "200000"))
SEED = int(os.environ.get("COHORT_FUZZ_SEED", "1"))
MEMBERS = ["m0", "m1", "m2"]


def corpus_group():
    sim = secure_sim(31, n=3)
    tap = Tap(sim)
    sim.join("m3")
    assert sim.run_until(lambda: settled(sim, [*MEMBERS, "m3"]), within=5.0)
    cast_all(sim, [*MEMBERS, "m3"], 10, "c")
    sim.run(sim.now + 0.3)
    sim.leave("m3")
    assert sim.run_until(lambda: settled(sim, MEMBERS), within=5.0)
    for m in MEMBERS:
        sim.eps[m].send("m1" if m != "m1" else "m2", b"unicast")
        sim._flush(m)
    payloads = cast_all(sim, MEMBERS, 10, "d")
    sim.run(sim.now + 0.5)
    assert delivered_everywhere(sim, MEMBERS, payloads)
    frames = [(src, data, dst) for _, src, dst, data in tap.packets]
    return sim, frames


def random_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if r < 0.25:
        return rng.choice(
            [0, 1, -1, 2**31, 2**32 + 5, 2**63 - 1, 2**64 - 1, -(2**63), rng.randrange(-999, 999)]
        )
    if r < 0.4:
        return rng.choice(
            [
                "",
                "m0",
                "m1",
                "stranger",
                "sealed",
                "hello",
                "auth",
                "challenge",
                "install",
                "join",
                "x" * rng.randrange(300),
            ]
        )
    if r < 0.55:
        return rng.randbytes(rng.choice([0, 1, 12, 16, 32, 33, rng.randrange(200)]))
    if r < 0.62:
        return rng.choice([None, True, False, 0.5, float("nan"), -1e300])
    if r < 0.9 and depth < 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(7))]
    if depth < 3:
        return {random_value(rng, 3): random_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return rng.randrange(10)


def mutate_field(rng: random.Random, obj):
    """Replace one element inside a decoded packet by a random value: mostly deep inside (our
    header's fields, the sealed envelope's parts), so that the packet keeps its shape and reaches
    the cryptographic checks; sometimes anywhere."""
    if type(obj) is list and len(obj) == 5 and type(obj[3]) is list and rng.random() < 0.7:
        if obj[3] and type(obj[3][0]) is list and obj[3][0] and rng.random() < 0.6:
            h = obj[3][0]
            i = rng.randrange(len(h))
            h[i] = (
                rng.choice([h[i] + rng.choice([-1, 1, 2, 1000]), random_value(rng)])
                if type(h[i]) is int
                else random_value(rng)
            )
        else:  # damage the ciphertext, under a sequence number the member has not seen yet
            obj[4] = bytes(b ^ rng.choice([0, 0, 0, 1 << rng.randrange(8)]) for b in obj[4])
            if obj[3] and type(obj[3][0]) is list and len(obj[3][0]) == 3:
                obj[3][0][1] = 10**6 + rng.randrange(10**6)
        return obj
    if (
        type(obj) is list
        and len(obj) == 3
        and type(obj[2]) is list
        and obj[2]
        and rng.random() < 0.7
    ):
        env = obj[2]
        i = rng.randrange(len(env))
        env[i] = (
            random_value(rng)
            if rng.random() < 0.5 or type(env[i]) is not bytes
            else (env[i][:-1] + bytes([env[i][-1] ^ 1]) if env[i] else b"\0")
        )
        return obj
    node = obj
    for _ in range(rng.randrange(1, 4)):
        if type(node) is not list or not node:
            break
        i = rng.randrange(len(node))
        if type(node[i]) is list and node[i] and rng.random() < 0.5:
            node = node[i]
            continue
        node[i] = random_value(rng)
        return obj
    if type(node) is list and node:
        node[rng.randrange(len(node))] = random_value(rng)
    return obj


def fuzzed(rng: random.Random, pools: list[list[bytes]]) -> tuple[str, bytes]:
    """A fuzzed packet from a frame of a pool chosen at random (current view, out-of-band, any)."""
    r = rng.random()
    frames = rng.choice(pools)
    f = rng.choice(frames)
    if r < 0.30:
        b = bytearray(f)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return "bitflip", bytes(b)
    if r < 0.42:
        cut = f[: rng.randrange(len(f))]
        return "truncate", cut + (rng.randbytes(rng.randrange(4)) if rng.random() < 0.3 else b"")
    if r < 0.70:
        obj = mutate_field(rng, msgpack.unpackb(f, raw=False, use_list=True))
        try:
            return "field", msgpack.packb(obj, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return "field", f
    if r < 0.78:
        return "random", rng.randbytes(rng.randrange(300))
    if r < 0.86:
        try:
            return "msgpack", msgpack.packb(random_value(rng), use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return "msgpack", b"\xc0"
    if r < 0.93:
        g = rng.choice(frames)
        return "splice", f[: rng.randrange(len(f))] + g[rng.randrange(len(g)) :]
    return "replay", f


class Fuzzer:
    """Feeds fuzzed packets into one endpoint and accounts for each (see the module docstring)."""

    def __init__(self, sim, target, sent: list[tuple[str, bytes, str]], seed: int) -> None:
        self.sim, self.target = sim, target
        self.sender = {data: src for src, data, _dst in sent}
        #: authentic packets sent to other members: an exact replay reaches the target as a
        #: packet it never had, and is taken once (then `encrypt.replay` counts copies)
        self.elsewhere = {data for _src, data, dst in sent if dst != target.addr}
        frames = list(self.sender)
        self.oob = [f for f in frames if wire.decode(f)[0] == wire.OOB]
        tag = target.view.tag
        self.current = [
            f for f in frames if wire.decode(f)[0] != wire.OOB and wire.decode(f)[1] == tag
        ]
        self.pools = (
            [self.current, self.current, self.oob, frames] if self.current else [self.oob, frames]
        )
        self.rng = random.Random(seed)
        self.sources = [*MEMBERS, "m3", "stranger", None]
        self.kinds: dict[str, int] = {}
        self.outcome = {"counted": 0, "held": 0, "old-view": 0, "authentic-replay": 0}
        self.unaccounted: list = []
        self.crashes: list = []
        self.took = 0.0

    def run(self, n: int, tweak=None) -> None:
        rng, target = self.rng, self.target
        prev_tag = target.prev_view.tag if target.prev_view else None
        authentic = set(self.oob)
        t0 = time.perf_counter()
        for i in range(n):
            kind, data = fuzzed(rng, self.pools)
            # mostly from the address the frame came from (a spoofed source, or the attacker
            # on the path): that gets packets past the source check, to the cryptographic ones
            src = self.sender.get(data) if rng.random() < 0.3 else rng.choice(self.sources)
            if rng.random() < 0.5 and (p := wire.decode(data)) is not None and p[0] != wire.OOB:
                r = p[2]
                members = target.view.members
                src = members[r] if type(r) is int and 0 <= r < len(members) else src
            if tweak is not None:
                kind, src, data = tweak(rng, kind, src, data)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            counted, held = sum(target.counters.values()), len(target._future)
            try:
                target.receive(src, data, self.sim.now)
            except Exception as e:  # the endpoint is strict: a layer that raises is a crash
                self.crashes.append((kind, src, data, repr(e)))
                continue
            if sum(target.counters.values()) > counted:
                self.outcome["counted"] += 1
            elif len(target._future) > held:
                self.outcome["held"] += 1
            elif (p := wire.decode(data)) is not None and p[0] != wire.OOB and p[1] == prev_tag:
                self.outcome["old-view"] += 1
            elif data in authentic or (kind == "replay" and data in self.elsewhere):
                self.outcome["authentic-replay"] += 1
            else:
                self.unaccounted.append((kind, src, data))
            if i % 500 == 0:
                target.take_packets()  # answers to strangers and relays: not part of the test
        self.took += time.perf_counter() - t0
        target.take_packets()

    def check(self, n: int) -> None:
        t = self.target
        print(
            f"\nfuzz {t.addr}: {n} packets in {self.took:.1f}s ({n / self.took:,.0f}/s); {self.kinds}"
        )
        print(f"outcomes {self.outcome}; counters {dict(sorted(t.counters.items()))}")
        assert not self.crashes, f"{len(self.crashes)} crashes, first: {self.crashes[0]}"
        assert not self.unaccounted, (
            f"{len(self.unaccounted)} unaccounted, first: {self.unaccounted[:3]}"
        )
        assert sum(self.outcome.values()) == n


def test_fuzz_random_and_mutated_packets_into_a_live_member():
    sim, sent = corpus_group()
    target = sim.eps["m1"]
    view0, delivered0 = target.view, len(sim.delivered["m1"])
    fz = Fuzzer(sim, target, sent, SEED)
    assert len(fz.oob) > 10 and len(fz.current) > 100
    fz.run(N)
    fz.check(N)
    assert target.view == view0 and len(sim.delivered["m1"]) == delivered0  # nothing got in
    payloads = cast_all(sim, MEMBERS, 5, "after-fuzz")  # and the member still works
    assert sim.run_until(lambda: delivered_everywhere(sim, MEMBERS, payloads), within=3.0)
    finish(sim, MEMBERS)


def test_fuzz_out_of_band_packets_into_a_joiner():
    """A process in the middle of joining (challenges outstanding) receives mutated challenges,
    forged installs and garbage: nothing crashes, nothing installs it anywhere."""
    sim, sent = corpus_group()
    tap = Tap(sim)
    tap.drop(lambda s, d, _: "j" in (s, d))  # it keeps asking, and never hears a real answer
    joiner = add_rogue(sim, "j", secret=SECRET, seeds=MEMBERS)
    sim.run(sim.now + 0.3)
    auth = joiner._layers[1]
    assert auth.pending

    def rebind(rng: random.Random, kind: str, src, data: bytes):
        """Aim mutated challenges at the joiner's live nonces, so they reach the MAC check."""
        p = wire.decode(data)
        if p is not None and p[0] == wire.OOB and type(p[2]) is list and p[2][:1] == ["challenge"]:
            peer = rng.choice(sorted(auth.pending))
            if len(p[2]) > 1 and rng.random() < 0.7:
                p[2][1] = auth.pending[peer][0]
                return kind + "+nonce", peer, wire.encode_oob(peer, p[2])
        return kind, src, data

    n = max(1, N // 4)
    fz = Fuzzer(sim, joiner, sent, SEED + 1)
    fz.pools = [fz.oob, fz.oob, fz.oob, list(fz.sender)]
    fz.run(n, rebind)
    fz.check(n)
    assert joiner.view.members == ("j",) and not joiner.view.primary
    assert joiner.counters["auth.bad_challenge"] > 0
    finish(sim, MEMBERS)
