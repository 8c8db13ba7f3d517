"""Passing a replica's writes and strong reads to the primary over KV Connect.

The replica does its own metadata exchange with the primary (through the
project's client), sends the request body on, and answers with the primary's
reply as it came: a protobuf body, or the primary's 4xx text. When the primary
cannot be reached within the retry deadline the caller gets a 503, which Deno
clients retry.
"""

from __future__ import annotations

from denokv.client.remote import RemoteBackend, RetryPolicy
from denokv.errors import KvConnectError, KvMetadataError, KvUnavailableError

PRIMARY_UNAVAILABLE = "The primary is unavailable, try again later."
TEXT = b"text/plain; charset=utf-8"


class PrimaryForwarder:
    def __init__(self, primary_url: str, access_token: str, deadline_s: float = 10.0) -> None:
        self.primary_url = primary_url
        self._remote = RemoteBackend(
            primary_url, access_token, retry=RetryPolicy(deadline_s=deadline_s)
        )

    async def forward(self, method: str, body: bytes) -> tuple[int, bytes, bytes]:
        try:
            reply = await self._remote.call(method, body, "strong")
        except KvConnectError as exc:
            return exc.status, TEXT, exc.body.encode()
        except (KvUnavailableError, KvMetadataError):
            return 503, TEXT, PRIMARY_UNAVAILABLE.encode()
        return 200, b"application/x-protobuf", reply

    async def close(self) -> None:
        await self._remote.close()
