"""Hosts for real-process tests: one network namespace per replica, joined by a bridge.

Why namespaces: loss, partitions and delays applied with iptables inside a namespace hit only that
host's packets, through the kernel's real IP stack, as on a LAN. Needs root, `ip` (iproute2) and
`iptables`; `available()` says why not. Every namespace, veth and the bridge are named with a
per-run tag and removed by `close()`, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = f"cohort-probe-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "cannot create network namespaces here"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Hosts:
    """`n` namespaces with addresses 10.77.<k>.1 .. n on a bridge whose own address is .254."""

    def __init__(self, n: int, subnet: int = 77) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.bridge = f"cbr{self.tag}"
        self.names = [f"cohort-{self.tag}-{i}" for i in range(n)]
        self.ips = [f"10.{subnet}.{int(self.tag[:2], 16)}.{i + 1}" for i in range(n)]
        self.prefix = self.ips[0].rsplit(".", 1)[0]
        try:
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _sh("ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
            _sh("ip", "link", "set", self.bridge, "up")
            for i, (ns, ip) in enumerate(zip(self.names, self.ips)):
                host, peer = f"cv{self.tag}{i}", f"cp{self.tag}{i}"
                _sh("ip", "netns", "add", ns)
                _sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
                _sh("ip", "link", "set", peer, "netns", ns)
                _sh("ip", "link", "set", host, "master", self.bridge)
                _sh("ip", "link", "set", host, "up")
                _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", peer)
                _sh("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
                _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def prefix_cmd(self, i: int) -> list[str]:
        """Prepend to a command to run it on host `i`."""
        return ["ip", "netns", "exec", self.names[i]]

    def drop_udp_in(self, i: int, probability: float) -> None:
        """Drop this fraction of the UDP datagrams host `i` receives (the group's traffic)."""
        _sh(
            *self.prefix_cmd(i),
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            str(probability),
            "-j",
            "DROP",
        )

    def clear_rules(self, i: int) -> None:
        _sh(*self.prefix_cmd(i), "iptables", "-F", "INPUT")

    def close(self) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
