"""Join authentication and key transport: only holders of the group secret get in, or get keys.

Why a layer below gms rather than code inside it: every out-of-band message (join, install, probe)
crosses the wire here, so one place can refuse whatever is not authenticated before gms parses it,
and gms keeps its membership logic; gms only carries public keys and keyrings from install to view
record. Why a pre-shared secret with a challenge: the secret never travels, a captured join cannot
be replayed (the member's nonce is fresh), and the member's answer is authenticated too, so a joiner
detects a man in the middle (mutual authentication). Why X25519 on top: view keys travel encrypted
to each member's ephemeral key, so a member that left, holding the secret and old keys, still
cannot read the key of a view it is not in (forward secrecy), and recordings of the group stay
unreadable even if the secret leaks later.

Theory of operation
- Join (nJ, nC: 16 random bytes; mac = HMAC-SHA256 under the secret's `join` key):
      joiner J -> contact C   [HELLO, nJ, suite]                                (clear)
      C -> J                  [CHALLENGE, nJ, nC, suiteC, mac(C, J, nJ, nC, suiteC)]
      J -> C                  [AUTH, nJ, nC, pubJ, join, mac(J, C, nJ, nC, pubJ, suite, join)]
  J answers only a challenge for its latest nonce whose MAC verifies (else `auth.bad_challenge`;
  `refuse_after` of them with no good one and J emits `Refused`: its secret is not the group's).
  C passes the join up to gms (with pubJ appended) only for the nonces it issued to J, single use,
  a verifying MAC, and a join naming J's own address. `suite` (the layer names and protection
  settings, set by compose) is in both MACs: a member running a weaker stack is refused (S16).
- Sealing: every other out-of-band message leaves as [SEALED, msgpack(body), mac_oob(src, dest,
  body)]. An unsealed or badly sealed one is counted and dropped; an unsealed join is answered
  with [REFUSED, reason] in clear (rate-limited) so a joiner without auth learns why.
- Key transport: gms attaches to each INSTALL the members' public keys and the key it chose (our
  `fresh` key for a view it installs, the current key when it relays the current view). For a
  recipient in the view, the key becomes a grant (`keyring.wrap`: X25519 between installer and
  recipient, bound to the view id, both addresses and both public keys); the key never leaves in
  clear. The recipient accepts an install naming it only if it lists its own public key and the
  grant opens; it hands gms a Keyring for the view with the install. No grant goes to anyone
  outside the view, so a refused or excluded process never receives key material.
- A coordinator that installs a view it is not in (it leaves) would know the next view's key; it
  delegates instead: the install goes, without a key, to the view's first member only, which
  installs it with its own fresh key and pushes it, with grants, to the other members.
- A view configured statically (not formed by joins) has no exchanged key: its key is derived from
  the secret (`keyring.boot_key`) and members announce their public keys (PUB) so the next view
  change can transport a fresh key. A member whose announcement was lost finds its key missing
  from the next install; it sends its key (PUB) to the installer, whose relays then carry a grant.

Randomness (keys, nonces) comes from `Params.entropy`, os.urandom by default, not from `ctx.rng`:
the seeded RNG is predictable by design. Protocol decisions never depend on these bytes, so a
simulation still replays from its seed. Requires: net. Provides: keyx (for encrypt). Needs gms
above (views): keys are rebuilt at each view change.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import msgpack
from cohort.stack.events import (
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Keys,
    OldView,
    Oob,
    Refused,
    Send,
    Timer,
)
from cohort.stack.layer import Layer
from cohort.stack.layers.gms_wire import OOB_INSTALL, OOB_JOIN, OOB_REFUSED, view_from_wire
from cohort.stack.layers.keyring import (
    KEY_LEN,
    MIN_SECRET,
    NONCE_LEN,
    boot_key,
    derive,
    grant_context,
    mac,
    mac_ok,
    new_ring,
    unwrap,
    valid_pub,
    wrap,
)

HELLO, CHALLENGE, AUTH, SEALED, PUB = "hello", "challenge", "auth", "sealed", "pub"
DELEGATE = "delegate"
NONCE = 16
#: contacts answer one HELLO per address per this many seconds, and remember this many challenges
HELLO_GAP = 0.01
MAX_CHALLENGES = 256
REFUSAL_GAP = 0.5
MAX_SUITE = 512

NEEDS_SECRET = (
    "the auth layer needs the group secret: params={'auth': {'secret': <at least 16 random "
    "bytes, the same on every member>}} (cohort serve --secret-file FILE; make one with "
    "`head -c 32 /dev/urandom > FILE`)"
)
PLAIN_REFUSAL = (
    "this group admits only authenticated members: join with the secure stack and the group's "
    "secret (stack='secure', params={'auth': {'secret': ...}}, or cohort serve --secret-file)"
)

_packb = msgpack.Packer(use_bin_type=True).pack


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


@dataclass(frozen=True, slots=True)
class Params:
    #: the pre-shared group secret: the membership credential (at least 16 random bytes)
    secret: bytes = field(default=b"", repr=False)
    #: the group's name, bound into every key and MAC (cohort.stack.transport.group.join sets it)
    group: str = ""
    #: the stack's layer names and protection settings; filled in by compose (joins must match)
    suite: str = ""
    #: challenges from contacts that fail to verify, with none verifying, before we give up
    refuse_after: int = 3
    #: seconds between public-key announcements in a statically configured view
    pub_interval: float = 0.25
    #: source of key material and nonces (tests may inject a seeded one)
    entropy: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        if type(self.secret) is not bytes:
            raise ValueError("the group secret must be bytes (read the secret file in binary)")
        if 0 < len(self.secret) < MIN_SECRET:
            raise ValueError(f"the group secret is {len(self.secret)} bytes; {NEEDS_SECRET}")
        if self.refuse_after < 1:
            raise ValueError("refuse_after must be at least 1")

    def ready(self) -> str | None:
        """What is missing for a working layer (compose asks when a stack is configured)."""
        return None if self.secret else NEEDS_SECRET


class Auth(Layer):
    name: ClassVar[str] = "auth"
    provides: ClassVar[frozenset[str]] = frozenset({"keyx"})
    requires: ClassVar[frozenset[str]] = frozenset({"net"})
    requires_above: ClassVar[frozenset[str]] = frozenset({"views"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Deliver, DeliverSend, ControlIn, OldView})
    passes_down: ClassVar[frozenset[type]] = frozenset({Cast, Send, Control})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        if not params.secret:
            raise ValueError(NEEDS_SECRET)
        self.sec = derive(params.secret, params.group)
        self.group = params.group
        self.entropy = params.entropy
        ring = view.keys
        if ring is None:  # a joining view, or a view configured statically (boot)
            boot = view.n > 1
            key = boot_key(self.sec, view.vid, view.members) if boot else self.entropy(KEY_LEN)
            ring = new_ring(self.group, self.entropy(KEY_LEN), key, dict.fromkeys(view.members))
            ring = replace(ring.with_pub(ctx.me, ring.pub), boot=boot)
        self.ring = ring
        self.fresh = self.entropy(KEY_LEN)
        self.pending: dict[str, tuple[bytes, list]] = {}  # joiner side: contact -> (nJ, join)
        self.bad = 0
        self.good = False
        self.refused = False
        self.challenges: dict[str, tuple[bytes, bytes, float]] = {}  # contact side: by joiner
        self.refusals: dict[str, float] = {}
        self.delegated: dict[tuple, bytes] = {}  # views installed on a leaver's behalf: their key
        ctx.up(Keys(ring, self.fresh))
        if ring.boot:
            self._announce(ask=True)
            ctx.set_timer(params.pub_interval, "pub")

    # --- down: seal, challenge, grant ------------------------------------------------------------

    def down(self, ev: Any) -> None:
        if type(ev) is not Oob:
            self.ctx.down(ev)
            return
        peer, msg = ev.peer, ev.msg
        kind = msg[0]
        if kind == OOB_JOIN:
            nj = self.entropy(NONCE)
            self.pending[peer] = (nj, msg)
            self.ctx.down(Oob(peer, [HELLO, nj, self.params.suite]))
        elif kind == OOB_INSTALL:
            self._send_install(peer, msg)
        else:
            self._seal(peer, msg)

    def _seal(self, peer: str, body: list) -> None:
        data = _packb(body)
        tag = mac(self.sec.oob, SEALED, self.group, self.ctx.me, peer, data)
        self.ctx.down(Oob(peer, [SEALED, data, tag]))

    def _send_install(self, peer: str, msg: list) -> None:
        """msg: [INSTALL, view wire, joiners, ballot] (+ [pubs, key] from a secure gms)."""
        body = list(msg[:5])
        key = msg[5] if len(msg) > 5 else None
        members = list(msg[1][2])
        if key is None or len(body) < 5 or peer not in members:
            self._seal(peer, [*body, *([None] * (6 - len(body)))])  # no key for non-members
            return
        pubs = body[4]
        if self.ctx.me not in members:  # we leave with this install: delegate the new key
            if peer == members[0]:
                self._seal(peer, [*body, DELEGATE])
            else:
                self.ctx.count("auth.delegated")
            return
        vid = msg[1][:2]
        self._seal(peer, [*body, self._grant(vid, peer, pubs[members.index(peer)], key)])

    def _grant(self, vid: Any, peer: str, peer_pub: Any, key: bytes) -> list | None:
        if not valid_pub(peer_pub):
            self.ctx.count("auth.no_pub")  # a static view whose announcement we missed
            return None
        context = grant_context(self.group, vid, self.ctx.me, peer, self.ring.pub, peer_pub)
        nonce = self.entropy(NONCE_LEN)
        return [nonce, wrap(self.sec, self.ring, peer_pub, context, key, nonce)]

    # --- up: verify ------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Oob:
            try:
                self._receive(ev.peer, ev.msg)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError):
                self.ctx.count("auth.bad_oob")
        elif cls is Timer:
            self._tick()
        else:
            self.ctx.up(ev)

    def _receive(self, peer: str, env: Any) -> None:
        kind = env[0] if type(env) is list and env else None
        if kind == SEALED and len(env) == 3:
            self._on_sealed(peer, env[1], env[2])
        elif kind == HELLO and len(env) == 3:
            self._on_hello(peer, env[1], env[2])
        elif kind == CHALLENGE and len(env) == 5:
            self._on_challenge(peer, *env[1:])
        elif kind == AUTH and len(env) == 6:
            self._on_auth(peer, *env[1:])
        else:
            self.ctx.count("auth.unauthenticated")
            if kind == OOB_JOIN:
                self._refuse_plain(peer)

    def _on_hello(self, peer: str, nj: Any, suite: Any) -> None:
        if type(nj) is not bytes or len(nj) != NONCE or type(suite) is not str:
            self.ctx.count("auth.bad_oob")
            return
        now, old = self.ctx.now, self.challenges.get(peer)
        if old is not None and now - old[2] < HELLO_GAP:
            self.ctx.count("auth.throttled")
            return
        self.challenges.pop(peer, None)
        if len(self.challenges) >= MAX_CHALLENGES:
            del self.challenges[next(iter(self.challenges))]
        nc = self.entropy(NONCE)
        self.challenges[peer] = (nj, nc, now)
        self.ctx.count("auth.challenged")  # not a drop: anyone may ask (watch it for floods)
        s, me = self.params.suite, self.ctx.me
        tag = mac(self.sec.join, CHALLENGE, self.group, me, peer, nj, nc, s)
        self.ctx.down(Oob(peer, [CHALLENGE, nj, nc, s, tag]))

    def _on_challenge(self, peer: str, nj: Any, nc: Any, suite: Any, tag: Any) -> None:
        p = self.pending.get(peer)
        if p is None or p[0] != nj or type(nc) is not bytes or len(nc) != NONCE:
            self.ctx.count("auth.stale_challenge")
            return
        if type(suite) is not str or len(suite) > MAX_SUITE:
            self.ctx.count("auth.bad_oob")
            return
        if not mac_ok(self.sec.join, tag, CHALLENGE, self.group, peer, self.ctx.me, nj, nc, suite):
            self.ctx.count("auth.bad_challenge")
            self.ctx.trace(f"auth: {peer}'s challenge does not verify (other secret, or a MitM)")
            self.bad += 1
            if self.bad >= self.params.refuse_after and not self.good:
                self._refuse(
                    f"{peer} answered our join with a proof made with another group secret "
                    f"({self.bad} answers, none verified): check that this member's secret and "
                    f"group name {self.group!r} are the group's (or a man in the middle is on the "
                    "path)"
                )
            return
        if suite != self.params.suite:
            self.ctx.count("auth.suite_mismatch")
            self._refuse(
                f"the group's members run stack suite {suite!r}, we run {self.params.suite!r}: "
                "join with the same stack and protection settings (no downgrade)"
            )
            return
        self.good = True
        del self.pending[peer]
        data, pub, s, me = _packb(p[1]), self.ring.pub, self.params.suite, self.ctx.me
        tag = mac(self.sec.join, AUTH, self.group, me, peer, nj, nc, pub, s, data)
        self.ctx.down(Oob(peer, [AUTH, nj, nc, pub, data, tag]))

    def _on_auth(self, peer: str, nj: Any, nc: Any, pub: Any, data: Any, tag: Any) -> None:
        ch = self.challenges.get(peer)
        if ch is None or ch[0] != nj or ch[1] != nc:
            self.ctx.count("auth.stale_join")
            return
        if not valid_pub(pub) or type(data) is not bytes:
            self.ctx.count("auth.bad_oob")
            return
        s, me = self.params.suite, self.ctx.me
        if not mac_ok(self.sec.join, tag, AUTH, self.group, peer, me, nj, nc, pub, s, data):
            self.ctx.count("auth.bad_join")  # wrong secret, or another stack suite
            return
        del self.challenges[peer]  # single use: a captured AUTH cannot be replayed
        body = _unpackb(data)
        if type(body) is not list or len(body) < 6 or body[0] != OOB_JOIN or body[1] != peer:
            self.ctx.count("auth.bad_join")
            return
        self.ctx.up(Oob(peer, [*body[:6], pub]))

    def _on_sealed(self, peer: str, data: Any, tag: Any) -> None:
        if type(data) is not bytes or not mac_ok(
            self.sec.oob, tag, SEALED, self.group, peer, self.ctx.me, data
        ):
            self.ctx.count("auth.bad_mac")
            return
        body = _unpackb(data)
        if type(body) is not list or not body:
            self.ctx.count("auth.bad_oob")
            return
        if body[0] == OOB_INSTALL:
            self._on_install(peer, body)
        elif body[0] == PUB:
            self._on_pub(peer, body)
        else:
            self.ctx.up(Oob(peer, body))

    def _on_install(self, peer: str, body: list) -> None:
        if len(body) != 6:
            self.ctx.count("auth.bad_install")
            return
        _, w, joiners, ballot, pubs, grant = body
        v = view_from_wire(w)
        if v is None:
            self.ctx.count("auth.bad_install")
            return
        if v.vid <= self.view.vid:  # a duplicate or a relay of a view we are past (gms agrees)
            self.ctx.count("auth.stale_install")
            return
        plain = [OOB_INSTALL, w, joiners, ballot]
        me, members = self.ctx.me, v.members
        if me not in members:  # tells us we are out of the group: no key for us
            self.ctx.up(Oob(peer, plain))
            return
        if (
            type(pubs) is not list
            or len(pubs) != len(members)
            or not all(p is None or valid_pub(p) for p in pubs)
        ):
            self.ctx.count("auth.bad_install")
            return
        mine = pubs[members.index(me)]
        if grant == DELEGATE and mine is None:  # a delegate needs no grant: it has its own key
            mine = pubs[members.index(me)] = self.ring.pub
        if mine is None:  # the installer never learned our key (a static view's PUB was lost):
            self.ctx.count("auth.key_unknown")  # tell it, and its next relay carries a grant
            self._seal(peer, [PUB, self.ring.pub, False])
            return
        if mine != self.ring.pub:  # for an earlier incarnation of our address, or tampered with
            self.ctx.count("auth.not_for_me")
            return
        if grant == DELEGATE:  # (sealed: from a member; a new incarnation of us fails above)
            if members[0] != me:
                self.ctx.count("auth.bad_install")
                return
            key = self.delegated.get(v.vid)
            if key is None:  # (a duplicate of the delegation must not make a second key)
                key = self.delegated[v.vid] = self.fresh
                self.fresh = self.entropy(KEY_LEN)  # that one is spent
                self.ctx.up(Keys(self.ring, self.fresh))
            for m, p in zip(members, pubs):
                if m != me:
                    self._seal(m, [*plain, pubs, self._grant(v.vid, m, p, key)])
        else:
            if peer not in members or type(grant) is not list or len(grant) != 2:
                self.ctx.count("auth.no_grant")
                return
            spub = pubs[members.index(peer)]
            context = grant_context(self.group, v.vid, peer, me, spub, mine)
            key = unwrap(self.sec, self.ring, spub, context, grant[0], grant[1])
            if key is None:
                self.ctx.count("auth.bad_grant")
                return
        ring = self.ring.successor(key, dict(zip(members, pubs)))
        self.ctx.up(Oob(peer, [*plain, pubs, ring]))

    # --- refusals --------------------------------------------------------------------------------

    def _refuse(self, reason: str) -> None:
        if not self.refused and not self.view.primary:
            self.refused = True
            self.ctx.trace(f"auth: join refused: {reason}")
            self.ctx.up(Refused(reason))

    def _refuse_plain(self, peer: str) -> None:
        now = self.ctx.now
        if now - self.refusals.get(peer, -1e18) < REFUSAL_GAP:
            return
        if len(self.refusals) >= MAX_CHALLENGES:
            del self.refusals[next(iter(self.refusals))]
        self.refusals[peer] = now
        self.ctx.down(Oob(peer, [OOB_REFUSED, PLAIN_REFUSAL]))

    # --- public keys of a statically configured view ---------------------------------------------

    def _announce(self, ask: bool) -> None:
        for m in self.view.members:
            if m != self.ctx.me and (ask or self.ring.pubs.get(m) is None):
                self._seal(m, [PUB, self.ring.pub, True])

    def _on_pub(self, peer: str, body: list) -> None:
        """A member's public key, for a view that does not list it (announced in a static view,
        or sent by a member that got an install lacking it)."""
        if peer not in self.view.members:
            self.ctx.count("auth.stale_pub")  # sent in a view we have left since
            return
        pub = body[1] if len(body) == 3 else None
        if not valid_pub(pub):
            self.ctx.count("auth.bad_oob")
            return
        known = self.ring.pubs.get(peer)
        if known is None:
            self.ring = self.ring.with_pub(peer, pub)
            self.ctx.up(Keys(self.ring, self.fresh))
        elif known != pub:
            self.ctx.count("auth.pub_changed")
            return
        if body[2] is True and self.ring.boot:
            self._seal(peer, [PUB, self.ring.pub, False])

    def _tick(self) -> None:
        if any(p is None for p in self.ring.pubs.values()):
            self._announce(ask=False)
            self.ctx.set_timer(self.params.pub_interval, "pub")

    def dump(self) -> dict:
        return {
            "boot": self.ring.boot,
            "joining": sorted(self.pending),
            "challenged": len(self.challenges),
        }


def fmt_header(h: Any) -> str:
    return "-"  # auth pushes no header: it works on out-of-band messages only
