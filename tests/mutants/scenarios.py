"""Targeted scenarios of the seeded-bug catalog, and the helpers to write them.

Why: some bugs need a situation random scenarios reach rarely (a sequencer napping just under the
suspicion timeout, a partition that moves right after a member confirmed a proposal). Each
scenario here builds one such situation, deterministic for a seed, and returns the finished trace
for the checker. Each models something that happens to real groups (a paused process, a one-way
link failure, a bulk transfer over a lossy link), not a path hand-built to reach one line; they
run on the unmutated stack too (`test_mutants.py`), where they must pass.

A scenario that relies on the checker's fault-aware properties (M9, L3 of `cohort.stack.check.faults`)
records its faults and declares the record complete with `strict` (and `cut`, `heal`).
"""

from __future__ import annotations

from typing import Any

from cohort.stack import check
from cohort.stack.layers.gms_wire import view_from_wire
from cohort.stack.sim import ALL_FAULTS, REPAIR_BOUND, Net, Sim, run_scenario
from cohort.stack.trace import Trace
from mutation import Scenario

# --- helpers -------------------------------------------------------------------------------------


def finish(sim: Sim, within: float = 8.0) -> Trace:
    """Let the group settle, then mark the trace for the liveness checks (as run_scenario does)."""
    sim.run_until(sim.converged, within=within)
    sim.run(sim.now + 0.5)
    sim.trace.live = tuple(sim.live())
    sim.trace.liveness = True
    sim.trace.end_time = sim.now
    return sim.trace


def burst(sim: Sim, members: list[str], count: int, start: float, gap: float) -> None:
    """Each of `members` casts `count` messages, one every `gap` seconds from `start`."""
    for k in range(count):
        for m in members:
            sim.at(start + k * gap, lambda m=m, k=k: sim.cast(m, f"{m}:{k}".encode()))


def layer_of(sim: Sim, member: str, name: str) -> Any:
    """The live layer instance `name` of `member`'s current view (scenarios use it to act at a
    protocol step, e.g. pause the coordinator right after it proposed)."""
    return next(layer for layer in sim.eps[member]._layers if layer.name == name)


def strict(sim: Sim, bound: float | None = REPAIR_BOUND) -> None:
    """Declare that every fault of this run is recorded (check.SCHEDULE): M9 and L3 apply."""
    sim.trace.add(sim.now, "", check.SCHEDULE, bound)


def cut(sim: Sim, src: str, dst: str) -> None:
    """`dst` stops hearing `src` (recorded for the fault-aware checks)."""
    sim.cut(src, dst)
    sim.trace.add(sim.now, src, check.CUT, dst)


def heal(sim: Sim) -> None:
    sim.heal()
    sim.trace.add(sim.now, "", check.HEAL)


def expect(ok: bool, what: str) -> None:
    """A step the scenario relies on did not happen (the stack's behaviour changed): say so
    instead of carrying on with a run that no longer builds its situation."""
    if not ok:
        raise RuntimeError(f"scenario step not reached: {what}")


def random_run(members: int) -> Scenario:
    """A scenario that replays one random scenario (`run_scenario(seed, members)`).

    For mutants that random scenarios catch only after hundreds of runs and that no short
    hand-built run exposes: the mutant's `seeds` pin the runs that caught it. A pinned run is
    fragile by nature: when the stack's behaviour changes, the run changes and may stop exposing
    the bug; the test then fails, and `run.py --only NAME` finds a new seed.
    """

    def replay(seed: int) -> Trace:
        return run_scenario(seed, members, ALL_FAULTS, strict=True).trace

    replay.__doc__ = f"random scenario `run_scenario(seed, {members})` (pinned seeds)"
    return replay


def lossy_origin_crash(seed: int) -> Trace:
    """m4 crashes mid-burst on a network losing 20% of packets: survivors miss some of its casts
    that other survivors hold, and only those can retransmit them."""
    sim = Sim(seed, 5, net=Net(loss=0.2))
    burst(sim, sim.seeds, 30, 0.06, 0.01)
    sim.at(0.2, lambda: sim.crash("m4"))

    def calm() -> None:
        sim.net = Net()

    sim.at(1.5, calm)
    sim.run(1.5)
    return finish(sim)


