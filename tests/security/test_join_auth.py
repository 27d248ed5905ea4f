"""Join authentication (S1, S2, S14, S16): who may join, who may install a view, and no downgrade.

Deterministic: a secure group in the simulator, rogues as extra endpoints with their own stack and
secret, attackers as a tap on the simulated wire. The members' traces are checked at the end.
"""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from cohort.stack import wire
from cohort.stack.compose import StackConfigError, compose
from cohort.stack.events import Oob, Refused
from cohort.stack.layer import RecordingContext
from cohort.stack.layers import auth
from cohort.stack.layers.auth import Auth
from cohort.stack.layers.gms_wire import OOB_INSTALL, OOB_JOIN, view_to_wire
from cohort.stack.layers.keyring import derive, mac
from cohort.stack.view import View, joining_view
from seckit import (
    SECRET,
    WRONG,
    Tap,
    add_rogue,
    cast_all,
    counters,
    delivered_everywhere,
    finish,
    inject,
    secure_sim,
    unsealed,
)

MEMBERS = ["m0", "m1", "m2"]


def refusals(ep) -> list[str]:
    return [ev.reason for ev in ep.seen if type(ev) is Refused]


def no_key_material_to(tap: Tap, addr: str) -> None:
    """Nothing a member sent to `addr` carries a key grant or an in-view packet."""
    for src, dst, pkt, _ in tap.decoded():
        if dst != addr or src == addr:
            continue
        assert pkt[0] == wire.OOB, f"{src} sent an in-view packet to the rogue"
        body = unsealed(pkt)
        assert body is None, f"{src} sent a sealed {body[0]} to the rogue"
        assert pkt[2][0] in ("challenge", "refused"), pkt[2][0]


# --- S1: unauthenticated joins ---------------------------------------------------------------------


def test_S1_joiner_with_a_wrong_secret_is_refused_and_gets_no_key_material():
    sim = secure_sim(1)
    tap = Tap(sim)
    before = {m: sim.eps[m].view for m in MEMBERS}
    rogue = add_rogue(sim, "rogue", secret=WRONG)
    sim.run(sim.now + 1.0)
    reasons = refusals(rogue)
    assert len(reasons) == 1 and "another group secret" in reasons[0], reasons
    assert not rogue.view.primary and rogue.view.members == ("rogue",)
    assert {m: sim.eps[m].view for m in MEMBERS} == before  # members' views did not change
    no_key_material_to(tap, "rogue")
    assert counters(rogue, "auth.bad_challenge")  # it saw the members' proofs fail
    finish(sim, MEMBERS)


def test_S1_joiner_without_a_secret_plain_stack_is_refused_with_a_named_reason():
    sim = secure_sim(2)
    tap = Tap(sim)
    before = {m: sim.eps[m].view for m in MEMBERS}
    rogue = add_rogue(sim, "rogue", stack="total", secret=None)
    sim.run(sim.now + 1.0)
    reasons = refusals(rogue)
    assert reasons and "only authenticated members" in reasons[0]
    assert {m: sim.eps[m].view for m in MEMBERS} == before
    assert (
        sum(
            counters(sim.eps[m], "auth.unauthenticated").get("auth.unauthenticated", 0)
            for m in MEMBERS
        )
        > 0
    )
    no_key_material_to(tap, "rogue")
    finish(sim, MEMBERS)


def test_S1_forged_join_without_a_challenge_or_with_a_bad_mac_is_dropped():
    sim = secure_sim(3)
    m0 = sim.eps["m0"]
    m0.counters.clear()
    before = {m: sim.eps[m].view for m in MEMBERS}
    join = [OOB_JOIN, "rogue", 0, [0, ""], [], "rogue"]
    inject(sim, "rogue", "m0", wire.encode_oob("rogue", join))  # plain join
    # an AUTH for a challenge never issued, and one with a MAC under the wrong secret
    fake = [b"n" * 16, b"c" * 16, b"p" * 32, msgpack.packb(join), b"t" * 32]
    inject(sim, "rogue", "m0", wire.encode_oob("rogue", ["auth", *fake]))
    inject(sim, "rogue", "m0", wire.encode_oob("rogue", ["hello", b"n" * 16, "x"]))  # challenged
    sim.run(sim.now + 0.05)
    nc = m0._layers[1].challenges["rogue"][1]
    tag = mac(derive(WRONG, "").join, "auth", "", "rogue", "m0", b"n" * 16, nc, b"p" * 32, "x", b"")
    inject(
        sim, "rogue", "m0", wire.encode_oob("rogue", ["auth", b"n" * 16, nc, b"p" * 32, b"", tag])
    )
    c = counters(m0, "auth.")
    assert c["auth.unauthenticated"] >= 1 and c["auth.stale_join"] == 1 and c["auth.bad_join"] == 1
    sim.run(sim.now + 0.5)
    assert {m: sim.eps[m].view for m in MEMBERS} == before
    finish(sim, MEMBERS)


