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
were open at the last scan. Every use first checks with `getpeername` that the
descriptor still is that connection, since a closed descriptor's number is
soon reused. We never close, duplicate or keep a socket object for a
descriptor we do not own: each system call goes through a temporary wrapper
that is detached before it is dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily

log = logging.getLogger("denokv.tcp")

Peer = tuple[str, int]
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
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
        self._fds: dict[tuple[str, int, int], int] = {}
        # Connections a fresh scan did not find (closed meanwhile, or not TCP):
        # not worth another scan each. Bounded; cleared when full.
        self._unfindable: set[tuple[str, int, int]] = set()

    def nudge(self, client: Peer | None, local_port: int) -> None:
        """Call when a request's headers arrived, before reading its body."""
        if not self.enabled or client is None:
            return
        key = (_plain(client[0]), client[1], local_port)
        fd = self._fds.get(key)
        if fd is not None and _quickack(fd, key):
            self.stats.nudged += 1
            return
        if key in self._unfindable:
            self.stats.unmatched += 1
            return
        self._scan()
        fd = self._fds.get(key)
        if fd is not None and _quickack(fd, key):
            _set_nodelay(fd)
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
                "sockets_not_found": self.stats.unmatched, "scans": self.stats.scans}  # fmt: skip

    def _scan(self) -> None:
        """Map every connected TCP socket of this process by its addresses."""
        self.stats.scans += 1
        found: dict[tuple[str, int, int], int] = {}
        try:
            names = os.listdir(_FD_DIR)
        except OSError as exc:
            log.warning("cannot list %s, TCP_QUICKACK is off: %s", _FD_DIR, exc)
            self.enabled = False
            return
        for name in names:
            fd = int(name)
            key = _addresses(fd)
            if key is not None:
                found[key] = fd
        self._fds = found


def _plain(host: str) -> str:
    """One spelling per address: IPv4-mapped IPv6 as IPv4, no brackets."""
    host = host.strip("[]")
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _wrap(fd: int) -> socket.socket:
    # Passing family, type and protocol makes this wrapper cost no system call.
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)


def _addresses(fd: int) -> tuple[str, int, int] | None:
    """(peer host, peer port, local port) of a connected TCP socket, else None."""
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
    except OSError:  # not a socket, not connected, or closed meanwhile
        return None
    finally:
        s.detach()
    if not isinstance(peer, tuple) or not isinstance(local, tuple):
        return None
    return _plain(peer[0]), peer[1], local[1]


def _quickack(fd: int, key: tuple[str, int, int]) -> bool:
    """Send the pending ACK now, if `fd` still is the connection `key` names."""
    if _TCP_QUICKACK is None:  # not Linux: the nudger is off and never calls this
        return False
    try:
        s = _wrap(fd)
    except OSError:
        return False
    try:
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
