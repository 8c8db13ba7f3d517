"""Protocol limits and the exact error texts the server answers with.

Texts are those of upstream denokv (KV_FACTS §7.6, §8), so clients that match
on them keep working. Numbers are upstream's too, except where Deno's own
engine accepts more: a program must behave the same on a local file and on
this server, and the Deno CLI checks its own limits before it sends anything
(checked with `tests/deno/limits.ts` on `Deno.openKv(":memory:")`).
"""

from __future__ import annotations

MAX_WRITE_KEY_SIZE = 2048
MAX_READ_KEY_SIZE = MAX_WRITE_KEY_SIZE + 1
MAX_VALUE_SIZE = 65536
MAX_READ_RANGES = 10
MAX_READ_ENTRIES = 1000
# Deno's engine allows 100 checks ("Too many checks (max 100)"); upstream's server 10.
MAX_CHECKS = 100
MAX_MUTATIONS = 1000
MAX_TOTAL_MUTATION_SIZE = 819_200
MAX_WATCHED_KEYS = 10
MAX_QUEUE_UNDELIVERED_KEYS = 10
MAX_QUEUE_BACKOFF_INTERVALS = 10
MAX_QUEUE_BACKOFF_MS = 3_600_000
MAX_QUEUE_DELAY_MS = 30 * 24 * 60 * 60 * 1000
MAX_REQUEST_BODY = 2 * 1024 * 1024
# A body still incomplete this long after its request's headers is cut off (408).
REQUEST_BODY_TIMEOUT_S = 30.0
MIN_ACCESS_TOKEN_LENGTH = 12
DEFAULT_BACKOFF_SCHEDULE = (100, 1000, 5000, 30000, 60000)

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
