"""Packet protection (S3-S8): rogue senders, eavesdroppers, replays, mutations, cross-view replays.

Each test captures real traffic of a secure group in the simulator with a tap, then plays the
attacker: reads it, replays it, changes it, forges it. Every rejected packet must be counted, none
delivered, and the members' traces must still satisfy every property (D1 integrity, D2 no
duplication, D3 no foreign delivery, V1 sending view).
"""

from __future__ import annotations

import dataclasses

import pytest
from cohort.stack import wire
from cohort.stack.events import Cast, Control, Deliver, Keys, Send
from cohort.stack.layer import RecordingContext
from cohort.stack.layers import encrypt
from cohort.stack.layers.encrypt import Encrypt
from cohort.stack.layers.keyring import new_ring
from cohort.stack.view import View
from seckit import (
    SECRET,
    Tap,
    add_rogue,
    attacker_writer,
    cast_all,
    counters,
    delivered_everywhere,
    finish,
    inject,
    secure_sim,
    unsealed,
)

MEMBERS = ["m0", "m1", "m2"]


def hold_back(sim, tap: Tap, src: str, dst: str, payload: bytes) -> bytes:
    """`src` casts `payload`; the attacker keeps its packet to `dst` from arriving (so its
    sequence number is unseen there) and returns it."""
    held: list[bytes] = []

    def hold(s: str, d: str, data: bytes) -> bool:
        p = wire.decode(data)
        if s == src and d == dst and p and p[0] == wire.CAST and not held:
            held.append(data)
            return True
        return False

    tap.drop(hold)
    sim.cast(src, payload)
    sim.run(sim.now + 0.002)
    tap.droppers.remove(hold)
    assert held
    return held[0]


# --- S3: rogue senders -------------------------------------------------------------------------------


def test_S3_rogue_plaintext_and_ciphertext_under_its_own_key_are_never_delivered():
    sim = secure_sim(11)
    v = sim.eps["m0"].view
    rogue = add_rogue(sim, "rogue")  # wrong secret: refused, but it knows the view from the wire
    evil = []
    for i, m in enumerate(MEMBERS):
        rank = v.rank(m)
        p = f"evil-plain-{i}".encode()
        evil.append(p)
        plain = wire.encode(wire.CAST, v.tag, (rank + 1) % 3, [[0, 1]], p)  # nak-like header
        inject(sim, "rogue", m, plain)  # from its own address: the rank is not its own
        inject(sim, v.members[(rank + 1) % 3], m, plain)  # with a forged source address
        # ciphertext under a key of its own, for this very view, sent as another member
        own = new_ring("", bytes(32), bytes(range(32)), {})
        sender = v.members[(rank + 1) % 3]
        q = f"evil-sealed-{i}".encode()
        evil.append(q)
        inject(sim, sender, m, attacker_writer(v, own, sender)(q))
        # ...and with the group's key id copied from a captured header (the tag still fails)
        data = wire.decode(attacker_writer(v, own, sender)(q + b"!"))
        data[3][0][0] = sim.eps[m]._layers[2].kid
        inject(sim, sender, m, wire.encode(*data))
    sim.run(sim.now + 0.3)
    for m in MEMBERS:
        c = counters(sim.eps[m])
        assert c["bottom.forged_src"] == 1 and c["encrypt.bad_header"] == 1
        assert c["encrypt.wrong_key"] == 1 and c["encrypt.bad_tag"] == 1
        assert not set(evil) & set(sim.delivered[m])
    assert not rogue.view.primary
    finish(sim, MEMBERS)


# --- S4: eavesdropper --------------------------------------------------------------------------------


