"""Rekeying at every view change (S9-S13): forward and backward secrecy, key independence, and a
coordinator that crashes or leaves in the middle of a rekey.

The attacker here is a former or future member: it holds the keys it legitimately had (its old
keyring, the group secret) and everything on the wire, and tries to read or inject traffic of a
view it is not in.
"""

from __future__ import annotations

import pytest
from cohort.stack import wire
from cohort.stack.sim import ALL_FAULTS, run_scenario
from seckit import (
    KeyLog,
    Tap,
    attacker_reader,
    attacker_writer,
    cast_all,
    delivered_everywhere,
    finish,
    inject,
    secure_sim,
    settled,
    unsealed,
)

MEMBERS = ["m0", "m1", "m2"]


def readable(tap: Tap, view, ring, since: float = 0.0) -> tuple[int, int]:
    """(packets of `view` on the wire since `since`, how many `ring` opens), every packet read
    as its destination would."""
    frames = [x for x in tap.in_view(view, since) if view.rank(x[1]) >= 0]
    opened = sum(1 for _, dst, p, _ in frames if attacker_reader(view, ring, dst)(p) is not None)
    return len(frames), opened


# --- S9: forward secrecy -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave", "exclusion"])
def test_S9_a_member_that_left_cannot_read_or_inject_after_the_rekey(how):
    sim = secure_sim(21, n=4)
    log = KeyLog(sim)
    tap = Tap(sim)
    old = sim.eps["m3"].view  # m3's last view, with its keyring: what it keeps
    if how == "leave":
        sim.leave("m3")
    else:  # cut off and excluded, but alive and listening
        sim.partition(["m3"], MEMBERS)
    assert sim.run_until(lambda: settled(sim, MEMBERS), within=5.0)
    new = sim.eps["m0"].view
    assert "m3" not in new.members and new.keys.key != old.keys.key
    t0 = sim.now
    secret = cast_all(sim, MEMBERS, 10, "after-m3")
    sim.run(sim.now + 0.5)
    assert delivered_everywhere(sim, MEMBERS, secret)
    n, opened = readable(tap, new, old.keys, t0)
    assert n > 30 and opened == 0  # with its old keyring, even knowing the new view exactly
    assert readable(tap, new, new.keys, t0) == (n, n)  # (the members' keyring opens them all)
    # nothing m3 received after the view change carries a grant for it
    for _src, dst, p, _ in tap.oob():
        body = unsealed(p)
        if dst == "m3" and body and body[0] == "install" and "m3" not in body[1][2]:
            assert body[5] is None
    # and what it sends under its old key is rejected
    counts = {m: len(sim.delivered[m]) for m in MEMBERS}
    for m in MEMBERS:
        forged = attacker_writer(new, old.keys, "m0" if m != "m0" else "m1")(b"from-m3")
        inject(sim, "m0" if m != "m0" else "m1", m, forged)
        assert sim.eps[m].counters["encrypt.wrong_key"] >= 1
    sim.run(sim.now + 0.2)
    assert {m: len(sim.delivered[m]) for m in MEMBERS} == counts
    log.assert_consistent_and_independent()
    finish(sim, MEMBERS)


def test_S9_a_leaving_coordinator_does_not_choose_the_next_key():
    """The coordinator that leaves installs the view without itself; the key of that view is
    chosen by the view's first member (delegation), so the leaver never learns it."""
    sim = secure_sim(22, n=4)
    log = KeyLog(sim)
    tap = Tap(sim)
    old = sim.eps["m0"].view
    sim.leave("m0")
    rest = ["m1", "m2", "m3"]
    assert sim.run_until(lambda: settled(sim, rest), within=5.0)
    new = sim.eps["m1"].view
    assert "m0" not in new.members and new.keys.key != old.keys.key
    delegations = [p for s, _, p, _ in tap.oob() if s == "m0" and unsealed(p)]
    assert any(unsealed(p)[5] == "delegate" for p in delegations)
    assert all(
        not isinstance(unsealed(p)[5], list) for p in delegations if unsealed(p)[0] == "install"
    )
    t0 = sim.now
    cast_all(sim, rest, 5, "after-coord")
    sim.run(sim.now + 0.5)
    n, opened = readable(tap, new, old.keys, t0)
    assert n > 10 and opened == 0
    log.assert_consistent_and_independent()
    finish(sim, rest)


# --- S10: backward secrecy -----------------------------------------------------------------------------