def test_S1_the_secret_never_appears_on_the_wire():
    sim = secure_sim(4, form="join")
    tap = Tap(sim)
    add_rogue(sim, "rogue", secret=WRONG)
    sim.join("m3")
    cast_all(sim, ["m0", "m1"], 5, "x")
    sim.run(sim.now + 1.0)
    sec = derive(SECRET, "")
    for _, _, _, data in tap.packets:
        for k in (SECRET, sec.join, sec.oob, sec.wrap, sec.boot):
            assert k not in data
    finish(sim, [*MEMBERS, "m3"])


# --- S2: rogue views ---------------------------------------------------------------------------------


def test_S2_forged_install_making_a_rogue_coordinator_is_ignored():
    sim = secure_sim(5)
    tap = Tap(sim)
    cast_all(sim, MEMBERS, 3, "before")
    sim.run(sim.now + 0.3)
    before = {m: sim.eps[m].view for m in MEMBERS}
    v = before["m0"]
    rogue_view = View(
        (v.ltime + 5, "rogue"),
        ("rogue", *MEMBERS),
        True,
        ("rogue", *MEMBERS),
        (v.ltime + 5, "rogue"),
        v.vid,
    )
    body = [OOB_INSTALL, view_to_wire(rogue_view), ["rogue"], [v.ltime + 5, "rogue"]]
    wrong = derive(WRONG, "")
    for m in MEMBERS:
        inject(sim, "rogue", m, wire.encode_oob("rogue", body))  # plain
        data = msgpack.packb([*body, [b"\0" * 32] * 4, None])
        sealed = ["sealed", data, mac(wrong.oob, "sealed", "", "rogue", m, data)]
        inject(sim, "rogue", m, wire.encode_oob("rogue", sealed))  # sealed with a wrong secret
        inject(sim, "m1", m, wire.encode_oob("m1", sealed))  # ...and claiming to be a member
    # a genuine install of an earlier view, captured and replayed
    old = [x for x in tap.oob() if unsealed(x[2]) and unsealed(x[2])[0] == OOB_INSTALL]
    for src, dst, _, raw in old:
        inject(sim, src, dst, raw)
    sim.run(sim.now + 0.5)
    assert {m: sim.eps[m].view for m in MEMBERS} == before
    for m in MEMBERS:
        c = counters(sim.eps[m], "auth.")
        assert c.get("auth.unauthenticated", 0) >= 1 and c.get("auth.bad_mac", 0) >= 2, c
    finish(sim, MEMBERS)


# --- S14: man in the middle ----------------------------------------------------------------------------


def test_S14_a_contact_that_cannot_prove_the_secret_is_detected_by_the_joiner():
    """The joiner's only contact is an impostor (no secret): it answers the join request; the
    joiner rejects its challenge, sends it nothing authenticated, and gives up with a reason."""
    sim = secure_sim(6)
    tap = Tap(sim)
    mitm = add_rogue(sim, "mitm", secret=WRONG, seeds=["mitm"])  # forms its own 'group'
    sim.run(sim.now + 0.3)
    joiner = add_rogue(sim, "j", secret=SECRET, seeds=["mitm"])
    sim.run(sim.now + 1.0)
    assert refusals(joiner) and counters(joiner, "auth.bad_challenge")
    assert not any(s == "j" and d == "mitm" and p[2][0] == "auth" for s, d, p, _ in tap.oob())
    assert joiner.view.members == ("j",) and mitm.view.members == ("mitm",)
    finish(sim, MEMBERS)


