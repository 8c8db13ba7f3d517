"""What the console needs of the server that hosts it, as Protocols.

The console is part of the server (`KvServer` builds it and hands it every `/console`
request), so naming `KvServer` here would tie the two modules in a cycle. These
Protocols say what the console reads instead; `KvServer` fits them as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from denokv.engine import Engine
    from denokv.server.auth import Authenticator
    from denokv.server.host import Forwarder


class HostConfig(Protocol):
    @property
    def access_token(self) -> str: ...
    @property
    def accept_writes(self) -> bool: ...
    @property
    def not_ready(self) -> Callable[[], str | None] | None: ...
    @property
    def forwarder(self) -> Forwarder | None: ...


class ConsoleHost(Protocol):
    @property
    def auth(self) -> Authenticator: ...
    @property
    def config(self) -> HostConfig: ...
    @property
    def closing(self) -> bool: ...
    @property
    def log(self) -> logging.Logger: ...
    @property
    def engine(self) -> Engine: ...
