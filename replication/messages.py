"""The kinds of the replica engine's messages, the first field of each (msgpack lists).

Ordered casts (delivered in total order to every member):
  INV    [0, cid, rid, method, payload, done, now, seed]   an update (active style)
  QRY    [1, cid, rid, method, payload, now, seed]         a linearizable query
  PUPD   [2, exec_no, cid, rid, status, body, update, delta]  the primary's result (passive)
  BATCH  [3, [INV or QRY, ...]]                            the calls of one core batch
  STATUS [4, vid, held, seen, applied, ready, [fingerprint, class]]  at each primary view
Point-to-point (state transfer, `cohort.replication.transfer`):
  CHUNK [10, xid, i, data] · HDR [11, xid, vid, pos] · REQ [12, vid] · ACK [14, xid, i]
  · END [15, xid, chunks, size, digest]

Why a module of its own: the engine and its roles (`status_round`, `state_transfer`) and the
transfer sessions all read these, and none of them should import another to know a number.
"""

from __future__ import annotations

INV, QRY, PUPD, BATCH, STATUS = 0, 1, 2, 3, 4
CHUNK, HDR, REQ, ACK, END = 10, 11, 12, 14, 15

__all__ = ["INV", "QRY", "PUPD", "BATCH", "STATUS", "CHUNK", "HDR", "REQ", "ACK", "END"]