def test_S4_an_eavesdropper_reads_neither_payloads_nor_headers_nor_keys():
    sim = secure_sim(12)
    tap = Tap(sim)
    sim.join("m3")  # a join on the wire too: its install carries the view key, wrapped
    secret_words = cast_all(sim, MEMBERS, 10, "TOPSECRET-PAYLOAD")
    sim.run(sim.now + 1.0)
    assert delivered_everywhere(sim, MEMBERS, secret_words)
    keys = {sim.eps[m].view.keys.key for m in MEMBERS}
    assert len(keys) == 1
    frames = tap.decoded()
    in_view = [p for _, _, p, _ in frames if p[0] != wire.OOB]
    assert len(in_view) > 100
    for _, _, _, raw in tap.decoded():
        assert b"TOPSECRET" not in raw
        for k in keys:
            assert k not in raw
    for p in in_view:  # one header only: ours, (key id, seq, dest); nothing of nak/gms/suspect
        assert len(p[3]) == 1 and len(p[3][0]) == 3 and all(type(x) is int for x in p[3][0])
    # the sealed out-of-band messages are authenticated, not secret, except the grants
    installs = [unsealed(p) for _, _, p, _ in frames if unsealed(p) and unsealed(p)[0] == "install"]
    assert installs and all(k not in str(b).encode() for b in installs for k in keys)
    finish(sim, [*MEMBERS, "m3"])


# --- S5, S6: replays -----------------------------------------------------------------------------------


def test_S5_an_exact_replay_is_dropped_and_counted():
    sim = secure_sim(13)
    tap = Tap(sim)
    v = sim.eps["m0"].view
    payloads = cast_all(sim, MEMBERS, 10, "once")
    sim.run(sim.now + 0.5)
    assert delivered_everywhere(sim, MEMBERS, payloads)
    frames = tap.in_view(v)
    before = {m: dict(sim.eps[m].counters) for m in MEMBERS}
    for src, dst, _, raw in frames:
        inject(sim, src, dst, raw)
        inject(sim, src, dst, raw)
    sim.run(sim.now + 0.3)
    for m in MEMBERS:
        c = sim.eps[m].counters
        n = sum(1 for _, d, _, _ in frames if d == m)
        assert c["encrypt.replay"] - before[m].get("encrypt.replay", 0) == 2 * n
        assert sorted(sim.delivered[m]) == sorted(set(sim.delivered[m]))  # no second delivery
    finish(sim, MEMBERS)


def test_S6_a_replay_with_any_header_field_changed_is_rejected():
    sim = secure_sim(14)
    tap = Tap(sim)
    v = sim.eps["m0"].view
    raw = hold_back(sim, tap, "m0", "m1", b"mut")
    pkt = wire.decode(raw)
    m1 = sim.eps["m1"]
    kid, seq, dest = pkt[3][0]
    hi = m1._layers[2].hi[v.rank("m0")]  # the held packet's seq is below, and unseen
    variants = {
        "encrypt.bad_tag": [
            # JGRP-2273: resent with the sequence number bumped past what m1 has seen
            [pkt[0], pkt[1], pkt[2], [[kid, hi + 1, dest]], pkt[4]],
            [pkt[0], pkt[1], pkt[2], [[kid, hi + 1000, dest]], pkt[4]],
            [wire.CONTROL, pkt[1], pkt[2], pkt[3], pkt[4]],  # another kind
        ],
        "encrypt.wrong_key": [[pkt[0], pkt[1], pkt[2], [[kid ^ 1, seq, dest]], pkt[4]]],
        "encrypt.misdirected": [[pkt[0], pkt[1], pkt[2], [[kid, seq, 1]], pkt[4]]],
    }
    before = dict(m1.counters)
    for counter, pkts in variants.items():
        for p in pkts:
            inject(sim, "m0", "m1", wire.encode(*p))
        assert m1.counters[counter] - before.get(counter, 0) == len(pkts), counter
    # another sender: m2's rank, from m2's address (the bottom layer checks the address);
    # rejected by the tag, or by m2's replay window if m2 already used that sequence number
    rejects = m1.counters["encrypt.bad_tag"] + m1.counters["encrypt.replay"]
    inject(sim, "m2", "m1", wire.encode(pkt[0], pkt[1], v.rank("m2"), pkt[3], pkt[4]))
    assert m1.counters["encrypt.bad_tag"] + m1.counters["encrypt.replay"] == rejects + 1
    # another view id: the tag of another view routes it out of this one; never delivered
    inject(sim, "m0", "m1", wire.encode(pkt[0], pkt[1] ^ 5, pkt[2], pkt[3], pkt[4]))
    assert b"mut" not in sim.delivered["m1"]
    inject(sim, "m0", "m1", raw)  # the untouched original is still good: nothing moved the window
    sim.run(sim.now + 0.3)
    assert sim.delivered["m1"].count(b"mut") == 1
    finish(sim, MEMBERS)


