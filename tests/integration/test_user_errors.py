"""Errors as a user meets them, against real replica processes: definitive failures answer at
once (nothing listens, no such group, TLS mismatch is in tests/security/test_tls.py), a group
without a majority says NoQuorum and who said what, plain Pyro5 proxies can decode what they get,
and a user exception comes back as its own class when the client has it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from cluster import Cluster
from cohort.orb.refs import object_id
from cohort.replication.cli import main as cohort_main
from cohort.stack.transport.testing import free_udp_ports
from Pyro5 import api as pyro_api

import cohort

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def shop(tmp_path):
    c = Cluster("tests.integration.shop:Shop", "shop", 3, str(tmp_path))
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def test_no_replica_running_fails_at_once():
    addrs = [f"127.0.0.1:{p}" for p in free_udp_ports(3)]
    t0 = time.monotonic()
    with cohort.connect(f"PYROGROUP:none@{','.join(addrs)}") as p:  # default timeout: 30 s
        with pytest.raises(cohort.GroupUnavailable, match="no replica is running"):
            p.add(1)
    assert time.monotonic() - t0 < 2.0


def test_a_wrong_group_name_fails_at_once_naming_the_groups_served(shop):
    ref = f"PYROGROUP:shoop@{','.join(shop.seeds)}"
    t0 = time.monotonic()
    with cohort.connect(ref) as p:
        with pytest.raises(
            cohort.GroupNotServed, match="serves no group 'shoop'; it serves: 'shop'"
        ):
            p.count("apple")
    assert time.monotonic() - t0 < 2.0


def test_user_exceptions_come_back_as_their_class_or_as_a_remote_error_of_their_base(shop):
    sys.modules.pop("tests.integration.shop", None)  # this client does not have the class
    with cohort.connect(shop.ref) as p:
        with pytest.raises(KeyError) as info:
            p.take("apple", 5)
        e = info.value
        assert isinstance(e, cohort.RemoteError) and e.remote_type.endswith("shop.OutOfStock")
        assert "apple: 2 left, 5 wanted" in str(e)
        assert 'File "shop.py"' in e.remote_traceback and "/" not in e.remote_traceback
        from tests.integration.shop import OutOfStock  # now it has the class

        with pytest.raises(OutOfStock, match="apple: 2 left"):
            p.take("apple", 5)


def test_a_group_without_a_majority_says_no_quorum_and_who_said_it(shop):
    survivor, *others = shop.seeds
    for a in others:
        shop.kill(a)
    t0 = time.monotonic()
    with cohort.connect(shop.ref, timeout=30) as p:
        with pytest.raises(cohort.NoQuorum) as info:
            p.take("apple", 1)
    took = time.monotonic() - t0
    text = str(info.value)
    assert survivor in text and "cut off from a majority" in text, text
    assert took < 10, f"NoQuorum after {took:.1f}s"
    st = shop.status(survivor)
    assert st and not st["primary"], st  # cohort status shows it as a minority, not a coord
    assert cohort_main(["status", shop.ref]) == 0


def test_plain_pyro5_proxies_decode_our_errors(shop):
    survivor = shop.seeds[0]
    uri = f"PYRO:{object_id('shop')}@{survivor}"
    with pyro_api.Proxy(uri) as plain:
        plain._pyroSerializer = "msgpack"
        with pytest.raises(KeyError, match="OutOfStock: .*apple: 2 left"):
            plain.take("apple", 5)
        assert plain.take("apple", 1) == 1
    for a in shop.seeds[1:]:
        shop.kill(a)
    deadline = time.monotonic() + 20
    with pyro_api.Proxy(uri) as plain:
        plain._pyroSerializer = "msgpack"
        plain._pyroTimeout = 10
        while True:
            try:
                plain.take("apple", 1)
            except ConnectionError as e:
                assert "NoQuorum" in str(e), e
                break
            assert time.monotonic() < deadline, "the stranded replica kept serving"
            time.sleep(0.1)  # polled, with a deadline: the survivor notices it is alone


def test_a_too_large_argument_fails_at_once_and_excludes_nobody(tmp_path):
    c = Cluster(
        "cohort.samples.kvstore:KVStore",
        "kv",
        3,
        str(tmp_path),
        extra=("--param", "frag.max_size=2000000"),
    )
    try:
        c.start_all()
        views_before = {a: s["views"] for a, s in c.wait_converged(c.seeds).items()}
        with cohort.connect(c.ref) as p:
            t0 = time.monotonic()
            with pytest.raises(cohort.MessageTooLarge, match="3,000,0.. bytes encoded") as info:
                p.put("big", b"x" * 3_000_000)
            assert time.monotonic() - t0 < 2.0
            assert "frag.max_size" in str(info.value) and "2,000,000 bytes" in str(info.value)
            p.put("small", "ok")
            assert p.get("small") == "ok"
        # a plain Pyro5 proxy has no such check: the replica refuses it, before casting anything
        uri = f"PYRO:{object_id('kv')}@{c.seeds[1]}"
        with pyro_api.Proxy(uri) as plain:
            plain._pyroSerializer = "msgpack"
            with pytest.raises(ValueError, match="MessageTooLarge: the arguments of put"):
                plain.put("big", b"x" * 3_000_000)
        views_after = {a: s["views"] for a, s in c.wait_converged(c.seeds, timeout=20).items()}
        assert views_after == views_before, "a view changed: a replica was excluded"
    finally:
        c.close()


def _exit_of(proc, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the replica still runs after {timeout}s") from None


def test_a_replica_of_another_class_is_refused_and_exits(shop, tmp_path):
    joiner = shop.addrs[3]
    shop.cls = "cohort.samples.counter:Counter"  # the group serves Shop
    shop.start(joiner)
    code = _exit_of(shop.procs[joiner], 30)
    log = open(f"{shop.log_dir}/{joiner.replace(':', '_')}.log").read()
    assert code != 0, log[-2000:]
    assert "JoinRefused" in log and "cohort.samples.counter.Counter" in log, log[-2000:]
    assert "tests.integration.shop.Shop" in log and "fingerprint" in log
    assert "state received" not in log and "Traceback" not in log, log[-2000:]
    with cohort.connect(shop.ref) as p:
        assert p.count("apple") == 2  # the group goes on with its state


@pytest.mark.timeout(180)
def test_a_constructor_that_raises_makes_cohort_serve_exit_with_the_error(tmp_path):
    c = Cluster(
        "tests.integration.shop:Fragile",
        "fragile",
        3,
        str(tmp_path),
        extra=("--kwargs", '{"fail": true}'),
    )
    try:
        for a in c.seeds:
            c.start(a)
        logs = []
        for a in c.seeds:  # every replica exits non-zero instead of staying up, never ready
            code = _exit_of(c.procs[a], 80)  # a seed too late to join waits its 30 s join timeout
            log = open(f"{tmp_path}/{a.replace(':', '_')}.log").read()
            logs.append(log)
            assert code != 0 and "Traceback" not in log, log[-2000:]
        # the founders that formed the group say why (a seed that came too late to join them
        # says JoinTimeout instead)
        said = [
            log for log in logs if "Fragile() raised RuntimeError: no database configured" in log
        ]
        assert len(said) >= 2, logs
    finally:
        c.close()
