"""Group references: `PYROGROUP:name@host:port,host:port` and `PYROGROUPNAME:name` (name server).

Why a group reference lists members: any one of them can answer and tell the client the current
view, so a reference that names at least one live replica heals itself (FT-CORBA's IOGR idea).
"""

from __future__ import annotations

from dataclasses import dataclass

from cohort.orb.errors import GroupUnavailable

from cohort.net import parse_addr

#: metadata tag a replica registers under in a Pyro5 name server
NS_META = "cohort-group:"


#: the dispatcher's own methods on each replica's group object; the prefix keeps them apart from
#: the user's methods (a replicated class may well have a `status` or an `invoke`)
INVOKE, DESCRIBE, STATUS = "_cohort_invoke", "_cohort_describe", "_cohort_status"


def object_id(group: str) -> str:
    """The Pyro object id of a group's dispatcher in every replica's server."""
    return f"cohort.{group}"


@dataclass(frozen=True)
class GroupRef:
    group: str
    members: tuple[str, ...]

    def __str__(self) -> str:
        return f"PYROGROUP:{self.group}@{','.join(self.members)}"


def parse_ref(
    ref: str | GroupRef, ns_host: str | None = None, ns_port: int | None = None
) -> GroupRef:
    if isinstance(ref, GroupRef):
        return ref
    if ref.startswith("PYROGROUP:"):
        name, sep, addrs = ref[len("PYROGROUP:") :].partition("@")
        members = tuple(a.strip() for a in addrs.split(",") if a.strip())
        if not name or not sep or not members:
            raise ValueError(
                f"a group reference is PYROGROUP:name@host:port[,host:port...]: {ref!r}"
            )
        for a in members:
            parse_addr(a)
        return GroupRef(name, members)
    if ref.startswith("PYROGROUPNAME:"):
        return lookup(ref[len("PYROGROUPNAME:") :], ns_host, ns_port)
    raise ValueError(f"not a group reference (PYROGROUP:... or PYROGROUPNAME:...): {ref!r}")


def lookup(group: str, ns_host: str | None = None, ns_port: int | None = None) -> GroupRef:
    """All replicas of `group` registered in the Pyro5 name server."""
    from Pyro5 import core, errors

    try:
        with core.locate_ns(ns_host, ns_port) as ns:
            found = ns.yplookup(meta_all=[NS_META + group], return_metadata=False)
    except errors.NamingError as e:
        raise GroupUnavailable(
            f"no Pyro5 name server found at {ns_host or 'the configured host'}:{ns_port or 'default port'}"
            f" to resolve group {group!r} ({e}); start one with `python -m Pyro5.nameserver` or"
            " use a PYROGROUP:name@host:port,... reference"
        ) from None
    members = sorted(f"{uri.host}:{uri.port}" for uri in (core.URI(u) for u in found.values()))
    if not members:
        raise GroupUnavailable(
            f"the name server knows no replica of group {group!r}: are the replicas started with "
            "--ns (or ns_host=...)?"
        )
    return GroupRef(group, tuple(members))


def register(group: str, addr: str, ns_host: str | None, ns_port: int | None) -> None:
    from Pyro5 import core

    host, port = parse_addr(addr)
    uri = f"PYRO:{object_id(group)}@{host}:{port}"
    with core.locate_ns(ns_host, ns_port) as ns:
        ns.register(f"{object_id(group)}.{addr}", uri, metadata={NS_META + group})


def unregister(group: str, addr: str, ns_host: str | None, ns_port: int | None) -> None:
    from Pyro5 import core

    try:
        with core.locate_ns(ns_host, ns_port) as ns:
            ns.remove(f"{object_id(group)}.{addr}")
    except Exception:  # best effort at shutdown: the name server may be gone
        pass
