"""The one exception subcommands raise for problems the user can fix."""

from __future__ import annotations


class CliError(Exception):
    """Printed without a traceback; the command exits with status 1."""