# --- S7: tampering -----------------------------------------------------------------------------------


def test_S7_every_bit_flip_and_truncation_is_rejected_before_any_state_change():
    """A cast m0 -> m1 is held back by the attacker; m1 receives every single-bit flip and every
    truncation of it first, then the original, which must still be accepted: the forgeries
    changed no state (replay window, delivery counts)."""
    sim = secure_sim(15)
    tap = Tap(sim)
    v = sim.eps["m0"].view
    original = hold_back(sim, tap, "m0", "m1", b"the-one")
    m1 = sim.eps["m1"]
    enc = m1._layers[2]
    window = (list(enc.hi), list(enc.mask))
    before = sum(m1.counters.values()) + len(m1._future)
    forgeries = [
        bytes(original[:i]) + bytes([original[i] ^ (1 << b)]) + original[i + 1 :]
        for i in range(len(original))
        for b in range(8)
    ]
    forgeries += [original[:n] for n in range(len(original))]
    for f in forgeries:
        n0 = sum(m1.counters.values()) + len(m1._future)
        m1.receive("m0", f, sim.now)
        assert sum(m1.counters.values()) + len(m1._future) > n0, f"not counted: {f!r}"
    assert sum(m1.counters.values()) + len(m1._future) - before >= len(forgeries)
    assert (list(enc.hi), list(enc.mask)) == window and b"the-one" not in sim.delivered["m1"]
    inject(sim, "m0", "m1", original)
    sim.run(sim.now + 0.3)
    assert sim.delivered["m1"].count(b"the-one") == 1
    assert v == sim.eps["m1"].view
    finish(sim, MEMBERS)


# --- S8: cross-view replay ---------------------------------------------------------------------------


def test_S8_a_packet_of_an_earlier_view_is_never_delivered_in_a_later_one():
    sim = secure_sim(16)
    tap = Tap(sim)
    v = sim.eps["m0"].view
    old = cast_all(sim, MEMBERS, 5, "old-view")
    sim.run(sim.now + 0.3)
    frames = tap.in_view(v)
    sim.join("m3")
    assert sim.run_until(lambda: sim.converged([*MEMBERS, "m3"]), within=5.0)
    w = sim.eps["m0"].view
    assert w.vid != v.vid
    counts = {m: len(sim.delivered[m]) for m in MEMBERS}
    for src, dst, p, raw in frames:
        inject(sim, src, dst, raw)  # as captured: routed as an old view's packet
        inject(sim, src, dst, wire.encode(p[0], w.tag, w.rank(src), p[3], p[4]))  # re-tagged
    sim.run(sim.now + 0.3)
    for m in MEMBERS:
        assert sim.delivered[m].count(old[0]) == 1
        assert len(sim.delivered[m]) == counts[m]
        assert sim.eps[m].counters["encrypt.wrong_key"] >= 1
    finish(sim, [*MEMBERS, "m3"])


# --- confidentiality off -----------------------------------------------------------------------------


