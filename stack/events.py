"""The vocabulary shared by layers, runtime, simulator and transports.

Why: one typed set of events instead of dicts, so a layer's `match` says exactly what it handles and
a misspelt field fails at construction. Inside the stack, members are named by their *rank* in the
current view (small ints, cheap on the wire); the endpoint translates ranks to addresses at the
application boundary.

Data events carry `hdrs`, the list of per-layer headers: each layer appends one header going down
(None when it has nothing to say) and pops its own going up. The data-path events (Cast, Send,
Deliver, DeliverSend, Control, ControlIn, Packet, Recv) are not frozen: profiling showed frozen construction at a
fifth of the per-message cost, and the top layer rewrites a delivery's origin in place. Every other
event is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Rank = int
Header = tuple | list | None

# --- data, down and up ---------------------------------------------------------------------------


@dataclass(slots=True)
class Cast:
    """Multicast `payload` to the view (down)."""

    payload: bytes
    hdrs: list


@dataclass(slots=True)
class Send:
    """Reliable unicast to `dest` (down)."""

    dest: Rank
    payload: bytes
    hdrs: list


@dataclass(slots=True)
class Deliver:
    """A multicast from `origin` (up). At the application boundary `origin` is an address."""

    origin: Any
    payload: bytes
    hdrs: list


@dataclass(slots=True)
class DeliverSend:
    """A unicast from `origin` (up)."""

    origin: Any
    payload: bytes
    hdrs: list


@dataclass(slots=True)
class Control:
    """Unreliable, unordered message between peer layers (down): `dest` None means every member.

    Used for heartbeats, NAKs, stability gossip and flush coordination, which carry their own
    retransmission logic; layers below the sender push None headers for it.
    """

    dest: Rank | None
    payload: bytes
    hdrs: list


@dataclass(slots=True)
class ControlIn:
    """A Control message arriving from `src` (up)."""

    src: Rank
    payload: bytes
    hdrs: list


@dataclass(slots=True, frozen=True)
class Oob:
    """Out-of-view message to or from a peer named by address (join, view install).

    Layers other than gms pass it through untouched; it carries no per-layer headers.
    """

    peer: str
    msg: Any


# --- application boundary ------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class View:
    """A new view is installed (up). Emitted by gms, it ends the current view for every layer."""

    view: Any  # cohort.stack.view.View


@dataclass(slots=True, frozen=True)
class Block:
    """The group is about to change views: stop casting and answer BlockOk (up)."""


@dataclass(slots=True, frozen=True)
class BlockOk:
    """The application has stopped casting in this view (down)."""


@dataclass(slots=True, frozen=True)
class Leave:
    """Leave the group gracefully (down)."""


@dataclass(slots=True, frozen=True)
class Exit:
    """This endpoint has left the group or was excluded for good (up)."""

    reason: str


@dataclass(slots=True, frozen=True)
class Safe:
    """The first `count` messages delivered in the current view are uniform (up, total order)."""

    count: int


@dataclass(slots=True, frozen=True)
class Backpressure:
    """The flow layer's window of unstable casts is full (`blocked`) or has room again (up).

    While blocked the application should stop casting (`cohort.stack.transport.group.Group.cast` awaits); casts made
    anyway are queued in the flow layer, not lost.
    """

    blocked: bool


@dataclass(slots=True, frozen=True)
class Refused:
    """The group refused to admit us, or our credentials do not match its own (up, to the
    application; `cohort.stack.transport.group.join` raises `JoinRefused` with `reason`, which says what to check)."""

    reason: str


# --- between layers ------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Suspect:
    """The complete set of ranks the failure detector now believes failed (up to gms).

    The set can shrink: a member suspected after a silence is forgiven when heard again, so a
    pause or a healed partition does not cost the group its majority.
    """

    ranks: frozenset[Rank]
    #: those among `ranks` known to be dead for certain (a transport saw their process's TCP
    #: connection closed by its kernel): no lease granted to them needs waiting out
    dead: frozenset[Rank] = frozenset()


@dataclass(slots=True, frozen=True)
class Verify:
    """Another member suspects these ranks: confirm only if we have not heard them lately (down).

    With `force`, suspect them for the rest of the view whatever we hear (they heartbeat but do
    not take part in the flush, so hearing them proves nothing).
    """

    ranks: frozenset[Rank]
    force: bool = False
    #: the reporter knows them dead for certain (see `Suspect.dead`); implies `force`
    dead: bool = False


@dataclass(slots=True, frozen=True)
class Lease:
    """Until virtual time `until` a majority of the view is known to be listening to us (up)."""

    until: float


@dataclass(slots=True, frozen=True)
class Stable:
    """Per-origin counts of casts received by every member (`mins`), by some member (`maxs`), and
    by a majority of the view's acceptors (`quorum`; empty when the stack does not compute it)."""

    mins: tuple[int, ...]
    maxs: tuple[int, ...]
    quorum: tuple[int, ...] = field(default=(), compare=False)


@dataclass(slots=True, frozen=True)
class FlushStart:
    """gms asks the flush layer to block and report (up). `attempt` orders coordinators' tries."""

    attempt: tuple


@dataclass(slots=True, frozen=True)
class FlushReport:
    """Per-origin counts of casts passed up so far; delivery is frozen there (down to gms)."""

    attempt: tuple
    counts: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class FlushCut:
    """Deliver exactly `cut[origin]` casts of each origin in this view, then report done (up)."""

    attempt: tuple
    cut: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Fetch:
    """Retransmit-request target for nak: obtain casts up to `cut` from any holder (down)."""

    cut: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class FlushDone:
    """The flush layer has delivered exactly the cut (down to gms)."""

    attempt: tuple


@dataclass(slots=True, frozen=True)
class Blocked:
    """The view is ending: the failure detector stops renewing others' leases (down)."""


@dataclass(slots=True, frozen=True)
class Granted:
    """Per rank, how much longer a lease we granted may still run (up, once blocked).

    The flush coordinator waits these out for members it excludes, so an excluded member that is
    still alive has stopped delivering before the new view exists.
    """

    remaining: tuple[float, ...]


@dataclass(slots=True, frozen=True)
class Keys:
    """auth hands this view's keyring (`cohort.stack.layers.keyring.Keyring`) and a fresh random key for
    the next view this member may install to encrypt and gms (up; gms consumes it). Local only."""

    ring: Any
    fresh: bytes = field(repr=False)


@dataclass(slots=True, frozen=True)
class OldView:
    """A packet from a member of our previous view arrived, tagged with that view (up to gms)."""

    src: str


# --- wire and time -------------------------------------------------------------------------------


@dataclass(slots=True)
class Packet:
    """Bytes for the transport (down, out of the bottom). `dest` is an address, None = all members."""

    dest: str | None
    data: bytes


@dataclass(slots=True)
class Recv:
    """Bytes from the transport (up, into the bottom); `src` is the sender's address when known."""

    src: str | None
    data: bytes


@dataclass(slots=True, frozen=True)
class Timer:
    """A timer set by this layer with `ctx.set_timer` has fired."""

    now: float
    token: Any
