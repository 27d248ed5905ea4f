"""Packet protection: every in-view packet of the group under an AEAD keyed for this view only.

Why one layer right above the key exchange: everything above it (every layer's headers and the
payload) becomes one opaque ciphertext, so an eavesdropper learns neither the data nor the protocol
state (sequence numbers, NAKs, flush ballots), and nothing of it can be replayed with a field
changed. JGroups learned with JGRP-2273 that protecting only the payload leaves sequence numbers
visible: a captured message resent with seqno+1 was accepted. Why per view: the key exchange
(`auth`) gives every view a fresh random key, so a member that left cannot read what follows and
a joiner cannot read what went before (forward and backward secrecy), and a packet of one view
cannot be accepted in another.

Wire: the bottom layer still frames [kind, view tag, sender rank, hdrs, payload]; the tag and rank
stay readable (the runtime routes by tag, the bottom checks the rank against the source address).
This layer's header is the only one on the wire: (KID, SEQ, DEST), and the payload is the AEAD of
msgpack([upper headers, payload]).
- KID: 32-bit id of this view's AEAD key (the key version, `keyring.view_cipher_key`);
- SEQ: this sender's packet counter in the view, over every kind (cast, send, control);
- DEST: -1 for a packet to every member, else the receiver's rank (a unicast replayed to another
  member is rejected).
The nonce is sender rank (4 bytes) ‖ SEQ (8 bytes): unique under the view's key without
randomness (a restarted process never obtains a key of its previous incarnation's views: grants
are bound to each incarnation's X25519 key, so its SEQ restarting at 0 reuses no nonce), and, being
an input of the AEAD, it binds the sender and SEQ as associated data would.
The associated data is (group, view id, view tag, KID, cipher, mode), fixed per view, then the
packet's kind and DEST (a table built once per view). A packet moved to another view, kind, sender
or receiver, or with its sequence number changed, fails authentication.

Theory of operation (receive): (1) header shape, (2) key id, (3) DEST is us or all and fits the
kind, (4) SEQ inside the sender's replay window and not seen, (5) AEAD open; only then is SEQ
marked seen and the plaintext passed up. Every rejection is counted (`encrypt.<reason>`), never
raised, and changes no state. The window is a bitmap of the last `window` sequence numbers per
sender (IPsec style): older packets count as lost; the retransmission layers above resend them
as new packets with new numbers.

`confidential=False` authenticates without encrypting: the payload is plaintext ‖ tag, the tag
being the AEAD of an empty message with the plaintext appended to the associated data.

The keyring comes from the view record (installed views) or from auth's `Keys` event (views made
without an exchange). Until there is one, nothing is sent or accepted (`encrypt.no_key`): never
plaintext. Requires: net, keyx (`compose` refuses an encrypt layer without a key exchange below).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
from cohort.stack import wire
from cohort.stack.events import (
    Cast,
    Control,
    ControlIn,
    Deliver,
    DeliverSend,
    Keys,
    OldView,
    Oob,
    Send,
)
from cohort.stack.layer import Layer
from cohort.stack.layers.keyring import pack, view_cipher_key
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

ALL = -1
SEQ_LIMIT = 1 << 63
TAG_LEN = 16
CIPHERS: dict[str, Any] = {"chacha20-poly1305": ChaCha20Poly1305, "aes-256-gcm": AESGCM}

_nonce = struct.Struct(">IQ").pack
_adp = struct.Struct(">Bi").pack
KINDS = (wire.CAST, wire.SEND, wire.CONTROL)
_packb = msgpack.Packer(use_bin_type=True).pack


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


@dataclass(frozen=True, slots=True)
class Params:
    #: encrypt headers and payload; False only authenticates them (readable on the wire)
    confidential: bool = True
    #: AEAD: "aes-256-gcm" (hardware AES: x86-64 AES-NI, ARMv8 crypto extensions) or
    #: "chacha20-poly1305" (faster in software, for CPUs without AES instructions)
    cipher: str = "aes-256-gcm"
    #: per sender, how many packets back a late (reordered) packet is still accepted
    window: int = 4096

    def __post_init__(self) -> None:
        if self.cipher not in CIPHERS:
            raise ValueError(f"cipher must be one of {', '.join(CIPHERS)}, not {self.cipher!r}")
        if self.window < 64:
            raise ValueError("window must be at least 64 packets")


class Encrypt(Layer):
    name: ClassVar[str] = "encrypt"
    provides: ClassVar[frozenset[str]] = frozenset({"privacy"})
    requires: ClassVar[frozenset[str]] = frozenset({"net", "keyx"})
    Params: ClassVar[type] = Params
    passes_up: ClassVar[frozenset[type]] = frozenset({Oob, OldView})
    passes_down: ClassVar[frozenset[type]] = frozenset({Oob})

    def __init__(self, ctx, view, params: Params) -> None:
        super().__init__(ctx, view, params)
        n = view.n
        self.seq = 0
        self.hi = [-1] * n  # per sender: highest SEQ accepted
        self.mask = [0] * n  # bit k: SEQ hi - k accepted
        self.window = params.window
        self.full = (1 << params.window) - 1
        self.aead: Any = None
        self.kid: int | None = None
        self.ad: dict[tuple[int, int], bytes] = {}  # (kind, dest) -> associated data, sending
        self.ad_in: dict[tuple[int, int], bytes] = {}  # the same, for what we may receive
        self.confidential = params.confidential
        if view.keys is not None:
            self._adopt(view.keys)

    def _adopt(self, ring: Any) -> None:
        v, p = self.view, self.params
        key, kid = view_cipher_key(ring.key, ring.group, v.vid, v.tag, p.cipher)
        if kid == self.kid:
            return
        self.aead = CIPHERS[p.cipher](key)
        self.kid = kid
        fixed = pack(
            "cohort-encrypt", ring.group, list(v.vid), v.tag, kid, p.cipher, p.confidential
        )
        self.ad = {(k, d): fixed + _adp(k, d) for k in KINDS for d in range(-1, v.n)}
        me = self.me  # a cast is to all, a send to us, a control message either
        ok = [(wire.CAST, ALL), (wire.SEND, me), (wire.CONTROL, ALL), (wire.CONTROL, me)]
        self.ad_in = {kd: self.ad[kd] for kd in ok}

    # --- down ------------------------------------------------------------------------------------

    def down(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Cast:
            sealed = self._seal(ev, wire.CAST, ALL)
            if sealed is not None:
                self.ctx.down(Cast(sealed[0], sealed[1]))
        elif cls is Send:
            sealed = self._seal(ev, wire.SEND, ev.dest)
            if sealed is not None:
                self.ctx.down(Send(ev.dest, sealed[0], sealed[1]))
        elif cls is Control:
            sealed = self._seal(ev, wire.CONTROL, ALL if ev.dest is None else ev.dest)
            if sealed is not None:
                self.ctx.down(Control(ev.dest, sealed[0], sealed[1]))
        else:
            self.ctx.down(ev)

    def _seal(self, ev: Any, kind: int, dest: int) -> tuple[bytes, list] | None:
        aead = self.aead
        if aead is None:
            self.ctx.count("encrypt.no_key")
            return None
        seq = self.seq
        self.seq = seq + 1
        inner = _packb([ev.hdrs, ev.payload])
        if self.confidential:
            data = aead.encrypt(_nonce(self.me, seq), inner, self.ad[kind, dest])
        else:
            data = inner + aead.encrypt(_nonce(self.me, seq), b"", self.ad[kind, dest] + inner)
        return data, [(self.kid, seq, dest)]

    # --- up --------------------------------------------------------------------------------------

    def up(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Deliver:
            self._open(ev, wire.CAST, ev.origin)
        elif cls is DeliverSend:
            self._open(ev, wire.SEND, ev.origin)
        elif cls is ControlIn:
            self._open(ev, wire.CONTROL, ev.src)
        elif cls is Keys:
            self._adopt(ev.ring)
            self.ctx.up(ev)
        else:
            self.ctx.up(ev)

    def _open(self, ev: Any, kind: int, src: int) -> None:
        try:
            (h,) = ev.hdrs
            kid, seq, dest = h
        except (TypeError, ValueError):
            self.ctx.count("encrypt.bad_header")
            return
        if type(seq) is not int or type(dest) is not int or not 0 <= seq < SEQ_LIMIT:
            self.ctx.count("encrypt.bad_header")
            return
        if kid != self.kid or self.aead is None:
            self.ctx.count("encrypt.wrong_key" if self.aead is not None else "encrypt.no_key")
            return
        ad = self.ad_in.get((kind, dest))
        if ad is None:
            self.ctx.count("encrypt.misdirected")
            return
        hi = self.hi[src]
        if seq <= hi:
            off = hi - seq
            if off >= self.window:
                self.ctx.count("encrypt.too_old")
                return
            if (self.mask[src] >> off) & 1:
                self.ctx.count("encrypt.replay")
                return
        data = ev.payload
        try:
            if self.confidential:
                inner = self.aead.decrypt(_nonce(src, seq), data, ad)
            else:
                inner = data[:-TAG_LEN]
                tag = data[-TAG_LEN:]
                if len(tag) < TAG_LEN:
                    raise InvalidTag
                self.aead.decrypt(_nonce(src, seq), tag, ad + inner)
        except InvalidTag:
            self.ctx.count("encrypt.bad_tag")
            return
        if seq > hi:  # authentic: only now does the window move
            shift = seq - hi
            mask = ((self.mask[src] << shift) | 1) & self.full if shift < self.window else 1
            self.mask[src] = mask
            self.hi[src] = seq
        else:
            self.mask[src] |= 1 << (hi - seq)
        try:
            hdrs, payload = _unpackb(inner)
        except Exception:  # msgpack raises several unrelated types on garbage; all mean "drop"
            hdrs = payload = None
        if type(hdrs) is not list or type(payload) is not bytes:
            self.ctx.count("encrypt.malformed")  # authentic but not ours: a member's bug
            return
        ev.hdrs = hdrs
        ev.payload = payload
        self.ctx.up(ev)

    def dump(self) -> dict:
        return {"sent": self.seq, "kid": self.kid}


def fmt_header(h: Any) -> str:
    if h is None:
        return "-"
    kid, seq, dest = h
    return f"SEALED(kid={kid:08x}, seq={seq}, dest={'all' if dest == ALL else dest})"