def test_S10_a_joiner_cannot_read_what_was_sent_before_it_joined():
    sim = secure_sim(23)
    tap = Tap(sim)
    before = sim.eps["m0"].view
    secret = cast_all(sim, MEMBERS, 10, "before-j")
    sim.run(sim.now + 0.5)
    assert delivered_everywhere(sim, MEMBERS, secret)
    sim.join("m3")
    assert sim.run_until(lambda: settled(sim, [*MEMBERS, "m3"]), within=5.0)
    ring = sim.eps["m3"].view.keys
    assert ring.key != before.keys.key
    n, opened = readable(tap, before, ring)
    assert n > 30 and opened == 0
    assert not any(p in sim.delivered["m3"] for p in secret)
    finish(sim, [*MEMBERS, "m3"])


# --- S11: key independence -----------------------------------------------------------------------------


def test_S11_join_then_leave_never_brings_back_an_old_key():
    sim = secure_sim(24)
    log = KeyLog(sim)
    log.watch("m3") if "m3" in sim.eps else None
    k1 = sim.eps["m0"].view.keys.key
    sim.join("m3")
    log.watch("m3")
    assert sim.run_until(lambda: settled(sim, [*MEMBERS, "m3"]), within=5.0)
    k2 = sim.eps["m0"].view.keys.key
    sim.leave("m3")
    assert sim.run_until(lambda: settled(sim, MEMBERS), within=5.0)
    k3 = sim.eps["m0"].view.keys.key
    assert len({k1, k2, k3}) == 3  # same membership as at first, a key never seen before
    log.assert_consistent_and_independent()
    assert len(log.keys_by_view()) >= 3
    finish(sim, MEMBERS)


# --- S12: coordinator crash mid-rekey ------------------------------------------------------------------


def test_S12_coordinator_crash_mid_rekey_the_next_coordinator_issues_a_fresh_key():
    """m0 installs the view admitting m4 but its INSTALL reaches only m1 before it crashes: m1
    relays that view (with its key) to the others, the survivors exclude m0, and the view they
    end in has a key chosen by the new coordinator, which m0 never held."""
    sim = secure_sim(25, n=4)
    log = KeyLog(sim)
    tap = Tap(sim)
    m0_keys = {sim.eps["m0"].view.keys.key}

    def partial_install(src: str, dst: str, data: bytes) -> bool:
        p = wire.decode(data)
        body = unsealed(p) if p and p[0] == wire.OOB else None
        return src == "m0" and dst != "m1" and bool(body) and body[0] == "install"

    tap.drop(partial_install)
    old = sim.eps["m0"].view
    sim.join("m4")
    log.watch("m4")
    assert sim.run_until(lambda: sim.eps["m0"].view.vid != old.vid, within=5.0)
    m0_keys.add(sim.eps["m0"].view.keys.key)
    sim.crash("m0")
    tap.droppers.clear()
    survivors = ["m1", "m2", "m3", "m4"]
    assert sim.run_until(lambda: settled(sim, survivors), within=10.0), sim.views()
    final = sim.eps["m1"].view
    assert final.coord == "m1" and final.keys.key not in m0_keys
    payloads = cast_all(sim, survivors, 5, "after-crash")
    assert sim.run_until(lambda: delivered_everywhere(sim, survivors, payloads), within=3.0)
    log.assert_consistent_and_independent()
    finish(sim, survivors)


# --- S13: partition and merge --------------------------------------------------------------------------


def test_S13_a_healed_partition_rejoins_under_a_fresh_key_unknown_to_the_minority():
    sim = secure_sim(26, n=5)
    log = KeyLog(sim)
    tap = Tap(sim)
    minority, majority = ["m3", "m4"], ["m0", "m1", "m2"]
    stale = sim.eps["m3"].view.keys
    sim.partition(minority, majority)
    assert sim.run_until(lambda: settled(sim, majority), within=5.0)
    cut = sim.eps["m0"].view
    t0 = sim.now
    cast_all(sim, majority, 5, "while-cut")
    sim.run(sim.now + 0.5)
    assert readable(tap, cut, stale, t0)[1] == 0
    assert readable(tap, cut, sim.eps["m3"].view.keys, t0)[1] == 0
    sim.heal()
    everyone = [*majority, *minority]
    assert sim.run_until(lambda: settled(sim, everyone), within=10.0), sim.views()
    merged = sim.eps["m0"].view
    assert merged.keys.key not in {stale.key, cut.keys.key}
    log.assert_consistent_and_independent()
    finish(sim, everyone)


# --- random faults: every view has one key, held by all its members, used by no other view ---------