def jittery_bridge(seed: int) -> Trace:
    """m0 stops hearing m2 (one-way cut) and excludes it while m1 still hears it; the network
    has 300 ms of jitter, so casts of the old view still reach m2 after the new view exists.
    Unmutated, m1 stops echoing m2 once blocked and m2's lease has run out by then."""
    sim = Sim(seed, 3, net=Net(reorder=0.8, reorder_delay=0.3))
    burst(sim, ["m0", "m1"], 80, 0.06, 0.01)
    sim.at(0.1, lambda: sim.cut("m2", "m0"))

    def calm() -> None:  # liveness is judged on a calm network
        sim.heal()
        sim.net = Net()

    sim.at(1.5, calm)
    sim.run(1.5)
    return finish(sim)


def sleeping_sequencer(seed: int) -> Trace:
    """The sequencer m0 of a 3-member group is paused for 1 s under traffic: the others exclude
    it and move on; on waking it must not deliver what it finds in its socket buffer."""
    sim = Sim(seed, 3, net=Net())
    burst(sim, ["m1", "m2"], 60, 0.06, 0.02)
    sim.at(0.3, lambda: sim.pause("m0"))
    sim.at(1.3, lambda: sim.resume("m0"))
    sim.run(1.3)
    return finish(sim)


def split_after_install(seed: int) -> Trace:
    """7 members; {m4, m5, m6} are cut off and m0 excludes them. The moment m3 has confirmed
    m0's proposal {m0..m3}, the partition moves: {m0, m1, m2} install it (m3's INSTALL is lost)
    and deliver in it, while m3 joins {m4, m5, m6}, four of the seven. m3 reports the accepted
    proposal to its new coordinator, which must adopt it (and then wait: no majority) instead of
    installing a primary view of its own."""
    sim = Sim(seed, 7, net=Net())
    burst(sim, sim.seeds, 100, 0.06, 0.02)
    sim.at(0.1, lambda: sim.partition(["m0", "m1", "m2", "m3"], ["m4", "m5", "m6"]))
    sim.run_until(lambda: layer_of(sim, "m3", "gms").done is not None, within=2.0)
    sim.heal()
    sim.partition(["m0", "m1", "m2"], ["m3", "m4", "m5", "m6"])
    sim.run(sim.now + 2.0)
    sim.heal()
    return finish(sim)


def split_before_confirming(seed: int) -> Trace:
    """7 members; {m4, m5, m6} are cut off and m0 excludes them. The moment m3 has sent its
    report in m0's flush, the partition moves: m0's CUT (W = m0..m3) never reaches m3, which
    joins {m4, m5, m6}, four of the seven, and they install a primary view of their own. m0,
    m1 and m2 confirmed W but are three of seven: W, which m3 never accepted, must not be
    installed (nor re-proposed without m3: no majority), or two primary views go on."""
    sim = Sim(seed, 7, net=Net())
    strict(sim)
    burst(sim, sim.seeds, 100, 0.06, 0.02)

    def part(xs: list[str], ys: list[str]) -> None:
        for x in xs:
            for y in ys:
                cut(sim, x, y)
                cut(sim, y, x)

    sim.at(0.1, lambda: part(["m0", "m1", "m2", "m3"], ["m4", "m5", "m6"]))
    sim.run(0.1)
    expect(
        sim.run_until(lambda: layer_of(sim, "m3", "gms").my_report is not None, within=2.0),
        "m3 reports in m0's flush",
    )
    heal(sim)
    part(["m0", "m1", "m2"], ["m3", "m4", "m5", "m6"])
    sim.run(sim.now + 2.0)
    heal(sim)
    return finish(sim)


def joiner_then_double_crash(seed: int) -> Trace:
    """m3 joins a 3-member group; right after its first view, m3 and m2 crash together. Two of
    the three acceptors survive, a majority: only if the joiner was (wrongly) counted as an
    acceptor do the survivors lack a majority and stay blocked."""
    sim = Sim(seed, 3, net=Net())
    burst(sim, ["m0", "m1", "m2"], 10, 0.06, 0.02)
    sim.at(0.1, lambda: sim.join("m3"))
    sim.run_until(lambda: "m3" in sim.eps["m0"].view.members, within=2.0)
    sim.crash("m3")
    sim.crash("m2")
    return finish(sim)