def test_S14_tampering_with_the_join_exchange_or_the_install_is_detected():
    """An on-path attacker without the secret rewrites the joiner's key (to get the view key
    wrapped for itself), the contact's nonce, or the install's grant: every change is caught."""
    sim = secure_sim(7)
    tap = Tap(sim)
    evil_pub = b"\x09" * 32
    changed = {"auth": 0, "challenge": 0, "install": 0}

    def tamper(src: str, dst: str, data: bytes) -> bytes | None:
        pkt = wire.decode(data)
        if pkt is None or pkt[0] != wire.OOB or "m3" not in (src, dst):
            return None
        env = pkt[2]
        if env[0] == "auth" and changed["auth"] < 3:
            changed["auth"] += 1
            env[3] = evil_pub
        elif env[0] == "challenge" and changed["challenge"] < 3:
            changed["challenge"] += 1
            env[2] = bytes(16)
        elif unsealed(pkt) and unsealed(pkt)[0] == OOB_INSTALL and changed["install"] < 3:
            changed["install"] += 1
            body = unsealed(pkt)
            body[4] = [evil_pub] * len(body[4])
            env[1] = msgpack.packb(body)
        else:
            return None
        return wire.encode_oob(pkt[1], env)

    tap.rewrite(tamper)
    sim.join("m3")
    assert sim.run_until(lambda: sim.converged([*MEMBERS, "m3"]), within=5.0)
    assert changed["auth"] == 3 and changed["challenge"] == 3 and changed["install"] >= 1
    got = {k: v for m in [*MEMBERS, "m3"] for k, v in counters(sim.eps[m], "auth.").items()}
    assert got.get("auth.bad_join", 0) >= 1 and got.get("auth.bad_challenge", 0) >= 1
    assert got.get("auth.bad_mac", 0) >= 1
    for m in [*MEMBERS, "m3"]:  # the attacker's key is in no view: nothing was wrapped for it
        assert evil_pub not in sim.eps[m].view.keys.pubs.values()
    payloads = cast_all(sim, [*MEMBERS, "m3"], 3, "after")
    assert sim.run_until(lambda: delivered_everywhere(sim, [*MEMBERS, "m3"], payloads), 3.0)
    finish(sim, [*MEMBERS, "m3"])


def test_S14_a_captured_join_cannot_be_replayed():
    sim = secure_sim(8)
    tap = Tap(sim)
    sim.join("m3")
    assert sim.run_until(lambda: sim.converged([*MEMBERS, "m3"]), within=5.0)
    auths = [x for x in tap.oob() if x[2][2][0] == "auth"]
    assert auths
    sim.crash("m3")
    finish(sim, MEMBERS)
    before = sim.eps["m0"].view
    for src, dst, _, raw in auths:
        inject(sim, src, dst, raw)
    sim.run(sim.now + 0.5)
    assert sim.eps["m0"].view == before
    assert sum(sim.eps[m].counters["auth.stale_join"] for m in MEMBERS) >= len(auths)


# --- S16: no downgrade ---------------------------------------------------------------------------------


def test_S16_compose_refuses_encryption_without_an_authenticated_key_exchange():
    base = "top:frag:sequencer:flow:flush:gms:suspect:stable:pt2pt:nak"
    with pytest.raises(StackConfigError, match=r"add one of: auth below 'encrypt'"):
        compose(f"{base}:encrypt:bottom")
    with pytest.raises(StackConfigError, match="'auth' without 'encrypt'"):
        compose(f"{base}:auth:bottom")
    with pytest.raises(StackConfigError, match="right above 'auth'"):
        compose("top:frag:sequencer:flow:flush:gms:suspect:stable:pt2pt:encrypt:nak:auth:bottom")
    with pytest.raises(StackConfigError, match="requires 'views' above it"):
        compose("top:nak:encrypt:auth:bottom")
    with pytest.raises(StackConfigError, match="needs the group secret"):
        compose("secure", {})
    with pytest.raises(StackConfigError, match="at least 16"):
        compose("secure", {"auth": {"secret": b"short"}})
    assert compose("secure").names[:3] == ("bottom", "auth", "encrypt")  # shape-only check


