"""The exact error texts the server answers with (and the clients raise).

They are upstream denokv's (KV_FACTS §7.6, §8), byte for byte, so clients that match
on them keep working; the few of our own say so. The limits they speak of are numbers
in `limits.py`.
"""

from __future__ import annotations

# Request-shape errors (HTTP 400 unless noted).
KEY_TOO_LARGE = "A key exceeds the key size limit."
VALUE_TOO_LARGE = "A value exceeds the value size limit."
TOO_MANY_ENTRIES = (
    "The total number of entries requested across read ranges in the read request is too large."
)
WRITE_TOO_LARGE = "The total size of the atomic write is too large."
TOO_MANY_RANGES = "Too many read ranges requested in one read request."
TOO_MANY_WATCH_KEYS = "Too many keys watched in a single watch request."
TOO_MANY_CHECKS = "Too many checks included in atomic write."
TOO_MANY_MUTATIONS = "Too many mutations / enqueues included in atomic write."
TOO_MANY_UNDELIVERED_KEYS = "Too many dead letter keys for a single queue message."
TOO_MANY_BACKOFF_INTERVALS = "Too many backoff intervals for a single queue message."
BACKOFF_TOO_LARGE = "A backoff interval exceeds the maximum allowed backoff interval."
INVALID_LIMIT = "The read range limit of the snapshot read request is invalid."
INVALID_VERSIONSTAMP = "Invalid versionstamp."
INVALID_MUTATION = "Invalid mutation kind or arguments."
INVALID_EXPIRE_AT = "Invalid mutation expire at."
INVALID_DEADLINE = "Invalid mutation enqueue deadline."
# Not upstream: upstream answers 500 (retried forever by Deno) or panics here.
INVALID_VALUE_ENCODING = "The value encoding {n} is unknown."
INVALID_LE64 = "A KvU64 value must be exactly 8 bytes."

# Transport, auth and negotiation.
NOT_FOUND = "Resource not found."
MALFORMED_AUTH = "Malformed authorization header."
INVALID_TOKEN = "Invalid access token."
INVALID_DATABASE_ID = "Invalid database id."
EXPECTED_PROTOCOL = "Expected protocol version 2."
INVALID_PROTOBUF = "Request protobuf is invalid: {err}."
NEED_PROTOCOL_2 = "The server requires at least protocol version 2. Use Deno 1.38.0 or newer."
NO_COMMON_VERSION = (
    "The server could not negotiate a protocol version. "
    "The server requires protocol version 2 or 3."
)
BODY_TOO_LARGE = "Failed to buffer the request body: length limit exceeded"
# Not upstream (axum waits for as long as the client sends).
BODY_TIMEOUT = "Timed out reading the request body."
INTERNAL_ERROR = "An internal server error occurred."
UNAVAILABLE = "The server is temporarially unavailable, try again later."
TOKEN_TOO_SHORT = "Access token must be at minimum 12 chars long."
