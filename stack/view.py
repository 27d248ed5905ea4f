"""Views: the agreed membership of a group at one point in its history.

Why a record rather than a list: the runtime rebuilds every layer from the view at each installation
(the Ensemble approach), so whatever must outlive a view — the logical clock, the last primary
membership, the previous view — travels in this record.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

ViewId = tuple[int, str]  # (ltime, address of the coordinator that proposed it); lexicographic


@dataclass(frozen=True, slots=True)
class View:
    vid: ViewId
    members: tuple[str, ...]  # ranked, oldest first; rank 0 coordinates and sequences
    primary: bool
    #: confirmed members (not joiners) of the latest primary view of this lineage, this view itself
    #: when primary: the acceptors a successor needs a majority of
    last_primary: tuple[str, ...] = ()
    #: vid of that reference; (0, "") for the seed list of a group still forming
    last_primary_vid: ViewId = (0, "")
    #: vid of the view the installing members came from (None for a first view or a join)
    prev: ViewId | None = None
    #: 32-bit tag stamped on in-view packets so packets of other views are dropped cheaply
    tag: int = field(default=0, compare=False)
    #: the flush ballot that installed this view (relays of the view carry it)
    ballot: tuple | None = field(default=None, compare=False)
    #: this endpoint's key material for the view (secure stacks: a `cohort.stack.layers.keyring.Keyring`,
    #: delivered by the key transport of the install). Local only: never compared, printed or sent
    keys: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tag:
            key = f"{self.vid[0]}|{self.vid[1]}|{'|'.join(self.members)}".encode()
            object.__setattr__(self, "tag", zlib.crc32(key) or 1)

    @property
    def ltime(self) -> int:
        return self.vid[0]

    @property
    def coord(self) -> str:
        return self.members[0]

    @property
    def n(self) -> int:
        return len(self.members)

    def rank(self, addr: str) -> int:
        """Rank of `addr`, or -1 when it is not a member."""
        try:
            return self.members.index(addr)
        except ValueError:
            return -1

    def __str__(self) -> str:
        flag = "" if self.primary else " non-primary"
        return f"({self.vid[0]},{self.vid[1]})[{', '.join(self.members)}]{flag}"


def majority_of(new_members: tuple[str, ...] | set[str], reference: tuple[str, ...]) -> bool:
    """True when `new_members` holds a strict majority of `reference` (the last primary view)."""
    if not reference:
        return True
    inter = len(set(new_members) & set(reference))
    return 2 * inter > len(reference)


def joining_view(addr: str, seeds: tuple[str, ...] = ()) -> View:
    """The pseudo-view of an endpoint that is not yet a member: singleton, non-primary, ltime 0.

    Its majority reference is the seed list, so a group comes into existence (its first primary
    view) only once a majority of the seeds has gathered: two halves of a cluster that start apart
    cannot both create it.
    """
    return View((0, addr), (addr,), primary=False, last_primary=tuple(seeds) or (addr,))


def admits(view: View, seeds: tuple[str, ...], me: str, coord: object) -> bool:
    """Whether `me`, coordinating `view`, may admit a joiner whose component `coord` coordinates.

    A primary view admits anyone. While the group forms (no primary view yet), a seed admits the
    members of components coordinated by a later seed, by itself or by no seed: members flow
    toward the lowest-ranked forming seed they reach, so two forming seeds never take each
    other's members, and any majority of the seeds forms the group, whichever are up. That alone
    does not rule out a fork: a member confirms a proposal in its component's flush, the other
    component absorbs it, and both proposals count it. So a member does not leave its component
    for another non-primary one while in a flush there (gms `_on_install`): no member takes part
    in the flushes of two components, and the first primary view needs a majority of the seeds,
    which any two such views would share. Other non-primary views admit no one.
    """
    if view.primary:
        return True
    if view.last_primary_vid != (0, "") or me not in seeds:
        return False
    return coord not in seeds or seeds.index(coord) >= seeds.index(me)


def watched(view: View | None, me: str) -> str | None:
    """The member `me` watches in `view`: the one ranked just above (rank 0 watches the last).

    A pure function of the view, shared by fast crash detection (`transport.fdsock`) and the
    simulator's model of it."""
    if view is None:
        return None
    members = view.members
    r = view.rank(me)
    if r < 0 or len(members) < 2:
        return None
    return members[r - 1]
