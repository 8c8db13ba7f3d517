"""The web console under `/console/`: browse, edit and watch the data, and see the server's health.

`console_app(server, mode)` builds the ASGI app that `KvServer` hands every
`/console...` request; see README.md beside this file.
"""

from __future__ import annotations

from denokv.console.app import DEFAULT_MODE, MODES, Console, console_app

__all__ = ["DEFAULT_MODE", "MODES", "Console", "console_app"]
