"""A proxy's pool of idle connections, per replica address, shared by the threads that call it."""

from __future__ import annotations

import threading
from collections import defaultdict

from cohort.orb.connection import Connection


class Pool:
    """Idle connections per replica, for one proxy's threads (a call borrows one, returns it)."""

    def __init__(self, obj: str, size: int, connect_timeout: float, ssl_context) -> None:
        self.obj = obj
        self.size = size
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self.idle: dict[str, list[Connection]] = defaultdict(list)
        self.lock = threading.Lock()

    def get(self, addr: str) -> Connection:
        with self.lock:
            idle = self.idle[addr]
            if idle:
                return idle.pop()
        return Connection(addr, self.obj, self.connect_timeout, self.ssl_context)

    def put(self, conn: Connection) -> None:
        with self.lock:
            idle = self.idle[conn.addr]
            if len(idle) < self.size:
                idle.append(conn)
                return
        conn.close()

    def drop(self, addr: str) -> None:
        with self.lock:
            conns = self.idle.pop(addr, [])
        for c in conns:
            c.close()

    def close(self) -> None:
        with self.lock:
            conns = [c for cs in self.idle.values() for c in cs]
            self.idle.clear()
        for c in conns:
            c.close()
