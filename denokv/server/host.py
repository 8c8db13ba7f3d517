"""What the HTTP fronts and the unary calls need of the server, as Protocols.

`KvServer` (app.py) builds its fronts (`RsgiFront`, `AsgiFront`) and its unary calls
(`UnaryCalls`) and hands each itself; naming `KvServer` in those modules would tie them
to app.py in a cycle. They name these Protocols instead, which `KvServer` fits as it is
(the console does the same: `denokv.console.host`). The route table's entry type and
the request shape a call reads live here too, since both sides use them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from denokv.engine import Engine
    from denokv.server.auth import Authenticator
    from denokv.server.metadata import Endpoint
    from denokv.server.pipeline import BodyPolicy, Reply, Stream
    from denokv.server.tcp import AckNudger


class Forwarder(Protocol):
    async def forward(self, method: str, body: bytes) -> tuple[int, bytes | str, bytes]:
        """Send a data-path call to the primary; its (status, content type, body)."""
        ...


class MainHealth(Protocol):
    """A worker process's view of the main process's health (`denokv.server.worker`)."""

    def problems(self) -> list[str]:
        """The whole server's reasons not to be ready, as the main process reports them."""
        ...

    def fatal(self) -> str | None:
        """What keeps the whole server from serving again, if anything."""
        ...


class Incoming(Protocol):
    """What a call needs of a request: its headers (`.get(name)`) and its body."""

    headers: Any

    async def body(self) -> bytes: ...


class KvRoute(NamedTuple):
    name: str  # the metrics label
    call: Callable[[Incoming], Awaitable[Reply | Stream]]


class FrontHost(Protocol):
    """What an HTTP front (RSGI or ASGI) reads of the server it serves."""

    @property
    def routes(self) -> Mapping[str, KvRoute]: ...
    @property
    def body_policy(self) -> BodyPolicy: ...
    @property
    def nudger(self) -> AckNudger | None: ...
    @property
    def observe(self) -> Callable[[str, int, float], None]: ...
    @property
    def framework(self) -> Callable[[Any, Any, Any], Awaitable[None]]: ...


class CallsConfig(Protocol):
    @property
    def endpoints(self) -> list[Endpoint]: ...
    @property
    def accept_writes(self) -> bool: ...
    @property
    def reads_strongly_consistent(self) -> bool: ...
    @property
    def forwarder(self) -> Forwarder | None: ...


class CallsHost(Protocol):
    """What the unary calls read of the server: its engine, tokens, settings, admission."""

    @property
    def engine(self) -> Engine: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def config(self) -> CallsConfig: ...
    def admit(self, headers: Any) -> None: ...
