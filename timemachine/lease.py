"""One primary per prefix: a lease object written with conditional writes.

`<prefix>lock.json` names the process that may ship to the prefix and until
when. It is taken with a create-only write (`If-None-Match: *`) or, once it
has expired, by replacing exactly the copy that was read (`If-Match: <etag>`);
it is renewed the same way. A write refused by the store (412/409) means
somebody else holds it. Litestream's S3 leaser is the model (a JSON body, a
TTL, an epoch counted up on every takeover).

The holder also stops trusting the lease by its own clock once it could not
renew it for a whole TTL, so a primary cut off from S3 stops shipping and
pruning before a successor can have taken over. On stores that ignore
conditional writes (s3rver, some gateways) two primaries can both believe they
hold it; the server warns about that at start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from timemachine.store import ObjectNotFound, ObjectStore

log = logging.getLogger("denokv.lease")

LEASE_OBJECT = "lock.json"
DEFAULT_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    owner: str  # one run of one primary process
    primary_id: str
    host: str
    pid: int
    expires_ms: int
    epoch: int

    def encode(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "primary_id": self.primary_id,
                "host": self.host,
                "pid": self.pid,
                "expires_ms": self.expires_ms,
                "epoch": self.epoch,
            }
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> LeaseRecord | None:
        try:
            doc = json.loads(body)
            return cls(
                str(doc["owner"]),
                str(doc.get("primary_id", "")),
                str(doc.get("host", "")),
                int(doc.get("pid", 0)),
                int(doc["expires_ms"]),
                int(doc.get("epoch", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as expired

    def describe(self) -> str:
        until = time.strftime("%H:%M:%S", time.gmtime(self.expires_ms / 1000))
        return f"{self.host} pid {self.pid} (run {self.owner[:8]}) until {until} UTC"


class Lease:
    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        *,
        owner: str,
        primary_id: str,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.key = prefix + LEASE_OBJECT
        self.owner = owner
        self.primary_id = primary_id
        self.ttl_s = ttl_s
        self._clock = clock
        self._etag: str | None = None
        self._renewed_at = 0.0
        self.epoch = 0
        self.holder: LeaseRecord | None = None  # who holds it when we do not

    @property
    def held(self) -> bool:
        """Ours, by our own clock: renewed within the last TTL."""
        return self._etag is not None and self._clock() - self._renewed_at < self.ttl_s

    def due(self) -> bool:
        """Time to renew (a third of the TTL has passed), or to try taking it."""
        return not self.held or self._clock() - self._renewed_at >= self.ttl_s / 3

    async def ensure(self) -> bool:
        """Take or renew the lease if it is due; True while we hold it."""
        if not self.due():
            return True
        if self._etag is not None:
            if await self._write(if_match=self._etag):
                return True
            log.error("lost the backup lease on %s; shipping stops", self.key)
            self._etag = None
        return await self._take()

    async def _take(self) -> bool:
        try:
            body, etag = await self.store.get_versioned(self.key)
        except ObjectNotFound:
            return await self._write(if_absent=True)
        record = LeaseRecord.decode(body)
        if record is not None and record.owner == self.owner:
            self.epoch = record.epoch
            return await self._write(if_match=etag)
        now_ms = int(self._clock() * 1000)
        if record is not None and record.expires_ms > now_ms and not self._left_by_us(record):
            self.holder = record
            return False
        self.epoch = (record.epoch if record else 0) + 1
        if record is not None:
            log.warning("taking over the expired backup lease of %s", record.describe())
        return await self._write(if_match=etag)

    def _left_by_us(self, record: LeaseRecord) -> bool:
        """A lease of an earlier run of this primary on this host, whose process is gone.

        A restart after a crash need not wait out the TTL. The same database file
        (a copy shares its id) on another host, or a live process here, must.
        """
        if record.primary_id != self.primary_id or record.host != socket.gethostname():
            return False
        if record.pid == os.getpid():  # a new container: our pid, another run
            return True
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    async def _write(self, *, if_absent: bool = False, if_match: str | None = None) -> bool:
        now = self._clock()
        record = LeaseRecord(
            self.owner,
            self.primary_id,
            socket.gethostname(),
            os.getpid(),
            int((now + self.ttl_s) * 1000),
            self.epoch,
        )
        etag = await self.store.put(
            self.key, record.encode(), if_absent=if_absent, if_match=if_match
        )
        if etag is None:
            self._etag = None
            return False
        self._etag = etag
        self._renewed_at = now
        self.holder = None
        return True

    async def release(self) -> None:
        """Let a successor take over at once (a clean shutdown)."""
        if self._etag is None:
            return
        record = LeaseRecord(
            self.owner, self.primary_id, socket.gethostname(), os.getpid(), 0, self.epoch
        )
        await self.store.put(self.key, record.encode(), if_match=self._etag)
        self._etag = None
