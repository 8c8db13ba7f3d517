"""The metadata exchange (`POST /`): version negotiation and the endpoint list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from denokv import texts as T
from denokv.server.errors import HttpError

SUPPORTED_VERSIONS = (3, 2)
METADATA_TTL = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    consistency: str  # "strong" or "eventual"


def negotiate(content_type: str | None, body: bytes) -> int:
    """Parse the client's request and pick the newest version both sides speak."""
    if not _is_json(content_type):
        raise HttpError(400, T.NEED_PROTOCOL_2)
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise HttpError(400, T.NEED_PROTOCOL_2) from None
    if not isinstance(request, dict):
        raise HttpError(400, T.NEED_PROTOCOL_2)
    offered = request.get("supportedVersions", [])
    if not isinstance(offered, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in offered
    ):
        raise HttpError(400, T.NEED_PROTOCOL_2)
    for version in SUPPORTED_VERSIONS:
        if version in offered:
            return version
    raise HttpError(400, T.NO_COMMON_VERSION)


def response_body(
    version: int, database_id: str, endpoints: list[Endpoint], token: str, now: datetime | None
) -> bytes:
    expires = (now or datetime.now(UTC)) + METADATA_TTL
    document = {
        "version": version,
        "databaseId": database_id,
        "endpoints": [{"url": e.url, "consistency": e.consistency} for e in endpoints],
        "token": token,
        "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json":
        return True
    kind, _, subtype = mime.partition("/")
    return kind == "application" and subtype.endswith("+json")
