"""Key material of the secure stack: what the group secret derives, a view's keyring, key transport.

Why one module: `auth` (join authentication, key transport) and `encrypt` (packet protection) and
`gms` (which carries a keyring into each view record it makes) must agree on every derivation, and
a reviewer should find all of the cryptography in one place. Nothing here keeps state or does I/O;
randomness comes in as bytes from the caller (`auth` draws it from its `entropy` hook).

Derivations (HKDF-SHA256; `group` is the group name, so two groups sharing a secret share no key):
- from the pre-shared group secret: `join` (HMAC key of the join challenge-response), `oob` (HMAC
  key sealing out-of-band messages), `wrap` (salt of the key-transport keys, so a grant can only
  be opened by a holder of the secret *and* of the recipient's X25519 private key), `boot` (the key
  of a statically configured first view, where no exchange has happened yet);
- from a view key `key` and the view's identity: the AEAD key and the 32-bit key id (key version)
  of that view (`view_cipher_key`), so a view key reused by mistake in another view still yields
  an unrelated AEAD key;
- key transport ("grant"): X25519(sender, recipient) → HKDF(salt=wrap, info=grant context) →
  ChaCha20-Poly1305 over the 32-byte view key, the context (group, view id, both addresses, both
  public keys) as associated data.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"cohort-secure-v1"
KEY_LEN = 32
NONCE_LEN = 12
PUB_LEN = 32
#: shortest group secret accepted: it is the membership credential, and a challenge answered by a
#: member lets anyone who can reach the group try guesses offline, so it must not be guessable
MIN_SECRET = 16

_pack = msgpack.Packer(use_bin_type=True).pack


def hkdf(secret: bytes, info: bytes, salt: bytes = LABEL, length: int = KEY_LEN) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=salt, info=info).derive(secret)


def pack(*parts: Any) -> bytes:
    """An unambiguous byte string of `parts` (msgpack of the list): MAC and KDF input."""
    return _pack(list(parts))


@dataclass(frozen=True, slots=True)
class Secrets:
    """The keys a group secret derives (see the module docstring)."""

    join: bytes = field(repr=False)
    oob: bytes = field(repr=False)
    wrap: bytes = field(repr=False)
    boot: bytes = field(repr=False)


@functools.lru_cache(maxsize=32)
def derive(secret: bytes, group: str) -> Secrets:
    g = group.encode()
    return Secrets(
        hkdf(secret, b"join|" + g),
        hkdf(secret, b"oob|" + g),
        hkdf(secret, b"wrap|" + g),
        hkdf(secret, b"boot|" + g),
    )


def mac(key: bytes, *parts: Any) -> bytes:
    return hmac.new(key, pack(*parts), hashlib.sha256).digest()


def mac_ok(key: bytes, tag: Any, *parts: Any) -> bool:
    return type(tag) is bytes and hmac.compare_digest(tag, mac(key, *parts))


def boot_key(sec: Secrets, vid: tuple, members: tuple[str, ...]) -> bytes:
    """The key of a view configured statically (every member derives it from the secret)."""
    return hkdf(sec.boot, pack("boot", list(vid), list(members)))


def view_cipher_key(key: bytes, group: str, vid: tuple, tag: int, cipher: str) -> tuple[bytes, int]:
    """(AEAD key, key id) of one view. The key id is the key version the packets carry."""
    info = pack("view", group, list(vid), tag, cipher)
    okm = hkdf(key, info, length=KEY_LEN + 4)
    return okm[:KEY_LEN], int.from_bytes(okm[KEY_LEN:], "big")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Keyring:
    """One endpoint's key material for one view. Local only: never compared, printed or sent.

    `priv` is this incarnation's X25519 key (drawn once, kept across views); `key` the view key;
    `pubs` the members' X25519 public keys by address (None where not yet known: a static view
    learns them from announcements). `boot`: the key was derived from the secret, not exchanged.
    """

    group: str
    priv: X25519PrivateKey
    pub: bytes
    key: bytes
    pubs: Mapping[str, bytes | None]
    boot: bool = False

    def __repr__(self) -> str:  # never the keys themselves
        return f"Keyring(group={self.group!r}, pubs={len(self.pubs)}, boot={self.boot})"

    def successor(self, key: bytes, pubs: Mapping[str, bytes | None]) -> Keyring:
        """The same endpoint in another view: same private key, that view's key and members."""
        return replace(self, key=key, pubs=dict(pubs), boot=False)

    def with_pub(self, addr: str, pub: bytes) -> Keyring:
        return replace(self, pubs={**self.pubs, addr: pub})


def new_ring(
    group: str, priv_bytes: bytes, key: bytes, pubs: Mapping[str, bytes | None]
) -> Keyring:
    priv = X25519PrivateKey.from_private_bytes(priv_bytes)
    pub = priv.public_key().public_bytes_raw()
    return Keyring(group, priv, pub, key, dict(pubs))


def grant_context(
    group: str, vid: Any, sender: str, recipient: str, spub: bytes, rpub: bytes
) -> bytes:
    return pack("grant", group, list(vid), sender, recipient, spub, rpub)


def _pair_key(sec: Secrets, priv: X25519PrivateKey, peer_pub: bytes, context: bytes) -> bytes:
    shared = priv.exchange(X25519PublicKey.from_public_bytes(peer_pub))
    return hkdf(shared, context, salt=sec.wrap)


def wrap(
    sec: Secrets, ring: Keyring, peer_pub: bytes, context: bytes, key: bytes, nonce: bytes
) -> bytes:
    """Encrypt view key `key` for the holder of `peer_pub` (pairwise X25519 channel)."""
    return ChaCha20Poly1305(_pair_key(sec, ring.priv, peer_pub, context)).encrypt(
        nonce, key, context
    )


def unwrap(
    sec: Secrets, ring: Keyring, peer_pub: Any, context: bytes, nonce: Any, sealed: Any
) -> bytes | None:
    """The view key of a grant, or None when it was not made for us (or was tampered with)."""
    if not (
        type(peer_pub) is bytes
        and len(peer_pub) == PUB_LEN
        and type(nonce) is bytes
        and len(nonce) == NONCE_LEN
        and type(sealed) is bytes
    ):
        return None
    try:
        key = ChaCha20Poly1305(_pair_key(sec, ring.priv, peer_pub, context)).decrypt(
            nonce, sealed, context
        )
    except (InvalidTag, ValueError):  # ValueError: a low-order public key (all-zero secret)
        return None
    return key if len(key) == KEY_LEN else None


def valid_pub(p: Any) -> bool:
    return type(p) is bytes and len(p) == PUB_LEN


__all__ = [
    "Keyring",
    "Secrets",
    "boot_key",
    "derive",
    "grant_context",
    "mac",
    "mac_ok",
    "new_ring",
    "unwrap",
    "valid_pub",
    "view_cipher_key",
    "wrap",
]
