"""cohort.state.codec: exact round trips of nested values, precise error paths, user codecs."""

import collections
import dataclasses
import datetime as dt
import decimal
import threading
import uuid
from typing import Any

import msgpack
import pytest
from cohort.state import codec
from cohort.state.codec import DecodeError, SerializationError, dumps, loads
from hypothesis import given, settings
from hypothesis import strategies as st

from cohort import state


def same(a: Any, b: Any) -> bool:
    """Equality that also insists on identical types, recursively (1 == True, (1,) != [1], but
    {1} == frozenset({1}) would otherwise pass)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return a == b


def roundtrip(v: Any) -> Any:
    out = loads(dumps(v))
    assert same(out, v), (v, out)
    return out


@state.serializable
@dataclasses.dataclass
class Account:
    owner: str
    tags: set
    opened: dt.datetime
    history: list = dataclasses.field(default_factory=list)


@state.codec.serializable
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("decoding must not re-run __post_init__")


@dataclasses.dataclass
class Unregistered:
    a: int


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (
            other.cents,
            other.currency,
        )

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


# -- round trips -----------------------------------------------------------------------------

hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    hashables
    | st.floats(allow_nan=False)
    | st.datetimes()
    | st.uuids()
    | st.decimals(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner)
        | st.tuples(inner, inner, inner)
        | st.sets(hashables, max_size=4)
        | st.dictionaries(hashables, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_roundtrip_nested_values_exactly(v: Any) -> None:
    roundtrip(v)


def test_tuples_stay_tuples_everywhere() -> None:
    v = {(1, "a"): [(2, (3,)), {"k": ()}], "s": {(1, 2), (3, (4, 5))}, "f": frozenset({(1,)})}
    out = roundtrip(v)
    assert isinstance(next(iter(out["s"])), tuple)
    roundtrip(((), ([],), [()]))


def test_builtin_exotic_types() -> None:
    tz = dt.timezone(dt.timedelta(hours=-3, minutes=-30, seconds=-7, microseconds=-5))
    roundtrip(
        [
            dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
            dt.datetime(2024, 2, 29, 23, 59, tzinfo=dt.timezone.utc),
            dt.datetime(1, 1, 1, tzinfo=tz),
            dt.datetime(2021, 11, 7, 1, 30, fold=1),
            dt.date(9999, 12, 31),
            dt.timedelta(days=-999999999),
            dt.timedelta(days=5, seconds=3, microseconds=1),
            decimal.Decimal("-0.000"),
            decimal.Decimal("1E+1000"),
            uuid.UUID(int=0),
            complex(-1.5, float("inf")),
            set(),
            frozenset(),
            2**64,
            -(2**63) - 1,
            2**1000,
            -(2**200),
            2**63 - 1,
            True,
            b"\x00",
        ]
    )
    assert loads(dumps(decimal.Decimal("NaN"))).is_nan()
    out = loads(dumps(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    assert out.tzinfo is dt.timezone.utc


def test_int_keys_and_plain_values_are_plain_msgpack() -> None:
    v = {1: [1, 2.5, None, True, "x", b"y"], -2: {}}
    roundtrip(v)
    assert dumps(v) == msgpack.packb(v, use_bin_type=True)


def test_registered_dataclass_roundtrips_with_nested_values() -> None:
    acc = Account("bob", {("eur", 1), ("usd", 2)}, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    acc.history.append(Point(1, 2))
    out = roundtrip({"accounts": {"bob": acc}, "origin": Point(0, 0)})
    assert type(out["accounts"]["bob"].history[0]) is Point
    assert {Point(1, 2): "frozen dataclasses are hashable keys"} == loads(
        dumps({Point(1, 2): "frozen dataclasses are hashable keys"})
    )


def test_dataclass_decoding_bypasses_post_init() -> None:
    p = Point(1, 2)
    object.__setattr__(p, "x", -1)  # valid on the sender, would fail __post_init__
    assert loads(dumps(p)) == p


def test_register_dataclass_is_idempotent_and_checks_input() -> None:
    assert state.register_dataclass(Point) is Point
    with pytest.raises(TypeError):
        state.register_dataclass(Money)


# -- errors ----------------------------------------------------------------------------------


def test_error_path_through_dicts_and_lists() -> None:
    v = {"accounts": {"bob": {"history": [1, 2, 3, threading.Lock()]}}}
    with pytest.raises(SerializationError) as ei:
        dumps(v, root="state")
    err = ei.value
    assert isinstance(err, TypeError)
    assert err.path == "state['accounts']['bob']['history'][3]"
    assert err.type_name == type(threading.Lock()).__qualname__
    assert f"{err.type_name!r} at state['accounts']['bob']['history'][3]: declare a codec" in str(
        err
    )
    assert "state.register(" in str(err)


def test_error_path_attribute_style() -> None:
    v = {"accounts": {"bob": Account("bob", set(), dt.datetime(2020, 1, 1), [1, object()])}}
    with pytest.raises(SerializationError) as ei:
        dumps(v, root="state", attrs=True)
    assert ei.value.path == "state.accounts['bob'].history[1]"
    assert ei.value.type_name == "object"


def test_error_path_dataclass_field_in_args() -> None:
    with pytest.raises(SerializationError) as ei:
        dumps([[1, Point(1, threading.Event())], {}], root="args")
    assert ei.value.path == "args[0][1].y"
    assert ei.value.type_name == "Event"


def test_unregistered_dataclass_says_to_register() -> None:
    with pytest.raises(SerializationError, match="register_dataclass\\(Unregistered\\)") as ei:
        dumps({"x": (1, Unregistered(1))}, root="result")
    assert ei.value.path == "result['x'][1]"
    assert "@serializable" in str(ei.value)


@pytest.mark.parametrize(
    ("value", "path", "needle"),
    [
        ({(1, threading.Lock()): 1}, "v<key>[1]", "declare a codec"),
        ({"s": {1, Money(1, "eur")}}, "v['s']{*}", "declare a codec"),
        ([collections.defaultdict(int)], "v[0]", "plain dict"),
        ((collections.OrderedDict(),), "v[0]", "plain dict"),
        ([collections.namedtuple("P", "a")(1)], "v[0]", "plain tuple"),
        ({"k": "\ud800"}, "v['k']", "surrogate"),
        ([1, lambda: 0], "v[1]", "declare a codec"),
    ],
)
def test_error_paths(value: Any, path: str, needle: str) -> None:
    with pytest.raises(SerializationError, match=needle) as ei:
        dumps(value, root="v")
    assert ei.value.path == path


def test_circular_references_are_named() -> None:
    loop: list = [1]
    loop.append({"again": loop})
    with pytest.raises(SerializationError, match="circular") as ei:
        dumps(loop, root="state")
    assert ei.value.path == "state[1]['again']"
    t: tuple = ([],)
    t[0].append(t)
    with pytest.raises(SerializationError, match="circular"):
        dumps(t)


def test_too_deep_is_named() -> None:
    v: list = []
    for _ in range(2000):
        v = [v]
    with pytest.raises(SerializationError, match="nested too deeply"):
        dumps(v)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\xd4\x05\x00", b"\xc7\x01\x40\xff"])
def test_malformed_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        loads(data)


def test_unknown_dataclass_on_receiver_is_a_decode_error() -> None:
    @dataclasses.dataclass
    class Local:
        a: int

    state.register_dataclass(Local)
    data = dumps(Local(1))
    state.unregister(Local)
    with pytest.raises(DecodeError, match="not registered"):
        loads(data)


# -- user codecs -----------------------------------------------------------------------------


@pytest.fixture
def money_codec():
    state.register(Money, 7, lambda m: (m.cents, m.currency), lambda v: Money(*v))
    yield
    state.unregister(Money)


def test_user_codec_roundtrip(money_codec: None) -> None:
    v = {Money(5, "eur"): [Money(1, "usd"), (Money(2, "chf"),)], "set": {Money(3, "eur")}}
    out = roundtrip(v)
    assert type(next(iter(out["set"]))) is Money


def test_user_codec_error_paths(money_codec: None) -> None:
    with pytest.raises(SerializationError) as ei:
        dumps({"m": Money(1, threading.Lock())}, root="args")  # type: ignore[arg-type]
    assert ei.value.path == "args['m'][1]"

    class Bad:
        pass

    state.register(Bad, 8, lambda b: 1 // 0, lambda v: Bad())
    try:
        with pytest.raises(SerializationError, match="ZeroDivisionError") as ei:
            dumps([Bad()], root="x")
        assert ei.value.path == "x[0]"
    finally:
        state.unregister(Bad)


def test_register_rejects_bad_codes_and_duplicates(money_codec: None) -> None:
    class Other:
        pass

    noop = (lambda o: 0, lambda v: Other())
    with pytest.raises(ValueError, match="already used by Money"):
        state.register(Other, 7, *noop)
    with pytest.raises(ValueError, match="already has a codec"):
        state.register(Money, 9, *noop)
    for bad in (-1, 64, 70, 128):
        with pytest.raises(ValueError, match="0-63"):
            state.register(Other, bad, *noop)
    for builtin in (tuple, dict, int, dt.datetime):
        with pytest.raises(ValueError, match="already has a codec"):
            state.register(builtin, 9, *noop)
    with pytest.raises(TypeError):
        state.register(Other(), 9, *noop)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        state.unregister(Other)


def test_builtin_codes_are_distinct_and_reserved() -> None:
    codes = [
        codec.TUPLE,
        codec.SET,
        codec.FROZENSET,
        codec.DATETIME,
        codec.DATE,
        codec.TIMEDELTA,
        codec.DECIMAL,
        codec.UUID,
        codec.COMPLEX,
        codec.BIGINT,
        codec.DATACLASS,
    ]
    assert len(set(codes)) == len(codes)
    assert all(64 <= c <= 127 for c in codes)


def test_concurrent_use_is_safe() -> None:
    v = {"t": [(i, {(i, "x")}) for i in range(50)]}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                assert loads(dumps(v)) == v
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_serialization_error_can_be_rewrapped_by_callers() -> None:
    """The ORB re-raises with its own message: `SerializationError(f"argument ...: {e}")`."""
    err = SerializationError("argument of f() cannot be sent: ...")
    assert str(err) == "argument of f() cannot be sent: ..." and err.path == err.type_name == ""


def test_sets_encode_sorted_so_equal_states_give_equal_bytes() -> None:
    """Replicas compare state digests; str hashing (and so set order) differs per process."""
    words = [f"w{i}" for i in range(50)]
    a, b = set(words), set(reversed(words))
    ext = msgpack.unpackb(dumps(a), ext_hook=lambda code, data: msgpack.unpackb(data))
    assert ext == sorted(words)
    assert dumps({"s": a, "f": frozenset(a)}) == dumps({"s": b, "f": frozenset(b)})
    roundtrip({1, "mixed", (2,)})  # unorderable: still round-trips, in iteration order


def test_an_unregistered_dataclass_in_a_reply_reads_as_a_record_and_round_trips():
    @dataclasses.dataclass(frozen=True)
    class Item:
        name: str
        n: int

    codec.register_dataclass(Item)
    data = dumps({"item": Item("apple", 2)})
    codec.unregister(Item)  # this process (a client) does not have the class
    with pytest.raises(DecodeError, match="not registered in this process: import its module"):
        loads(data)  # replicas decode strictly: their state must round-trip exactly
    got = loads(data, records=True)["item"]
    assert isinstance(got, codec.Record) and got.name == "apple" and got.n == 2
    assert got.type_name.endswith("Item") and "name='apple'" in repr(got)
    with pytest.raises(AttributeError, match="read-only"):
        got.n = 3
    again = dumps(got)  # passed back, it is the same dataclass on the wire
    codec.register_dataclass(Item)
    try:
        assert loads(again) == Item("apple", 2)
    finally:
        codec.unregister(Item)
