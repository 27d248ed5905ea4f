"""The engine's status round: at each primary view every member casts its STATUS, and in total
order every member reaches the same decision (`cohort.replication.custody.resolve`): serve from
the youngest ready member, form a fresh object, resume from the latest state held, or say that
no member holds it. The round also refuses a replica of another class than the group's, and
stops a replica whose constructor raises.

Why a role of its own: it is the state-custody argument (docs/replication.md), small enough to
read against it. `StatusRound` is a mixin of `cohort.replication.engine.Engine`: it reads the
engine's view, statuses, identities and readiness, and acts through `_serve` (the transfer role,
`cohort.replication.state_transfer`) and `_ready_here`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgpack
from cohort.orb import errors as st
from cohort.replication import custody
from cohort.replication.custody import READY
from cohort.replication.messages import QRY

log = logging.getLogger("cohort.replica")
_pack = msgpack.Packer(use_bin_type=True).pack


class StatusRound:
    """The status round and its outcomes (a mixin of `Engine`; see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of the engine
        from cohort.replication.engine import Engine as _E

        def __getattr__(self, name: str) -> Any: ...

    def _on_status(self, origin: str, pos: int, msg: list) -> None:
        """Every member casts STATUS [4, vid, held, seen, applied, ready] when it installs a primary
        view. In total order, every member resolves the round at the same point: once the last
        member's status is delivered. `held`: the last primary view the member was ready in (its
        state reflects that view); `seen`: the last primary view it knows had a ready member."""
        _, vid, held, seen, applied, ready = msg[:6]
        ident = msg[6] if len(msg) > 6 and isinstance(msg[6], list) and len(msg[6]) == 2 else None
        if self.view is None or tuple(vid) != tuple(self.view.vid):
            return  # cast for an earlier view: the driver's cast reached the group after it ended
        if origin not in self.view.members or origin in self.statuses:
            return
        if origin == self.me:
            self.status_pos = pos
            if self.safe > pos:
                self.on_safe(self.safe)
        vid = tuple(vid)
        self.statuses[origin] = (_vid(held), _vid(seen), applied, ready)
        self.identities[origin] = (str(ident[0]), str(ident[1])) if ident else self.identity
        self._donate(origin)
        for v in (_vid(seen), vid if ready == READY else None):
            if v is not None and (self.seen is None or v > self.seen):
                self.seen = v
        if not self.resolved and all(m in self.statuses for m in self.view.members):
            self.resolved = True
            self._resolve()

    def _resolve(self) -> None:
        """Act on the status round's decision (`cohort.replication.custody.resolve`), which every
        member reaches alike at the same point of the total order."""
        members, vid = self.view.members, tuple(self.view.vid)
        log.info("%s: status round of view %s: %s", self.me, vid, self.statuses)
        ref = self._reference_identity(members)
        foreign = [m for m in members if self.identities.get(m, ref) != ref]
        if self.me in foreign:
            holder = next(m for m in members if self.identities.get(m) == ref)
            return self._fail(
                "class",
                f"this replica serves {self.identity[1]} (fingerprint {self.identity[0]}), but "
                f"group members such as {holder} serve {ref[1]} (fingerprint {ref[0]}): start it "
                "with the same class (and @replicated version=), or under another group name",
            )
        if foreign:
            log.error("%s: not serving %s: they serve another class", self.me, foreign)
            members = tuple(m for m in members if m not in foreign)
        d = custody.resolve(members, {m: self.statuses[m] for m in members})
        if d.kind == "unavailable":
            self.unavailable = (
                f"no member of view {vid} holds the state of the last primary view that had "
                f"one ({d.latest}); start a replica that held it (states are kept, not reset)"
            )
            log.error("%s: %s", self.me, self.unavailable)
            return
        if d.kind != "serve":
            self.seen = vid  # every member resolves alike: this view has a holder
        if d.kind == "form" and self.me in d.formers:
            self._form()  # every founder starts from the same fresh object
        elif d.kind == "resume":
            self.elected = d.donor
            if d.donor == self.me:
                self._promote(d.latest)
        if d.donor == self.me:
            self._serve(list(d.recipients))

    def _reference_identity(self, members: tuple[str, ...]) -> tuple[str, str]:
        """The class the group serves, alike at every member: that of the oldest ready member,
        else of the oldest that holds a state, else of the oldest member."""
        st_ = self.statuses
        for pick in (lambda m: st_[m][3] == READY, lambda m: st_[m][0] is not None, bool):
            for m in members:
                if pick(m):
                    return self.identities.get(m, self.identity)
        return self.identity

    def _fail(self, kind: str, reason: str) -> None:
        """This replica cannot go on: say why once, serve nothing, let the driver stop it.
        `kind`: "class" (the group serves another class) or "user" (user code raised)."""
        if self.fatal is not None:
            return
        self.fatal = reason
        self.unavailable = reason
        log.error("%s: %s", self.me, reason)
        if self._on_fatal is not None:
            self._on_fatal(kind, reason)

    def _construct(self) -> Any:
        try:
            return self.cls(*self.init_args, **self.init_kwargs)
        except Exception as e:
            self._fail("user", f"{self.cls.__qualname__}() raised {type(e).__name__}: {e}")
            return None

    def _form(self) -> None:
        obj = self._construct()
        if obj is None:
            return
        self.obj = obj
        self.version += 1
        log.info("%s: formed group with %s", self.me, list(self.view.members))
        self._ready_here()

    def _promote(self, held: tuple) -> None:
        log.warning(
            "%s: no member of view %s was ready; resuming from the state this replica held in "
            "view %s (applied %d), the latest any member holds",
            self.me,
            tuple(self.view.vid),
            held,
            self.applied,
        )
        self._ready_here()

    def _ready_here(self) -> None:
        """Serve from the state held here, cut at the start of this view: apply what this view
        delivered so far; calls buffered from earlier views were answered by nobody (retry)."""
        self.ready = True
        self.held_vid = self.seen = tuple(self.view.vid)
        last = len(self.views) - 1
        buffered, self.buffer = self.buffer, []
        for vi, p, origin, msg in buffered:
            if vi == last:
                self._apply(p, origin, msg, current=True)
            elif msg[0] == QRY and origin == self.me:
                for r in self.waiters.pop((msg[1], msg[2], "q"), ()):
                    r(st.RETRY, f"{self.me} was receiving its state")
        self._upcall(self.view)
        if self.info.style == "passive" and self.view.members[0] == self.me:
            for msg in list(self.passive_pending.values()):
                self._passive_execute(msg)


def _vid(v: Any) -> tuple | None:
    return tuple(v) if v else None
