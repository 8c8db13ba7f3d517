"""Prompt ACKs for clients that leave Nagle on: no 40 ms stall per request.

Deno's KV client keeps Nagle's algorithm on and writes an HTTP/2 request's
HEADERS and DATA frames in two writes. Its kernel holds the DATA frame until
our side ACKs the HEADERS, and our kernel delays that ACK (about 40 ms on
Linux) because the connection is in interactive ("pingpong") mode: it expects
to send the ACK along with the response. One call at a time, every call then
takes ~44 ms (KV_FACTS §17).

The HTTP server hands a request to the application as soon as its headers
arrive, before the body. At that moment the application sets `TCP_QUICKACK`
on the connection's socket: Linux then sends the pending ACK at once and
leaves pingpong mode, so the client's DATA frame follows within a round trip.
No sysctl, route or capability is needed.

The sockets belong to the HTTP server (granian's Rust threads, or hypercorn's
event loop), which does not tell the application their file descriptors. We
find them the way `ss` does: list this process's descriptors and ask each
socket for its addresses, then keep a map from (client address, local port)
to descriptor. The map is rebuilt on a miss, so it holds only connections that
were open at the last scan. Every use first checks that the descriptor still
is that connection, since a closed descriptor's number is soon reused: by its
socket cookie (`SO_COOKIE`, a number Linux gives each socket for its life,
read without releasing the GIL or building an address), else by
`getpeername`. We never close, duplicate or keep a socket object for a
descriptor we do not own: each system call goes through a temporary wrapper
that is detached before it is dropped.
"""

from __future__ import annotations

import _socket
import logging
import os
import platform
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily

log = logging.getLogger("denokv.tcp")

Peer = tuple[str, int]
Key = tuple[str, int, int]  # (peer host, peer port, local port) of a connection
Found = tuple[int, bytes | None]  # its descriptor and socket cookie
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# SO_COOKIE (Linux 4.12+) is 57 where the generic socket numbers apply; Python
# 3.11 does not name it. Elsewhere, or where the kernel refuses it, getpeername.
_SO_COOKIE = getattr(socket, "SO_COOKIE", None) or (
    57 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64") else None
)
_FD_DIR = "/proc/self/fd"


@dataclass(slots=True)
class AckStats:
    """What the nudger did, for tests and metrics."""

    nudged: int = 0  # requests whose connection got TCP_QUICKACK
    unmatched: int = 0  # requests whose socket could not be found
    scans: int = 0  # descriptor scans (about one per new connection)


