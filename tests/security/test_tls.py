"""TLS between clients and replicas (S15): encrypted calls, client certificates, refused strangers."""

from __future__ import annotations

import threading
import time

import pytest
from certs import CA
from cohort.orb.tls import client_context, server_context
from cohort.samples.counter import Counter
from cohort.stack.transport.testing import free_udp_ports

import cohort
from cohort import replication

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def tls_group(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(d)
    server_cert, server_key = ca.issue("replica", server=True)
    client_cert, client_key = ca.issue("alice", server=False)
    other = CA(d, "other-ca")
    rogue_cert, rogue_key = other.issue("mallory", server=False)
    ctx = server_context(server_cert, server_key, ca.certfile, require_client_cert=True)
    addrs = [f"127.0.0.1:{p}" for p in free_udp_ports(3)]
    replicas = [replication.Replica(Counter, "tls", a, addrs, ssl_context=ctx) for a in addrs]
    starters = [threading.Thread(target=r.start) for r in replicas]
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    ref = f"PYROGROUP:tls@{','.join(addrs)}"
    try:
        yield {
            "ref": ref,
            "good": client_context(ca.certfile, client_cert, client_key),
            "no_cert": client_context(ca.certfile),
            "rogue": client_context(ca.certfile, rogue_cert, rogue_key),
            "wrong_ca": client_context(other.certfile, client_cert, client_key),
            "files": (ca.certfile, client_cert, client_key),
        }
    finally:
        for r in replicas:
            r.stop()


def test_calls_over_tls_with_a_client_certificate(tls_group):
    with replication.connect(tls_group["ref"], ssl_context=tls_group["good"]) as c:
        assert c.add(3) == c.get()


@pytest.mark.parametrize("who", ["no_cert", "rogue"])
def test_a_client_without_an_accepted_certificate_is_refused(tls_group, who):
    with replication.connect(tls_group["ref"], ssl_context=tls_group[who], timeout=1.5) as c:
        with pytest.raises(replication.GroupUnavailable):
            c.add(1)


def test_a_plaintext_client_is_told_at_once_that_tls_is_needed(tls_group):
    t0 = time.monotonic()
    with replication.connect(tls_group["ref"]) as c:  # the default 30 s timeout
        with pytest.raises(cohort.TLSMismatch, match="probably requires TLS"):
            c.add(1)
    assert time.monotonic() - t0 < 2.0


def test_a_tls_client_of_a_plaintext_group_is_told_at_once(tls_group, tmp_path):
    addrs = [f"127.0.0.1:{p}" for p in free_udp_ports(3)]
    replicas = [replication.Replica(Counter, "plain", a, addrs) for a in addrs]
    starters = [threading.Thread(target=r.start) for r in replicas]
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    try:
        t0 = time.monotonic()
        ref = f"PYROGROUP:plain@{','.join(addrs)}"
        with replication.connect(ref, ssl_context=tls_group["good"]) as c:
            with pytest.raises(cohort.TLSMismatch, match="serves plain connections"):
                c.add(1)
        assert time.monotonic() - t0 < 2.0
    finally:
        for r in replicas:
            r.stop()


def test_a_replica_whose_certificate_we_do_not_trust_is_not_called(tls_group):
    t0 = time.monotonic()
    with replication.connect(tls_group["ref"], ssl_context=tls_group["wrong_ca"]) as c:
        with pytest.raises(cohort.TLSMismatch, match="certificate is not trusted"):
            c.add(1)
    assert time.monotonic() - t0 < 2.0


def test_cohort_call_and_status_over_tls(tls_group, capsys):
    from cohort.replication.cli import main

    ca, cert, key = tls_group["files"]
    tls = ["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key]
    assert main(["call", tls_group["ref"], "add", "10", *tls]) == 0
    assert int(capsys.readouterr().out) >= 10
    assert main(["status", tls_group["ref"], *tls]) == 0
    assert "coord" in capsys.readouterr().out