def coordinator_naps_mid_flush(seed: int) -> Trace:
    """m4 crashes; the coordinator m0 starts the flush and naps 0.3 s (its lease runs out), then
    proposes and naps again, 1.2 s, with every DONE queued. m1 takes over and installs a view
    without m0. Waking, m0 must not install on those DONEs and deliver its leftovers into a
    view the group has left (the regression of `cohort sim` seed 840594, made deterministic)."""
    sim = Sim(seed, 5, net=Net())
    burst(sim, ["m1", "m2", "m3"], 200, 0.06, 0.005)  # traffic in flight when the flush starts
    sim.at(0.1, lambda: sim.crash("m4"))
    sim.run_until(lambda: layer_of(sim, "m0", "gms").coord.ballot is not None, within=2.0)
    sim.pause("m0")
    sim.run(sim.now + 0.3)
    sim.resume("m0")
    sim.run_until(lambda: layer_of(sim, "m0", "gms").coord.cut is not None, within=1.0)
    sim.pause("m0")
    wake = sim.now + 1.2
    sim.at(wake, lambda: sim.resume("m0"))
    sim.run(wake)
    return finish(sim)


def sequencer_naps(seed: int) -> Trace:
    """The sequencer sleeps 0.2 s (less than the suspicion timeout) while m1 and m2 cast: on
    waking it orders its whole socket buffer in one ORDER cast, with runs longer than one."""
    sim = Sim(seed, 3, net=Net())
    burst(sim, ["m1", "m2"], 30, 0.06, 0.01)
    sim.at(0.1, lambda: sim.pause("m0"))
    sim.at(0.3, lambda: sim.resume("m0"))
    sim.run(0.5)
    return finish(sim)


def order_seen_by_two(seed: int) -> Trace:
    """Only m0 (sequencer) and m1 receive m0's ORDER casts (cut links), m1 delivers in that order
    and marks Safe; both crash. The survivors deliver the casts as view-end leftovers by rank,
    in another order: legal for unmarked deliveries, a V5 violation for Safe ones."""
    sim = Sim(seed, 5, net=Net())

    def cut() -> None:
        for a in ("m0", "m1"):
            for b in ("m2", "m3", "m4"):
                sim.cut(a, b)

    sim.at(0.06, cut)  # after the first heartbeat round: m1 holds a lease until ~0.25
    sim.at(0.065, lambda: sim.cast("m3", b"m3:0"))
    sim.at(0.068, lambda: sim.cast("m2", b"m2:0"))
    sim.at(0.071, lambda: sim.cast("m4", b"m4:0"))
    sim.run(0.15)
    sim.crash("m0")
    sim.crash("m1")
    sim.heal()
    return finish(sim)


def pause_with_traffic(seed: int) -> Trace:
    """m2 sleeps 0.3 s (less than the suspicion timeout) under traffic: on waking its lease has
    expired, so deliveries wait in top while stability gossip already reports them Safe."""
    sim = Sim(seed, 3, net=Net())
    burst(sim, ["m0", "m1"], 20, 0.06, 0.015)
    sim.at(0.1, lambda: sim.pause("m2"))
    sim.at(0.4, lambda: sim.resume("m2"))
    sim.run(0.5)
    return finish(sim)


def one_way_cut_between_members(seed: int) -> Trace:
    """m3 stops hearing m2 for 1.4 s (a one-way link failure between two ordinary members) while
    everyone casts; the coordinator m0 hears both all along. m3 suspects m2 and tells m0, which
    must check with its own failure detector before excluding anyone (VERIFY_SUSPECT)."""
    sim = Sim(seed, 5, net=Net())
    strict(sim)
    burst(sim, sim.seeds, 60, 0.06, 0.02)
    sim.at(0.1, lambda: cut(sim, "m2", "m3"))
    sim.at(1.5, lambda: heal(sim))
    sim.run(1.5)
    return finish(sim)


def bulk_over_lossy_link(seed: int) -> Trace:
    """m1 ships 200 casts at once (a bulk transfer, a state snapshot in pieces) on a network
    losing 20% of packets; nothing else happens. Every receiver misses ~40 of them, and must
    have them all within the repair bound (L3): one NAK round asks for every hole."""
    sim = Sim(seed, 3, net=Net(loss=0.2))
    strict(sim)
    burst(sim, ["m0", "m2"], 10, 0.06, 0.05)
    sim.at(0.5, lambda: [sim.cast("m1", f"m1:{k}".encode()) for k in range(200)])

    def calm() -> None:
        sim.net = Net()

    sim.at(1.2, calm)
    sim.run(1.2)
    return finish(sim)


