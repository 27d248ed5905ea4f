"""`PYROGROUPNAME:` references resolved through a real Pyro5 name server, and in-process replicas."""

from __future__ import annotations

import socket
import threading

import pytest
from cohort.orb.proxy import proxy_info
from cohort.orb.refs import lookup
from cohort.samples.counter import Counter
from cohort.stack.transport.testing import free_udp_ports
from Pyro5 import nameserver

from cohort import replication

pytestmark = pytest.mark.timeout(90)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_group_resolved_through_the_name_server_and_unregistered_on_stop():
    ns_port = _free_tcp_port()
    _uri, daemon, _bc = nameserver.start_ns("127.0.0.1", ns_port, enableBroadcast=False)
    loop = threading.Thread(target=daemon.requestLoop, daemon=True)
    loop.start()
    addrs = [f"127.0.0.1:{p}" for p in free_udp_ports(3)]
    replicas = [
        replication.Replica(Counter, "named", a, addrs, ns_host="127.0.0.1", ns_port=ns_port)
        for a in addrs
    ]
    starters = [threading.Thread(target=r.start) for r in replicas]
    try:
        for t in starters:
            t.start()
        for t in starters:
            t.join(60)
        with replication.connect(
            "PYROGROUPNAME:named", ns_host="127.0.0.1", ns_port=ns_port, timeout=20
        ) as counter:
            assert sorted(proxy_info(counter).members) == sorted(addrs)
            assert counter.add(2) == 2
            assert counter.get() == 2
        replicas[2].stop()
        ref = lookup("named", "127.0.0.1", ns_port)
        assert sorted(ref.members) == sorted(addrs[:2])
        with pytest.raises(replication.GroupUnavailable, match="knows no replica"):
            lookup("unknown-group", "127.0.0.1", ns_port)
    finally:
        for r in replicas:
            r.stop()
        daemon.shutdown()
        loop.join(5)


def test_no_name_server_is_a_named_error_that_says_what_to_do():
    with pytest.raises(replication.GroupUnavailable, match="no Pyro5 name server"):
        replication.connect("PYROGROUPNAME:x", ns_host="127.0.0.1", ns_port=_free_tcp_port())


def test_a_plain_pyro5_proxy_can_call_a_replica():
    from Pyro5 import api, config

    addrs = [f"127.0.0.1:{p}" for p in free_udp_ports(3)]
    replicas = [replication.Replica(Counter, "plain", a, addrs) for a in addrs]
    starters = [threading.Thread(target=r.start) for r in replicas]
    try:
        for t in starters:
            t.start()
        for t in starters:
            t.join(60)
        old, config.SERIALIZER = config.SERIALIZER, "msgpack"
        with api.Proxy(f"PYRO:cohort.plain@{addrs[1]}") as p:
            assert p.add(4) == 4
            assert p.get() == 4
            with pytest.raises(AttributeError):
                p.nope()
        config.SERIALIZER = old
        with replication.connect(f"PYROGROUP:plain@{addrs[0]}") as c:
            assert c.get() == 4  # the same replicated state
    finally:
        for r in replicas:
            r.stop()
