"""Tests for stack composition (requires/provides, parameters) and the wire boundary (garbage in
never raises, the endpoint counts it and keeps working)."""

from __future__ import annotations

import msgpack
import pytest
from cohort.stack import wire
from cohort.stack.compose import PRESETS, StackConfigError, compose
from cohort.stack.events import Deliver
from cohort.stack.layers.nak import Params as NakParams
from cohort.stack.runtime import Endpoint
from cohort.stack.view import View
from hypothesis import given, settings
from hypothesis import strategies as st

VIEW = View((1, "a"), ("a", "b", "c"), True, ("a", "b", "c"), (1, "a"))

# --- compose -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_compose_bottom_first_with_default_params(preset):
    spec = compose(preset)
    assert spec.spec == PRESETS[preset]
    assert spec.names == tuple(reversed(PRESETS[preset].split(":")))
    assert spec.names[0] == "bottom" and spec.names[-1] == "top"
    assert len(spec.params) == len(spec.classes)


def test_compose_properties_and_params():
    spec = compose("total", {"nak": {"xmit_interval": 0.5}})
    assert spec.provides("total") and spec.provides("uniform") and spec.provides("lease")
    assert not compose("fifo").provides("total")
    assert spec.param("nak") == NakParams(xmit_interval=0.5)
    with pytest.raises(KeyError):
        spec.param("nosuch")


def test_missing_property_names_it_and_a_layer_providing_it():
    with pytest.raises(StackConfigError) as e:
        compose("top:sequencer:nak:bottom")
    msg = str(e.value)
    assert "'sequencer' requires 'flush'" in msg
    assert "add one of: flush" in msg


def test_missing_property_deep_in_the_stack():
    with pytest.raises(StackConfigError) as e:
        compose("top:gms:nak:bottom")
    msg = str(e.value)
    assert "'gms' requires 'lease'" in msg  # the first missing one, alphabetically
    assert "below: nak, bottom" in msg and "add one of: suspect below 'gms'" in msg


def test_unknown_layer_lists_the_known_ones():
    with pytest.raises(StackConfigError) as e:
        compose("top:nope:bottom")
    msg = str(e.value)
    assert "'nope'" in msg
    for name in ("bottom", "flush", "gms", "nak", "pt2pt", "sequencer", "stable", "suspect"):
        assert name in msg


def test_unknown_param_lists_the_valid_ones():
    with pytest.raises(StackConfigError) as e:
        compose("fifo", {"nak": {"xmit": 1, "bogus": 2}})
    msg = str(e.value)
    assert "bogus, xmit" in msg and "'nak'" in msg
    assert "valid: max_nak_span, min_xmit_interval, xmit_interval" in msg


@pytest.mark.parametrize(
    ("spec", "params", "fragment"),
    [
        ("fifo", {"top": {"x": 1}}, "valid: (none)"),
        ("fifo", {"suspect": {"lease": 0.1}}, "not in the stack: suspect"),
        ("total", {"suspect": {"lease": 2.0}}, "bad parameters for layer 'suspect'"),
        ("", None, "empty stack spec"),
        ("top:nak:nak:bottom", None, "appears twice"),
        ("nak:bottom", None, "starts with 'top'"),
    ],
)
def test_other_impossible_stacks_are_refused(spec, params, fragment):
    with pytest.raises(StackConfigError) as e:
        compose(spec, params)
    assert fragment in str(e.value)


# --- wire ----------------------------------------------------------------------------------------


def test_wire_round_trip():
    data = wire.encode(wire.CONTROL, 77, 2, [None, [1, 2]], b"p")
    assert wire.decode(data) == [wire.CONTROL, 77, 2, [None, [1, 2]], b"p"]
    assert wire.decode(wire.encode_oob("a", ["join", 1])) == [wire.OOB, "a", ["join", 1]]


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=64))
def test_wire_decode_never_raises_on_random_bytes(data):
    pkt = wire.decode(data)
    assert pkt is None or (type(pkt) is list and pkt[0] in (0, 1, 2, 3))


def test_wire_decode_rejects_every_truncation():
    data = wire.encode(wire.CAST, VIEW.tag, 1, [[0], [0, 5]], b"payload")
    for cut in range(len(data)):
        assert wire.decode(data[:cut]) is None


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": 0},
        [],
        [9, 1, 1, [], b""],
        [wire.CAST, "tag", 1, [], b""],
        [wire.CAST, 1, 1.5, [], b""],
        [wire.CAST, 1, 1, {}, b""],
        [wire.CAST, 1, 1, [], "text"],
        [wire.CAST, 1, 1, []],
        [wire.OOB, 5, []],
        [wire.OOB, "a"],
    ],
)
def test_wire_decode_rejects_well_formed_msgpack_of_the_wrong_shape(obj):
    assert wire.decode(msgpack.packb(obj, use_bin_type=True)) is None


# --- endpoint ------------------------------------------------------------------------------------


def group() -> dict[str, Endpoint]:
    spec = compose("total")
    return {m: Endpoint(m, spec, initial_view=VIEW) for m in VIEW.members}


def pump(eps: dict[str, Endpoint], until: float) -> None:
    """Carry packets at once (no loss) and fire timers in time order up to `until`."""
    while True:
        moved = False
        for ep in eps.values():
            for dest, data in ep.take_packets():
                eps[dest].receive(ep.addr, data)
                moved = True
        if moved:
            continue
        deadlines = [d for ep in eps.values() if (d := ep.next_deadline()) is not None]
        if not deadlines or min(deadlines) > until:
            return
        now = min(deadlines)
        for ep in eps.values():
            ep.fire_timers(now)


def delivered(ep: Endpoint) -> list[tuple[str, bytes]]:
    return [(e.origin, e.payload) for e in ep.take_events() if type(e) is Deliver]


GARBAGE = [
    b"",
    b"\xc1",  # never used in msgpack
    b"\x95\x00",  # array of 5, truncated
    msgpack.packb({"a": 1}),
    msgpack.packb([wire.CAST, VIEW.tag, 1, "not a list", b"x"], use_bin_type=True),
    bytes(range(40)),
]


def test_endpoint_counts_garbage_and_keeps_working():
    eps = group()
    pump(eps, 0.05)
    for ep in eps.values():
        ep.take_events()
    a = eps["a"]
    for data in GARBAGE:
        a.receive("b", data)
    assert a.counters["wire.malformed"] == len(GARBAGE)

    a.cast(b"from a")
    eps["b"].cast(b"from b")
    pump(eps, 0.2)
    seqs = {m: delivered(ep) for m, ep in eps.items()}
    assert sorted(seqs["a"]) == [("a", b"from a"), ("b", b"from b")]
    assert seqs["a"] == seqs["b"] == seqs["c"]  # total order


@pytest.mark.parametrize(
    "data",
    [
        wire.encode(wire.CAST, VIEW.tag, 1, [], b"x"),
        wire.encode(wire.SEND, VIEW.tag, 1, [], b"x"),
        wire.encode(wire.CONTROL, VIEW.tag, 1, [5], b""),
        wire.encode(wire.CAST, VIEW.tag, 1, [None, [0, 0]], b"x"),
    ],
    ids=["cast-no-headers", "send-no-headers", "control-int-header", "cast-none-sequencer-hdr"],
)
def test_endpoint_never_raises_on_in_view_packets_with_malformed_headers(data):
    eps = group()
    eps["a"].receive("b", data)
    assert sum(eps["a"].counters.values()) >= 1  # dropped and counted by some layer