def unicasts_over_lossy_link(seed: int) -> Trace:
    """m1 sends m2 batches of unicasts (a state transfer in chunks) on a network losing 20% of
    packets, while everyone casts a little; every unicast must arrive, in order, once."""
    from cohort.stack.sim import _unicast, _watch_unicasts

    sim = Sim(seed, 3, net=Net(loss=0.2))
    strict(sim)
    for m in sim.seeds:
        _watch_unicasts(sim, m)
    burst(sim, ["m0", "m2"], 10, 0.06, 0.05)
    for j in range(8):
        pays = [f"m1>m2:{j}.{i}".encode() for i in range(5)]
        sim.at(0.1 + 0.05 * j, lambda p=pays: _unicast(sim, "m1", "m2", p))

    def calm() -> None:
        sim.net = Net()

    sim.at(1.2, calm)
    sim.run(1.2)
    return finish(sim)


def forgiven_coordinator_then_join(seed: int) -> Trace:
    """m3 stops hearing the coordinator m0 for 0.6 s (a one-way link failure) and suspects it;
    the others still hear m0, so nobody is excluded. The link heals; 1.5 s later m5 joins. m3
    must have withdrawn its suspicion when it heard m0 again, and take part in m0's flush."""
    sim = Sim(seed, 5, net=Net())
    strict(sim)
    burst(sim, sim.seeds, 40, 0.06, 0.05)
    sim.at(0.1, lambda: cut(sim, "m0", "m3"))
    sim.at(0.7, lambda: heal(sim))
    sim.at(2.2, lambda: (sim.trace.add(sim.now, "m5", check.JOINING), sim.join("m5")))
    sim.run(2.2)
    return finish(sim)


def coordinator_unheard_by_two(seed: int) -> Trace:
    """m3 and m4 stop hearing the coordinator m0 for 1.4 s (one-way link failures, e.g. a
    firewall rule on m0's side) while everyone casts; m1 and m2 hear m0 all along. m3 and m4
    report their suspicion to m1, whom they now take for the coordinator; m1's own failure
    detector disagrees, so nobody is excluded. A member that takes over as soon as it suspects
    the coordinator sends STARTs that must not win over members who know better."""
    sim = Sim(seed, 5, net=Net())
    strict(sim)
    burst(sim, sim.seeds, 60, 0.06, 0.02)
    sim.at(0.1, lambda: (cut(sim, "m0", "m3"), cut(sim, "m0", "m4")))
    sim.at(1.5, lambda: heal(sim))
    sim.run(1.5)
    return finish(sim)


# --- partial re-proposals ------------------------------------------------------------------------


def isolate(sim: Sim, member: str) -> None:
    """`member` stops reaching everyone and hearing anyone (recorded)."""
    for m in sim.eps:
        if m != member:
            cut(sim, member, m)
            cut(sim, m, member)


def cut_off_run(seed: int) -> Sim:
    """`cut_off_after_reporting`, returning the finished simulation (tests read its counters)."""
    sim = Sim(seed, 5, net=Net())
    strict(sim)
    burst(sim, sim.seeds, 100, 0.06, 0.01)
    sim.at(0.1, lambda: sim.crash("m4"))
    sim.run(0.1)
    expect(
        sim.run_until(lambda: layer_of(sim, "m3", "gms").my_report is not None, within=2.0),
        "m3 reports in m0's flush",
    )
    isolate(sim, "m3")  # its REPORT is on the wire; m0's CUT to it will not be
    v = sim.eps["m0"].view
    expect(sim.run_until(lambda: sim.eps["m0"].view is not v, within=2.0), "m0 installs W")
    expect("m3" in sim.eps["m0"].view.members, "W, re-proposed without m3's confirmation")
    sim.run(sim.now + 0.2)
    heal(sim)
    finish(sim)
    return sim


def cut_off_after_reporting(seed: int) -> Trace:
    """m4 crashes and the coordinator m0 runs the flush; the moment m3 has sent its report, a
    partition isolates m3 (both ways): m0's CUT, proposing W = m0..m3, never reaches it. m0
    times out m3 and, since every member it hears accepted W, re-proposes W as it is (it may
    be installed), confirmed by m0..m2 (`partial`), and installs it. When the partition heals,
    m3 hears of W (a relay): it is a member of W but never confirmed it, nor delivered its cut,
    so it must count itself left behind and rejoin. If it installed W straight from V, it would
    skip casts the others delivered in V (V3, and V5 for those marked Safe)."""
    return cut_off_run(seed).trace


