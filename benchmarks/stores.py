"""Fresh stores for benchmark runs: an SQLite file, or a PostgreSQL schema dropped afterwards."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from events.store import Store

PG = os.environ.get("SAFETY_MONITOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def fresh_store(kind: str, tmp: Path) -> Store:
    if kind == "sqlite":
        return Store.parse(f"sqlite:///{tmp}/{uuid.uuid4().hex}.db")
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    return Store.parse(f"{PG}?schema={schema}")


def drop(store: Store) -> None:
    if store.kind == "postgresql":
        import psycopg

        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
