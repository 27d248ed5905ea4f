"""The engine's state transfer: the donor streams one snapshot, cut at a position of the total
order, to every member that needs it (`cohort.replication.transfer.Session`), and the joiner
rebuilds it (`SnapshotReader`) and installs it at the cut, then applies what it buffered.

Why a role of its own: the transfer protocol (HDR, CHUNK, ACK, END, REQ) is independent of
ordered execution; it needs only the engine's view, its readiness, its buffered deliveries and
`_apply`. `StateTransfer` is a mixin of `cohort.replication.engine.Engine`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgpack
from cohort.orb import errors as st
from cohort.replication.cache import ReplyCache
from cohort.replication.messages import ACK, INV, PUPD, QRY, REQ
from cohort.replication.transfer import Incoming, Session
from cohort.state import snapshot as snap
from cohort.state import stream

log = logging.getLogger("cohort.replica")
_pack = msgpack.Packer(use_bin_type=True).pack


class StateTransfer:
    """Donor and joiner sides of state transfer (a mixin of `Engine`; see the module docstring)."""

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

    def _on_request(self, origin: str, msg: list) -> None:
        """REQ [12, vid]: a joiner whose transfer failed its checks asks its donor again."""
        if self.ready and self.view is not None and tuple(msg[1]) == tuple(self.view.vid):
            self.served.discard(origin)
            for session in self.sessions.values():
                session.recipients.pop(origin, None)
            self._serve([origin])

    # --- state transfer: donor side --------------------------------------------------------------

    def _donate(self, origin: str) -> None:
        """`origin`'s STATUS arrived. Once every member new in this view has sent its own, the
        youngest continuing member sends the state to those that serve our class, as one
        snapshot, without waiting for the whole round (the coordinator, the oldest, which
        clients call and which sequences, keeps its time for calls). Waiting for the newcomers'
        statuses, not just the view, is what keeps our state from a replica of another class."""
        waiting = self.newcomers_waiting
        if origin not in waiting:
            return
        waiting.discard(origin)
        if waiting or not self.ready or not self.prev_members:
            return
        donor = next((m for m in reversed(self.view.members) if m in self.prev_members), None)
        if donor != self.me:
            return
        newcomers = [m for m in self.view.members if m not in self.prev_members]
        self._serve([m for m in newcomers if self.identities.get(m) == self.identity])

    def _serve(self, members: list[str]) -> None:
        """Send the state to `members` (once per view each): the members of one event-loop
        tick share one snapshot."""
        members = [m for m in members if m not in self.served and m != self.me]
        if not members:
            return
        self.served.update(members)
        first = not self.serve_pending
        self.serve_pending.extend(members)
        if self._schedule is None:
            self._start_session()
        elif first:
            self._schedule(self._start_session)

    def _start_session(self) -> None:
        members, self.serve_pending = self.serve_pending, []
        view = self.view
        members = [m for m in members if view is not None and m in view.members]
        if not members or not self.ready:
            return
        pending = list(self.passive_pending.values())
        obj = self.obj
        state = obj.get_state() if hasattr(obj, "get_state") else obj.__dict__
        frozen = stream.freeze([state, self.cache.dump(), self.applied, pending])
        xid = int.from_bytes(self._entropy(4), "big")
        session = Session(xid, tuple(view.vid), self.pos, frozen, self._send_msg)
        self.sessions[xid] = session
        log.info(
            "%s: sending state to %s, cut at view %s pos %d (applied %d)",
            self.me,
            members,
            tuple(view.vid),
            self.pos,
            self.applied,
        )
        for m in members:
            session.add(m)

    def _send_msg(self, member: str, msg: list) -> None:
        self._send(member, _pack(msg))

    # --- state transfer: joiner side -------------------------------------------------------------

    def _on_header(self, origin: str, msg: list) -> None:
        if self.ready or self.view is None:
            return
        _, xid, vid, pos = msg[:4]
        if self.incoming is not None and self.incoming.xid == xid:
            return  # the donor resumed this transfer after a view change
        if tuple(vid) not in self.views[self.continuous_since :]:
            return  # cut in a view whose deliveries we may not all have
        self.incoming = Incoming(xid, origin, tuple(vid), pos, self._clock())

    def _on_chunk(self, origin: str, msg: list) -> None:
        inc = self.incoming
        if inc is None or inc.xid != msg[1] or self.ready:
            return
        try:
            inc.reader.add(msg[2], msg[3])
        except snap.SnapshotError as e:
            log.error("%s: bad state chunk from %s: %s; asking again", self.me, inc.donor, e)
            return self._restart_transfer()
        self._send(inc.donor, _pack([ACK, inc.xid, msg[2]]))
        if inc.reader.received % 64 == 0:  # large states: a line every 2 MiB
            log.info(
                "%s: state transfer from %s: %d bytes so far",
                self.me,
                inc.donor,
                inc.reader.bytes_received,
            )

    def _on_end(self, origin: str, msg: list) -> None:
        inc = self.incoming
        if inc is None or inc.xid != msg[1] or self.ready:
            return
        _, _xid, chunks, size, digest = msg
        try:
            value = inc.reader.finish(chunks, size, digest)
        except snap.SnapshotError as e:
            log.error("%s: bad state from %s: %s; asking again", self.me, inc.donor, e)
            return self._restart_transfer()
        self.incoming = None
        self._send(inc.donor, _pack([ACK, inc.xid, chunks]))  # the END arrived
        if inc.vid == tuple(self.view.vid) and self.pos < inc.pos:
            # Install only once we delivered up to the cut ourselves: then our order of those
            # messages is the donor's (both followed the sequencer), even if the donor crashes.
            self.complete = (inc.donor, inc.vid, inc.pos, value, size, inc.started)
        else:
            self._install(inc.donor, inc.vid, inc.pos, value, size, inc.started)

    def _restart_transfer(self) -> None:
        inc, self.incoming = self.incoming, None
        if inc is not None:
            self._send(inc.donor, _pack([REQ, list(self.view.vid)]))

    def _install(
        self, donor: str, vid: tuple, pos: int, value: list, size: int, started: float
    ) -> None:
        user, cache, applied, pending = value
        obj = self._construct()
        if obj is None:
            return
        try:
            self._set_state_value(obj, user)
        except Exception as e:
            return self._fail(
                "user",
                f"installing the state received from {donor} raised {type(e).__name__}: {e} "
                f"({self.cls.__qualname__}.set_state, or its attributes)",
            )
        self.obj = obj  # the custodial state, if any, is replaced only now
        self.version += 1
        self.checks.on_install()
        self.cache = ReplyCache.load(cache)
        self.applied = applied
        self.passive_pending = OrderedDict(((m[1], m[2]), m) for m in pending)
        self.incoming = self.complete = None
        self.ready = True
        self.held_vid = self.seen = tuple(self.view.vid)
        self.unavailable = None
        seconds = self._clock() - started
        self.xfer_log.append(
            {"donor": donor, "bytes": size, "vid": list(vid), "pos": pos, "seconds": seconds}
        )
        log.info(
            "%s: state received from %s (%d bytes in %.2f s), cut at view %s pos %d",
            self.me,
            donor,
            size,
            seconds,
            vid,
            pos,
        )
        since = self.continuous_since  # view ids of an earlier lineage may repeat
        later = self.views[since:]
        cut = since + later.index(vid) if vid in later else len(self.views) - 1
        last = len(self.views) - 1
        buffered, self.buffer = self.buffer, []
        for vi, p, _origin, msg in buffered:
            # updates before the cut in this view are in the snapshot but maybe not yet uniform:
            # hold their replies (and retries of them) until they are Safe here
            if vi == last and vi == cut and p < pos and msg[0] in (INV, PUPD) and p >= self.safe:
                key = (msg[1], msg[2]) if msg[0] == INV else (msg[2], msg[3])
                entry = self.cache.get(*key)
                if key not in self.unsafe_keys and entry is not None:
                    self.unsafe_keys.add(key)
                    self.unsafe.append((p, key, None, *entry))
        for key in [k for k in self.waiters if len(k) == 2 and self.cache.get(*k) is not None]:
            if key not in self.unsafe_keys:
                self._settle(key, -1, current=True)  # executed in an earlier view: uniform
        for vi, p, origin, msg in buffered:
            if vi < cut or (vi == cut and p < pos):
                if msg[0] == QRY and origin == self.me:  # answered by nobody: let the client retry
                    for r in self.waiters.pop((msg[1], msg[2], "q"), ()):
                        r(st.RETRY, f"{self.me} was receiving its state")
                continue
            self._apply(p, origin, msg, current=(vi == last))
        self._upcall(self.view)
        if self.info.style == "passive" and self.view.members[0] == self.me:
            for msg in list(self.passive_pending.values()):
                self._passive_execute(msg)
