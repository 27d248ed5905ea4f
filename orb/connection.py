"""The client's connection to one replica: Pyro5's protocol over one blocking socket (optionally
TLS), used by one thread at a time. Failures that retrying will not change get their own names
(`TLSMismatch`, `GroupNotServed`), so the proxy can answer at once instead of timing out.
"""

from __future__ import annotations

import socket
import ssl as ssllib
from typing import Any

from cohort.orb.errors import GroupNotServed, TLSMismatch
from cohort.orb.framing import SAFE_SERIALIZERS, SERIALIZER, _frame
from cohort.orb.inbound import HEADER_SIZE
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol

from cohort.net import parse_addr


class Connection:
    """One blocking client connection to one object of one server (used by one thread at a time)."""

    def __init__(
        self,
        addr: str,
        obj: str,
        timeout: float,
        ssl_context: ssllib.SSLContext | None = None,
    ) -> None:
        self.addr = addr
        self.obj = obj
        host, port = parse_addr(addr)
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            except ssllib.SSLCertVerificationError as e:
                sock.close()
                raise TLSMismatch(
                    f"{addr}: its TLS certificate is not trusted ({e.verify_message}); give the "
                    "CA that signed it (--tls-ca)"
                ) from None
            except (ssllib.SSLError, ConnectionResetError) as e:
                sock.close()
                raise TLSMismatch(
                    f"{addr} did not complete a TLS handshake ({e}): it serves plain "
                    "connections, not TLS; connect without TLS, or start the replicas with "
                    "--tls-cert/--tls-key"
                ) from None
        self.sock = sock
        self._seq = 0
        self._timeout = timeout
        body = SERIALIZER.dumps({"handshake": "hello", "object": obj})
        self.sock.sendall(_frame(protocol.MSG_CONNECT, 0, SERIALIZER.serializer_id, body))
        try:
            msg = self._recv()
        except ConnectionResetError:
            self.close()
            if ssl_context is None:  # a TLS server drops a plaintext hello without a word
                raise TLSMismatch(
                    f"{addr} closed the connection without answering our plain Pyro5 hello: it "
                    "probably requires TLS; connect with an ssl_context "
                    "(cohort.orb.tls.client_context; --tls-ca on the command line)"
                ) from None
            raise
        if msg.type != protocol.MSG_CONNECTOK:
            self.close()
            # a server at its connection limit answers in JSON, before it knows our serializer
            ser = SAFE_SERIALIZERS.get(msg.serializer_id, SERIALIZER)
            text = str(ser.loads(msg.data))
            if text.startswith("unknown object"):
                served = text.rpartition("this server has: ")[2]
                groups = [g.removeprefix("cohort.") for g in served.split(", ") if g != "none"]
                raise GroupNotServed(
                    f"{addr} serves no group {obj.removeprefix('cohort.')!r}; it serves: "
                    + (", ".join(repr(g) for g in groups) or "no group")
                )
            # up but refusing (its connection limit): not "nothing listens here"
            raise ConnectionError(f"{addr} refused the connection: {text}")

    def call(self, method: str, args: list, timeout: float | None = None) -> Any:
        """Invoke and wait. Socket errors and timeouts leave the connection unusable (closed)."""
        self._seq = (self._seq + 1) & 0xFFFF
        data = SERIALIZER.dumpsCall(self.obj, method, args, {})
        try:
            if timeout != self._timeout:
                self.sock.settimeout(timeout)
                self._timeout = timeout
            self.sock.sendall(
                _frame(protocol.MSG_INVOKE, self._seq, SERIALIZER.serializer_id, data)
            )
            msg = self._recv()
        except BaseException:
            self.close()
            raise
        if msg.seq != self._seq:
            self.close()
            raise pyro_errors.ProtocolError(f"{self.addr}: reply out of sequence")
        result = SERIALIZER.loads(msg.data)
        if msg.flags & protocol.FLAGS_EXCEPTION:
            raise result
        return result

    def _recv(self) -> protocol.ReceivingMessage:
        header = self._read(HEADER_SIZE)
        msg = protocol.ReceivingMessage(header)
        msg.add_payload(self._read(msg.data_size + msg.annotations_size))
        return msg

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError(f"{self.addr} closed the connection")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
