"""User state on the wire: the value codec and chunked snapshots for state transfer.

Why a package of its own: the codec is shared by the ORB (invocation arguments and results)
and by replication (replica state), and neither should pull in the other. It depends on the
standard library and msgpack only, never on `stack`, `replication` or `orb`.
"""

from cohort.state.codec import (
    DecodeError,
    SerializationError,
    dumps,
    loads,
    register,
    register_dataclass,
    serializable,
    unregister,
)
from cohort.state.snapshot import CHUNK_SIZE, Assembler, Snapshot, SnapshotError, digest, split

__all__ = [
    "CHUNK_SIZE",
    "Assembler",
    "DecodeError",
    "SerializationError",
    "Snapshot",
    "SnapshotError",
    "digest",
    "dumps",
    "loads",
    "register",
    "register_dataclass",
    "serializable",
    "split",
    "unregister",
]
