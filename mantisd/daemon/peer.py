"""Who is on the other end of a Unix socket (SO_PEERCRED), and whether they may write."""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from anyio.abc import SocketAttribute, SocketStream

_UCRED = struct.Struct("3i")


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_of(stream: SocketStream) -> Peer | None:
    """The peer's credentials as the kernel saw them at connect time, or None if unknown."""
    raw = stream.extra(SocketAttribute.raw_socket)
    try:
        data = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    return Peer(*_UCRED.unpack(data))


def allowed(peer: Peer | None, uids: frozenset[int], gids: frozenset[int]) -> bool:
    """With no allow list everyone the socket's file mode lets in may write."""
    if not uids and not gids:
        return True
    if peer is None:
        return False
    return peer.uid in uids or peer.gid in gids