@pytest.mark.parametrize("seed", range(12))
def test_S11_S12_random_faults_keep_keys_consistent_and_independent(seed):
    logs: list[KeyLog] = []
    import cohort.stack.sim as simmod

    real = simmod.Sim.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        logs.append(KeyLog(self))
        join = self.join

        def joined(addr: str) -> None:
            join(addr)
            logs[-1].watch(addr)

        self.join = joined

    simmod.Sim.__init__ = spy
    try:
        r = run_scenario(
            seed, 5, ALL_FAULTS, stack="secure", params={"auth": {"secret": b"k" * 32}}
        )
    finally:
        simmod.Sim.__init__ = real
    assert r.ok, "\n".join(v.describe() for v in r.violations)
    logs[0].assert_consistent_and_independent()


# --- incarnations, static views, determinism -----------------------------------------------------


def test_a_restarted_member_rejoins_under_its_new_key_pair():
    """m2 crashes and restarts at the same address before the group notices: the coordinator
    sees a join from a member with another public key, takes the old incarnation out and the new
    one in within one flush, and wraps the key for the new key pair."""
    sim = secure_sim(27)
    log = KeyLog(sim)
    old_pub = sim.eps["m2"].view.keys.pub
    sim.crash("m2")
    sim.join("m2")
    log.watch("m2")
    assert sim.run_until(lambda: settled(sim, MEMBERS), within=5.0), sim.views()
    ring = sim.eps["m2"].view.keys
    assert ring.pub != old_pub and sim.eps["m0"].view.keys.pubs["m2"] == ring.pub
    payloads = cast_all(sim, MEMBERS, 5, "reborn")
    assert sim.run_until(lambda: delivered_everywhere(sim, MEMBERS, payloads), within=3.0)
    log.assert_consistent_and_independent()
    finish(sim, MEMBERS)


def test_a_statically_configured_view_learns_public_keys_and_rekeys_at_its_first_change():
    from cohort.stack.layers.keyring import boot_key, derive
    from seckit import SECRET

    sim = secure_sim(28, form="initial")
    v = sim.eps["m0"].view
    boot = boot_key(derive(SECRET, ""), v.vid, v.members)
    sim.run(sim.now + 0.3)  # public keys announced
    rings = [sim.eps[m]._layers[1].ring for m in MEMBERS]
    assert all(r.key == boot and r.boot for r in rings)
    assert all(set(r.pubs) == set(MEMBERS) and None not in r.pubs.values() for r in rings)
    sim.join("m3")
    assert sim.run_until(lambda: settled(sim, [*MEMBERS, "m3"]), within=5.0)
    keys = {sim.eps[m].view.keys.key for m in [*MEMBERS, "m3"]}
    assert len(keys) == 1 and boot not in keys  # exchanged, not derived from the secret
    finish(sim, [*MEMBERS, "m3"])


def test_a_secure_simulation_replays_from_its_seed():
    """Keys and nonces come from os.urandom, but no protocol decision depends on their bytes:
    one seed, one trace, as for every other stack."""

    def run() -> str:
        r = run_scenario(3, 5, ALL_FAULTS, stack="secure", params={"auth": {"secret": b"s" * 32}})
        return r.trace.dumps()

    assert run() == run()


def test_a_member_whose_key_announcement_was_lost_still_gets_the_next_key():
    """In a static view m2's public key never reaches the others; at the first view change its
    install lacks its key, so it sends the key to the installer, whose relay then carries it."""
    sim = secure_sim(29, form="initial")
    tap = Tap(sim)
    lost = [True]

    def m2_pub(src: str, dst: str, data: bytes) -> bool:
        p = wire.decode(data)
        body = unsealed(p) if p and p[0] == wire.OOB else None
        return lost[0] and src == "m2" and bool(body) and body[0] == "pub"

    tap.drop(m2_pub)
    sim.run(sim.now + 0.05)  # the announcements already in flight land
    for m in ("m0", "m1"):  # as if they had been lost too
        layers = sim.eps[m]._layers
        auth, gms = layers[1], next(x for x in layers if x.name == "gms")
        auth.ring = gms.ring = auth.ring.with_pub("m2", None)
    sim.run(sim.now + 0.6)  # they keep asking; m2's answers keep being lost
    assert all(sim.eps[m]._layers[1].ring.pubs["m2"] is None for m in ("m0", "m1"))
    lost[0] = False
    sim.join("m3")
    assert sim.run_until(lambda: settled(sim, [*MEMBERS, "m3"]), within=5.0), sim.views()
    assert sim.eps["m2"].counters["auth.key_unknown"] >= 1
    assert len({sim.eps[m].view.keys.key for m in [*MEMBERS, "m3"]}) == 1
    finish(sim, [*MEMBERS, "m3"])
