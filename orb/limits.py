"""The bounds a replica's client port enforces before it buffers or decodes anything a client sends.

Why they exist: the server shares its event loop with the group stack, so one slow parse, one
runaway allocation or one exhausted file table delays heartbeats and gets the replica excluded
from its group. Every bound here is checked from the 40-byte Pyro5 header (or the 8-byte
annotation chunk headers) before the bytes it announces are read, so a hostile client costs at
most what the limits allow.

Derived bounds worth knowing:

- bytes buffered by one connection <= its serializer's data limit + `max_annotations_total`
  + 2 * `read_buffer` (the StreamReader pauses the socket above that);
- bytes of large messages buffered by all connections together <= `max_inflight_bytes`
  (a connection waits for room before reading a body above `offload_threshold`);
- small messages across all connections <= `max_connections` * (`offload_threshold` + 2 * `read_buffer`).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from Pyro5 import serializers

KiB = 1 << 10
MiB = 1 << 20
MSGPACK_ID = serializers.serializers["msgpack"].serializer_id
SERPENT_ID = serializers.serializers["serpent"].serializer_id
JSON_ID = serializers.serializers["json"].serializer_id


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits of one `cohort.orb.wire.WireServer`; sizes in bytes, durations in seconds."""

    #: msgpack body (after decompression). msgpack decodes in C at hundreds of MB/s but holds
    #: the GIL for the whole body, even on the worker thread: an array of nils costs ~10 ns per
    #: byte, so 64 MiB stalled the loop (and its heartbeats) for 0.7 s; 16 MiB is ~0.2 s.
    #: Byte strings cost almost nothing per byte, so this bounds the stall, not honest payloads
    #: much; `max_containers` bounds the worst memory amplification (empty maps).
    max_msgpack: int = 16 * MiB
    #: json body. The C decoder holds the GIL too and builds more objects per byte than msgpack
    #: (`[{},{},…]` is 3 bytes per dict), hence half of msgpack's limit.
    max_json: int = 8 * MiB
    #: serpent body. Serpent is `ast.literal_eval`: tens of times slower than msgpack, about
    #: 500 bytes of AST per input byte, and it holds the GIL for the whole parse, so even a parse
    #: off the loop stalls heartbeats. 4 MB took 10 s and 1.9 GB; 256 KiB took 0.3 s idle and
    #: 0.5 s on a loaded 2-core machine (half the 1 s suspect timeout); 64 KiB takes ~0.1 s.
    #: Plain Pyro5 clients default to serpent: large arguments should use msgpack.
    max_serpent: int = 64 * KiB
    #: annotation chunks per message (Pyro5 clients send none unless the user adds some)
    max_annotations: int = 16
    #: bytes of one annotation's data
    max_annotation_size: int = 64 * KiB
    #: bytes of all annotation chunks of one message, their 8-byte chunk headers included
    max_annotations_total: int = 256 * KiB
    #: lists plus dicts one msgpack or json body may build. An empty msgpack map is 1 byte on
    #: the wire and ~64 bytes in memory: 16 MiB of them took 1.2 GB before this bound (1M: ~64 MB).
    #: For json the count is of `[` and `{` bytes, so brackets inside strings count too.
    max_containers: int = 1_000_000
    #: bodies above this size are decoded on a worker thread (one, so big decodes queue instead
    #: of multiplying memory, and it rests as long as it worked, so decodes holding the GIL take
    #: at most half of the interpreter); smaller ones inline, which keeps the common call fast.
    #: Large bodies also take room in `max_inflight_bytes` before they are read.
    offload_threshold: int = 64 * KiB
    #: the same for serpent, whose parse is ~40 times slower per byte: ready connections' inline
    #: decodes run back to back in one loop iteration, so inline ones must be cheap
    serpent_offload_threshold: int = 4 * KiB
    #: bytes of large bodies received or being decoded, summed over all connections
    max_inflight_bytes: int = 256 * MiB
    #: concurrent connections of every kind (Pyro5 clients, watchers, TCP group peers). The
    #: extra ones get a Pyro5 MSG_CONNECTFAIL and are closed. Clamped to the process's file
    #: limit minus `fd_reserve` and `accept_backlog`, so accept() never fails with EMFILE
    #: because of clients.
    max_connections: int = 512
    #: file descriptors kept for the group stack, trace files and the refusals themselves
    fd_reserve: int = 64
    #: the listen backlog, which is also how many sockets asyncio accepts in one go before the
    #: server has counted any of them: the connection cap leaves room for one such batch
    accept_backlog: int = 100
    #: a new connection must complete its first message (the Pyro5 CONNECT) this soon;
    #: also the TLS handshake timeout
    handshake_timeout: float = 10.0
    #: a connection that completes no message for this long is closed
    idle_timeout: float = 60.0
    #: once a header has arrived, the rest of the message must arrive this soon (a slowloris
    #: client trickling bytes is cut); also bounds how long a reply may wait for a reader
    message_timeout: float = 30.0
    #: StreamReader buffer limit per connection (reading pauses at twice this)
    read_buffer: int = 64 * KiB
    #: a kind of dropped input (`orb.too_large`, …) is logged at most once per this interval
    log_interval: float = 60.0

    def __post_init__(self) -> None:
        biggest = max(self.max_msgpack, self.max_json, self.max_serpent)
        if self.max_inflight_bytes < biggest + self.max_annotations_total:
            raise ValueError(
                "max_inflight_bytes must hold the largest allowed message "
                f"({biggest + self.max_annotations_total} bytes), got {self.max_inflight_bytes}"
            )
        if min(self.handshake_timeout, self.idle_timeout, self.message_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    def max_data(self, serializer_id: int) -> int:
        """The body limit for a serializer id (0 for ids that are refused)."""
        if serializer_id == MSGPACK_ID:
            return self.max_msgpack
        if serializer_id == SERPENT_ID:
            return self.max_serpent
        if serializer_id == JSON_ID:
            return self.max_json
        return 0

    def inline_max(self, serializer_id: int) -> int:
        """The largest body of this serializer decoded on the loop itself."""
        if serializer_id == SERPENT_ID:
            return min(self.serpent_offload_threshold, self.offload_threshold)
        return self.offload_threshold

    def connection_cap(self) -> int:
        """`max_connections`, lowered to fit the process's open-file limit."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - self.fd_reserve - self.accept_backlog))