def test_confidentiality_off_still_authenticates_every_packet():
    sim = secure_sim(17, encrypt={"confidential": False})
    tap = Tap(sim)
    v = sim.eps["m0"].view
    payloads = cast_all(sim, MEMBERS, 5, "visible")
    sim.run(sim.now + 0.5)
    assert delivered_everywhere(sim, MEMBERS, payloads)
    assert any(b"visible" in raw for _, _, _, raw in tap.in_view(v))  # readable by design
    raw = hold_back(sim, tap, "m1", "m2", b"visible-held")
    forged = raw.replace(b"visible", b"VISIBLE")
    before = sim.eps["m2"].counters["encrypt.bad_tag"]
    inject(sim, "m1", "m2", forged)
    assert sim.eps["m2"].counters["encrypt.bad_tag"] == before + 1
    inject(sim, "m1", "m2", raw)
    inject(sim, "m1", "m2", raw)  # and an exact replay
    assert sim.eps["m2"].counters["encrypt.replay"] >= 1
    sim.run(sim.now + 0.3)
    assert (
        sim.delivered["m2"].count(b"visible-held") == 1
        and b"VISIBLE-held" not in sim.delivered["m2"]
    )
    finish(sim, MEMBERS)


# --- the layer alone ---------------------------------------------------------------------------------

VIEW = View((3, "a"), ("a", "b", "c"), True, ("a", "b", "c"), (3, "a"))


def _pair(**params):
    ring = new_ring("g", bytes(32), bytes(range(32)), {})
    out = []
    for me in ("a", "b"):
        ctx = RecordingContext(me)
        out.append((Encrypt(ctx, VIEW, encrypt.Params(**params)), ctx))
        out[-1][0].up(Keys(ring, b"f" * 32))
        ctx.take()
    return out


@pytest.mark.parametrize("confidential", [True, False])
def test_layer_seals_every_kind_and_opens_each_exactly_once(confidential):
    (a, actx), (b, bctx) = _pair(confidential=confidential)
    a.down(Cast(b"c", [None, (0, 7)]))
    a.down(Send(1, b"s", [(1,)]))
    a.down(Control(None, b"k", [None]))
    a.down(Control(2, b"k2", []))
    downs = actx.take()[1]
    assert [d.hdrs[0][1:] for d in downs] == [(0, -1), (1, 1), (2, -1), (3, 2)]
    cast = Deliver(0, downs[0].payload, [list(downs[0].hdrs[0])])
    b.up(cast)
    (got,) = bctx.take()[0]
    assert got.payload == b"c" and got.hdrs == [None, [0, 7]]
    b.up(Deliver(0, downs[0].payload, [list(downs[0].hdrs[0])]))
    assert bctx.take() == ([], []) and bctx.counters["encrypt.replay"] == 1


def test_layer_replay_window_accepts_reordering_and_drops_what_is_too_old():
    (a, actx), (b, bctx) = _pair(window=64)
    for i in range(200):
        a.down(Cast(b"%d" % i, []))
    sealed = [Deliver(0, d.payload, [list(d.hdrs[0])]) for d in actx.take()[1]]
    # 60..99 in order, then 59..20 late and in reverse, then 10, then 70 again
    order = [*sealed[60:100], *reversed(sealed[20:60]), sealed[10], sealed[70]]
    for ev in order:
        b.up(dataclasses.replace(ev, hdrs=list(ev.hdrs)))
    got = [e.payload for e in bctx.take()[0]]
    # the window (64) holds 36..99 once 99 is in: 59..36 are accepted late, 35..20 and 10 not
    assert got == [b"%d" % i for i in [*range(60, 100), *range(59, 35, -1)]]
    assert bctx.counters["encrypt.too_old"] == 17 and bctx.counters["encrypt.replay"] == 1


def test_nothing_leaves_without_a_key():
    ctx = RecordingContext("a")
    layer = Encrypt(ctx, VIEW, encrypt.Params())
    layer.down(Cast(b"x", []))
    assert ctx.downs == [] and ctx.counters["encrypt.no_key"] == 1


def test_secret_is_not_a_default():
    assert SECRET  # the test secret is explicit; the layer has no default one
