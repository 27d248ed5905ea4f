"""TLS between proxies and replicas (the client side of the security issue).

Why plain `ssl` contexts: Pyro5's own SSL support is a set of global config switches; our server and
connections take an `ssl.SSLContext` each, so a process can serve one group with client certificates
required and call another without. TLS 1.2 is the floor; certificates are always verified.
"""

from __future__ import annotations

import ssl


def server_context(
    certfile: str,
    keyfile: str,
    cafile: str | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The replica's side. With `require_client_cert`, a client must present a certificate signed
    by `cafile` or the handshake fails (the call never reaches the group)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if require_client_cert:
        if not cafile:
            raise ValueError(
                "require_client_cert needs cafile: the CA that signs client certificates"
            )
        ctx.verify_mode = ssl.CERT_REQUIRED
    if cafile:
        ctx.load_verify_locations(cafile)
    return ctx


def client_context(
    cafile: str, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """The proxy's side: trust replicas whose certificate `cafile` signed (the host name or IP in
    the reference must be in the certificate), and present our own certificate if given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx
