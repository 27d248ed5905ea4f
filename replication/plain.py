"""The user's methods for plain Pyro5 proxies (`Pyro5.api.Proxy("PYRO:cohort.<group>@host:port")`).

Each is ordered and answered once uniform like any call through a `GroupProxy`, but a retry after a
lost reply is a new call, since a plain proxy has no request ids (GroupProxy gives exactly-once).
Errors reach them as types Pyro5 can rebuild (see `cohort.orb.errors.for_plain_pyro`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from cohort.orb import errors as st
from cohort.replication.api import class_info
from cohort.state import codec

#: the replica's ordered entry point: (cid, rid, method, payload, done, local, vid) -> reply
Invoke = Callable[..., Awaitable[list]]


def plain_methods(cls: type, invoke: Invoke) -> dict[str, Callable[..., Awaitable[Any]]]:
    """One async callable per replicated method of `cls`, for the replica's Pyro5 object."""
    return {name: _plain_call(name, m.kind, invoke) for name, m in class_info(cls).methods.items()}


def _plain_call(method: str, kind: str, invoke: Invoke) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        payload = codec.dumps([list(args), kwargs], root=f"{method}()")
        status, body, _view = await invoke(
            os.urandom(8), 1, method, payload, 0, kind == "local", None
        )
        if status == st.OK:
            return codec.loads(body)
        if status == st.ERROR:
            raise st.decode_exception(body)
        if status == st.NO_QUORUM:
            raise st.NoQuorum(str(body))
        raise st.RemoteError("Cohort", str(body))

    return call
