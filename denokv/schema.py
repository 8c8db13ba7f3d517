"""The SQLite layout shared with Deno's own local KV engine.

The tables and the three migrations are those Deno runs for `Deno.openKv(path)`
(KV_FACTS §11.1), so a file written by either program opens in the other.
Tables of our own carry a `denokv_` prefix, which Deno ignores.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    """
    create table data_version (
      k integer primary key,
      version integer not null
    );
    insert into data_version (k, version) values (0, 0);
    create table kv (
      k blob primary key,
      v blob not null,
      v_encoding integer not null,
      version integer not null
    ) without rowid;
    """,
    """
    create table queue (
      ts integer not null,
      id text not null,
      data blob not null,
      backoff_schedule text not null,
      keys_if_undelivered blob not null,
      primary key (ts, id)
    );
    create table queue_running(
      deadline integer not null,
      id text not null,
      data blob not null,
      backoff_schedule text not null,
      keys_if_undelivered blob not null,
      primary key (deadline, id)
    );
    """,
    """
    alter table kv add column seq integer not null default 0;
    alter table data_version add column seq integer not null default 0;
    alter table kv add column expiration_ms integer not null default -1;
    create index kv_expiration_ms_idx on kv (expiration_ms);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(RuntimeError):
    """The file is not a Deno KV database this version understands."""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a writable connection's schema up to date in one transaction."""
    conn.execute("begin immediate")
    try:
        conn.execute(
            "create table if not exists migration_state("
            "k integer not null primary key, version integer not null)"
        )
        row = conn.execute("select version from migration_state where k = 0").fetchone()
        current = row[0] if row else 0
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {current} is newer than this server "
                f"supports ({SCHEMA_VERSION})"
            )
        for step in range(current, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[step]):
                conn.execute(statement)
        if current != SCHEMA_VERSION:
            conn.execute(
                "insert into migration_state (k, version) values (0, ?) "
                "on conflict(k) do update set version = excluded.version",
                (SCHEMA_VERSION,),
            )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise


def check_readable(conn: sqlite3.Connection) -> None:
    """A read-only open cannot migrate: insist the schema is already current."""
    try:
        row = conn.execute("select version from migration_state where k = 0").fetchone()
    except sqlite3.OperationalError as exc:
        raise SchemaError(f"not a Deno KV database: {exc}") from exc
    if row is None or row[0] != SCHEMA_VERSION:
        found = row[0] if row else "none"
        raise SchemaError(
            f"database schema version is {found}, expected {SCHEMA_VERSION}; "
            "open it once without --read-only to migrate"
        )


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