#: the installers of W (m0 its coordinator, m1, the joiner m5) and the side cut off from them
SPLIT_A, SPLIT_B = ("m0", "m1", "m5"), ("m2", "m3", "m4")


def successor_accepted(seed: int) -> Sim:
    """A group split between two installs, up to the moment m4 accepts W from m2.

    m4 joins {m0..m3}; V = m0..m4, all acceptors. m5 joins: m0 proposes W = V + m5 and every
    member confirms it. Then m0's side (m0, m1, m5) stops reaching the rest (one-way first, so
    m0 still gets the confirmations and installs W while its INSTALLs to m2..m4 are lost; then
    both ways). m2, still in V, suspects m0 and m1 and takes over: the reports show W accepted,
    so m2 re-proposes W as it is (`partial`: m2, m3, m4 confirm it, a majority of V's and of
    W's acceptors); m4 accepts it."""
    sim = Sim(seed, 4, net=Net())
    burst(sim, ["m0", "m1", "m2", "m3"], 150, 0.05, 0.02)
    sim.at(0.1, lambda: sim.join("m4"))
    sim.run(0.1)
    five = {"m0", "m1", "m2", "m3", "m4"}
    expect(
        sim.run_until(
            lambda: sim.converged() and set(sim.eps["m0"].view.last_primary) == five, within=2.0
        ),
        "V: m4 admitted and confirmed",
    )
    sim.join("m5")
    expect(
        sim.run_until(
            lambda: all(layer_of(sim, m, "gms").done is not None for m in SPLIT_B), within=2.0
        ),
        "m2..m4 confirmed W",
    )
    for a in SPLIT_A:
        for b in SPLIT_B:
            sim.cut(a, b)
    expect(sim.run_until(lambda: "m5" in sim.eps["m0"].view.members, within=1.0), "m0 installs W")
    sim.partition(list(SPLIT_A), list(SPLIT_B))

    def m4_accepted_from_m2() -> bool:
        done = layer_of(sim, "m4", "gms").done
        return done is not None and tuple(done[0])[1] == "m2"

    expect(sim.run_until(m4_accepted_from_m2, within=3.0), "m4 accepts m2's re-proposal of W")
    return sim


def successor_then_crash(seed: int) -> Trace:
    """`successor_accepted`, then m4 (which confirmed m2's proposal) crashes and the partition
    heals a second later: the four live acceptors of V must end in one primary view."""
    sim = successor_accepted(seed)
    sim.crash("m4")
    sim.run(sim.now + 1.0)
    sim.heal()
    return finish(sim, within=30.0)


def partition_at_formation(seed: int) -> Trace:
    """Five seeds; m0 and m4 are not up yet, so m1 forms the group with m2 and m3 (three of the
    five). The moment m2 has confirmed that first primary view, a partition parts {m1, m3}, which
    install it and deliver in it (two of its three acceptors), from m2, which never hears of it;
    then m0 and m4 start on m2's side. m0, the first seed, takes in the members of any later
    seed's component: m2, still in m1's flush, must not let it, or m0, m2 and m4 (three of the
    five seeds) make a second first primary view that counts m2 too."""
    sim = Sim(seed, 5, net=Net(), form="none")
    strict(sim)

    def join(member: str) -> None:
        sim.trace.add(sim.now, member, check.JOINING)
        sim.join(member)

    for m in ("m1", "m2", "m3"):
        join(m)

    def confirmed() -> bool:
        done = layer_of(sim, "m2", "gms").done
        return done is not None and view_from_wire(done[1]).primary

    expect(sim.run_until(confirmed, within=3.0), "m2 confirms the first primary view")
    for a in ("m1", "m3"):
        for b in ("m0", "m2", "m4"):
            cut(sim, a, b)
            cut(sim, b, a)
    t = sim.now
    join("m0")
    join("m4")
    burst(sim, ["m1", "m3", "m0", "m4"], 20, t + 0.05, 0.02)
    sim.run(t + 1.5)
    heal(sim)
    return finish(sim, within=10.0)
