"""Passing a replica's writes and strong reads to the primary over KV Connect.

The replica does its own metadata exchange with the primary (through the
project's client), sends the request body on, and answers with the primary's
reply as it came: a protobuf body, or the primary's 4xx text. When the primary
cannot be reached within the retry deadline the caller gets a 503, which Deno
clients retry.

When the primary refuses the replica itself (its `--primary-access-token` is
wrong, or `--primary-url` points at something that is not a KV Connect
server), retrying cannot help until an operator fixes the replica, and Deno
retries every 5xx forever (502 included). So the client gets a 403 that says
what is wrong, and the log says it once, not once per request. For a few
seconds after such a refusal the replica answers without asking the primary
again, so a busy replica does not flood the primary with doomed exchanges.
"""

from __future__ import annotations

import logging
import time

from denokv.client.errors import KvConnectError, KvMetadataError, KvUnavailableError
from denokv.client.remote import RemoteBackend, RetryPolicy

log = logging.getLogger("denokv.replica")

PRIMARY_UNAVAILABLE = "The primary is unavailable, try again later."
PRIMARY_REFUSED = (
    "This replica cannot forward the request: the primary at {url} refused the replica "
    "({reason}). Fix the replica's --primary-access-token or --primary-url."
)
TEXT = b"text/plain; charset=utf-8"
REFUSED_STATUS = 403  # a 4xx: Deno shows it to the program instead of retrying forever
RETRY_REFUSED_AFTER_S = 5.0


class PrimaryForwarder:
    def __init__(self, primary_url: str, access_token: str, deadline_s: float = 10.0) -> None:
        self.primary_url = primary_url
        self._remote = RemoteBackend(
            primary_url, access_token, retry=RetryPolicy(deadline_s=deadline_s)
        )
        self._refused: str | None = None  # why the primary refused us, while it does
        self._refused_at = 0.0

    async def forward(self, method: str, body: bytes) -> tuple[int, bytes, bytes]:
        if (
            self._refused is not None
            and time.monotonic() - self._refused_at < RETRY_REFUSED_AFTER_S
        ):
            return self._refusal()
        try:
            reply = await self._remote.call(method, body, "strong")
        except KvMetadataError as exc:
            return self._refuse(str(exc))
        except KvConnectError as exc:
            if exc.status == 401:  # the primary's data path refused our token
                return self._refuse(f"{exc.status}: {exc.body}")
            return exc.status, TEXT, exc.body.encode()
        except KvUnavailableError:
            return 503, TEXT, PRIMARY_UNAVAILABLE.encode()
        if self._refused is not None:
            log.info("the primary at %s accepts this replica again", self.primary_url)
            self._refused = None
        return 200, b"application/x-protobuf", reply

    def _refuse(self, reason: str) -> tuple[int, bytes, bytes]:
        if self._refused is None:
            log.error(
                "cannot forward writes and strong reads: the primary at %s refused this "
                "replica (%s); clients get %d until --primary-access-token or --primary-url "
                "is fixed",
                self.primary_url, reason, REFUSED_STATUS,
            )  # fmt: skip
        self._refused = reason
        self._refused_at = time.monotonic()
        return self._refusal()

    def _refusal(self) -> tuple[int, bytes, bytes]:
        text = PRIMARY_REFUSED.format(url=self.primary_url, reason=self._refused)
        return REFUSED_STATUS, TEXT, text.encode()

    async def close(self) -> None:
        await self._remote.close()
