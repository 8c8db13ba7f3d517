"""Protocol limits: sizes, counts and times a request must stay within.

The numbers are upstream denokv's, except where Deno's own engine accepts more: a
program must behave the same on a local file and on this server, and the Deno CLI
checks its own limits before it sends anything (checked with `tests/deno/limits.ts`
on `Deno.openKv(":memory:")`). The texts a refusal answers with are in `texts.py`.
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