@pytest.mark.parametrize(
    "stack,extra",
    [
        ("secure", {"encrypt": {"confidential": False}}),
        ("secure", {"encrypt": {"cipher": "chacha20-poly1305"}}),
        ("secure-batch", {}),
    ],
)
def test_S16_a_joiner_running_another_protection_suite_is_refused(stack, extra):
    sim = secure_sim(9)
    before = {m: sim.eps[m].view for m in MEMBERS}
    rogue = add_rogue(sim, "weak", stack=stack, secret=SECRET, **extra)
    sim.run(sim.now + 1.0)
    reasons = refusals(rogue)
    assert reasons and "suite" in reasons[0], reasons
    assert {m: sim.eps[m].view for m in MEMBERS} == before
    finish(sim, MEMBERS)


# --- the layer alone ---------------------------------------------------------------------------------


def _auth(me: str, view: View, secret: bytes = SECRET) -> tuple[Auth, RecordingContext]:
    ctx = RecordingContext(me)
    return Auth(ctx, view, auth.Params(secret=secret, suite="s")), ctx


def test_challenge_response_alone_is_mutual_and_single_use():
    group = View((1, "c"), ("c",), True, ("c",), (1, "c"))
    contact, cctx = _auth("c", group)
    joiner, jctx = _auth("j", joining_view("j", ("c",)))
    jctx.take()
    cctx.take()
    join = [OOB_JOIN, "j", 0, [0, ""], ["c"], "j"]
    joiner.down(Oob("c", join))
    (hello,) = jctx.take()[1]
    assert hello.msg[0] == "hello" and SECRET not in msgpack.packb(hello.msg)
    contact.up(Oob("j", hello.msg))
    (challenge,) = cctx.take()[1]
    joiner.up(Oob("c", challenge.msg))
    (answer,) = jctx.take()[1]
    assert answer.msg[0] == "auth" and answer.msg[3] == joiner.ring.pub
    contact.up(Oob("j", answer.msg))
    ups, _ = cctx.take()
    assert ups == [Oob("j", [*join, joiner.ring.pub])]
    contact.up(Oob("j", answer.msg))  # the same answer again: its challenge is spent
    assert cctx.take() == ([], []) and cctx.counters["auth.stale_join"] == 1
    forged = list(challenge.msg)
    forged[4] = bytes(32)  # a challenge whose MAC does not verify
    joiner.down(Oob("c", join))
    hello2 = jctx.take()[1][0]
    forged[1] = hello2.msg[1]
    joiner.up(Oob("c", forged))
    assert jctx.take() == ([], []) and jctx.counters["auth.bad_challenge"] == 1


def test_a_grant_opens_only_for_its_recipient():
    v = View((2, "a"), ("a", "b", "c"), True, ("a", "b", "c"), (2, "a"))
    a, actx = _auth("a", joining_view("a"))
    b, bctx = _auth("b", joining_view("b"))
    c, cctx = _auth("c", joining_view("c"))
    pubs = [a.ring.pub, b.ring.pub, c.ring.pub]
    key = bytes(range(32))
    msg = [OOB_INSTALL, view_to_wire(v), ["b", "c"], [2, "a"], pubs, key]
    actx.take()
    a.down(Oob("b", msg))
    (out,) = actx.take()[1]
    assert key not in msgpack.packb(out.msg)
    bctx.take()
    b.up(Oob("a", out.msg))
    (up,) = bctx.take()[0]
    assert up.msg[5].key == key and up.msg[5].pubs["b"] == b.ring.pub
    cctx.take()
    c.up(Oob("a", out.msg))  # sealed for b, and the grant inside is b's: c gets nothing
    assert cctx.take() == ([], []) and cctx.counters["auth.bad_mac"] == 1
    view_b = dataclasses.replace(joining_view("b"))
    b2, b2ctx = _auth("b", view_b)  # b restarted: a new incarnation with a new key pair
    b2ctx.take()
    b2.up(Oob("a", out.msg))
    assert b2ctx.take() == ([], []) and b2ctx.counters["auth.not_for_me"] == 1