class AckNudger:
    """Sets TCP_QUICKACK (and TCP_NODELAY once) on the socket of a request's connection.

    A health component (`denokv.health.Component`): it reports its counters
    as metrics and never makes the server unready.
    """

    name = "tcp"

    def __init__(self) -> None:
        self.enabled = _TCP_QUICKACK is not None and sys.platform == "linux"
        self.stats = AckStats()
        self._fds: dict[Key, Found] = {}
        # Connections a fresh scan did not find (closed meanwhile, or not TCP):
        # not worth another scan each. Bounded; cleared when full.
        self._unfindable: set[Key] = set()

    @staticmethod
    def key_of(client: Peer, local_port: int) -> Key:
        """The map's name for a connection (callers may keep it: see `nudge_key`)."""
        return _plain(client[0]), client[1], local_port

    def nudge(self, client: Peer | None, local_port: int) -> None:
        """Call when a request's headers arrived, before reading its body."""
        if self.enabled and client is not None:
            self.nudge_key(self.key_of(client, local_port))

    def nudge_key(self, key: Key) -> None:
        """`nudge`, for a connection named by `key_of`."""
        if not self.enabled:
            return
        found = self._fds.get(key)
        if found is not None and _quickack(found, key):
            self.stats.nudged += 1
            return
        if key in self._unfindable:
            self.stats.unmatched += 1
            return
        self._scan()
        found = self._fds.get(key)
        if found is not None and _quickack(found, key):
            _set_nodelay(found[0])
            self.stats.nudged += 1
            return
        self.stats.unmatched += 1
        if len(self._unfindable) >= 4096:
            self._unfindable.clear()
        self._unfindable.add(key)

    def metrics(self) -> Iterator[Any]:
        counter = CounterMetricFamily(
            "denokv_tcp_quickack", "Requests whose connection was told to ACK at once",
            labels=["result"],
        )  # fmt: skip
        counter.add_metric(["sent"], self.stats.nudged)
        counter.add_metric(["socket_not_found"], self.stats.unmatched)
        yield counter
        yield CounterMetricFamily(
            "denokv_tcp_socket_scans", "Scans of the open descriptors for new connections",
            value=self.stats.scans,
        )  # fmt: skip

    def problems(self) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "quickacks": self.stats.nudged,
                "sockets_not_found": self.stats.unmatched, "scans": self.stats.scans,
                "identified_by": self.identified_by()}  # fmt: skip

    def identified_by(self) -> str:
        """How the mapped connections are told from reused descriptors."""
        found = list(self._fds.values())
        if not found:
            return "nothing mapped"
        return "socket cookie" if all(c is not None for _, c in found) else "peer name"

    def _scan(self) -> None:
        """Map every connected TCP socket of this process by its addresses."""
        self.stats.scans += 1
        found: dict[Key, Found] = {}
        try:
            names = os.listdir(_FD_DIR)
        except OSError as exc:
            log.warning("cannot list %s, TCP_QUICKACK is off: %s", _FD_DIR, exc)
            self.enabled = False
            return
        for name in names:
            fd = int(name)
            named = _addresses(fd)
            if named is not None:
                found[named[0]] = (fd, named[1])
        self._fds = found


def _plain(host: str) -> str:
    """One spelling per address: IPv4-mapped IPv6 as IPv4, no brackets."""
    host = host.strip("[]")
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _wrap(fd: int) -> _socket.socket:
    # The C socket type, given family, type and protocol, wraps a descriptor
    # without a system call (and without the Python subclass's __init__).
    return _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)


def _addresses(fd: int) -> tuple[Key, bytes | None] | None:
    """(peer host, peer port, local port) of a connected TCP socket and its cookie, else None."""
    try:
        s = _wrap(fd)
    except OSError:
        return None
    try:
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM:
            return None
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) != socket.IPPROTO_TCP:
            return None
        peer = s.getpeername()
        local = s.getsockname()
        cookie = _cookie(s)
    except OSError:  # not a socket, not connected, or closed meanwhile
        return None
    finally:
        s.detach()
    if not isinstance(peer, tuple) or not isinstance(local, tuple):
        return None
    return (_plain(peer[0]), peer[1], local[1]), cookie


def _cookie(s: _socket.socket) -> bytes | None:
    if _SO_COOKIE is None:
        return None
    try:
        cookie = s.getsockopt(socket.SOL_SOCKET, _SO_COOKIE, 8)
    except OSError:  # a kernel without SO_COOKIE
        return None
    return cookie if isinstance(cookie, bytes) and len(cookie) == 8 and any(cookie) else None


def _quickack(found: Found, key: Key) -> bool:
    """Send the pending ACK now, if the descriptor still is the connection `key` names."""
    if _TCP_QUICKACK is None:  # not Linux: the nudger is off and never calls this
        return False
    fd, cookie = found
    try:
        s = _wrap(fd)
    except OSError:
        return False
    try:
        if cookie is not None and _SO_COOKIE is not None:
            if s.getsockopt(socket.SOL_SOCKET, _SO_COOKIE, 8) != cookie:
                return False
        else:
            peer = s.getpeername()
            if _plain(peer[0]) != key[0] or peer[1] != key[1]:
                return False
        s.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return True
    except (OSError, TypeError, IndexError):
        return False
    finally:
        s.detach()


def _set_nodelay(fd: int) -> None:
    """Our own answers go out at once too (granian and uvloop already do this)."""
    try:
        s = _wrap(fd)
    except OSError:
        return
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    finally:
        s.detach()
