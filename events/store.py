"""Store URLs: which database holds the ledger, and the eventsourcing settings that follow.

``sqlite:///ABSOLUTE/PATH.db`` (the embedded default; sibling files next to it hold the read
models) or ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

STORE_ENV = "SAFETY_MONITOR_STORE"
DEFAULT_SQLITE_PATH = Path("safety-monitor-data") / "ledger.db"


class StoreURLError(ValueError):
    pass


@dataclass(frozen=True)
class Store:
    """A parsed store URL."""

    url: str
    kind: str  # "sqlite" or "postgresql"
    path: Path | None = None
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"

    @classmethod
    def parse(cls, url: str) -> Store:
        parsed = urlparse(url)
        if parsed.scheme == "sqlite":
            raw = unquote(parsed.path)
            if not url.startswith("sqlite:///") or not raw.startswith("/"):
                raise StoreURLError(
                    f"store URL {url!r}: an SQLite URL needs an absolute path, "
                    "as in sqlite:///home/me/ledger.db"
                )
            return cls(url=url, kind="sqlite", path=Path("/" + raw.lstrip("/")))
        if parsed.scheme in ("postgresql", "postgres"):
            if not parsed.hostname or not parsed.path.strip("/"):
                raise StoreURLError(
                    f"store URL {url!r}: write postgresql://USER@HOST:PORT/DB"
                )
            schema = parse_qs(parsed.query).get("schema", ["public"])[0]
            return cls(
                url=url,
                kind="postgresql",
                host=parsed.hostname,
                port=parsed.port or 5432,
                user=unquote(parsed.username or "postgres"),
                password=unquote(parsed.password or ""),
                dbname=parsed.path.strip("/"),
                schema=schema,
            )
        raise StoreURLError(
            f"store URL {url!r}: use sqlite:///ABSOLUTE/PATH.db or postgresql://USER@HOST:PORT/DB"
        )

    @classmethod
    def resolve(cls, url: str | None = None) -> Store:
        """The store named by ``--store``, else ``SAFETY_MONITOR_STORE``, else the default file."""
        chosen = url or os.environ.get(STORE_ENV)
        if not chosen:
            chosen = "sqlite:///" + str(DEFAULT_SQLITE_PATH.resolve()).lstrip("/")
        return cls.parse(chosen)

    def sibling(self, name: str) -> Path:
        """A file next to the SQLite ledger, e.g. ``ledger.incidence.db`` for a read model."""
        assert self.path is not None
        return self.path.with_name(f"{self.path.stem}.{name}{self.path.suffix}")

    def eventsourcing_env(self, recorder_topic: str) -> dict[str, str]:
        """Settings for an eventsourcing application on this store."""
        if self.kind == "sqlite":
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.path),
                "SQLITE_LOCK_TIMEOUT": "30",
                "PROCESS_RECORDER_TOPIC": recorder_topic,
            }
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_LOCK_TIMEOUT": "30",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
            # Each ledger and read model has its own pool, and one process opens several (status: five):
            # the library's default of five open connections each would exhaust the server's limit.
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "4",
            "PROCESS_RECORDER_TOPIC": recorder_topic,
        }

    def display(self) -> str:
        """The URL without its password, for logs and reports."""
        if self.kind == "sqlite":
            return f"sqlite://{self.path}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}?schema={self.schema}"


def store_exists(store: Store) -> bool:
    """Whether the store holds a ledger. Raises StoreURLError at once, naming it, when a PostgreSQL
    server cannot be reached or has no such database (instead of a pool's 30-second wait)."""
    if store.kind == "sqlite":
        assert store.path is not None
        return store.path.is_file()
    import psycopg

    try:
        with psycopg.connect(host=store.host, port=store.port, user=store.user, password=store.password or None,
                             dbname=store.dbname, connect_timeout=5) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (f'"{store.schema}".ledger_message_index',)).fetchone()
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "does not exist" in text and "database" in text:
            raise StoreURLError(f"store {store.display()}: PostgreSQL at {store.host}:{store.port} has no database "
                                f"{store.dbname!r}; create it (createdb {store.dbname}) or correct --store") from None
        raise StoreURLError(f"store {store.display()}: cannot connect to PostgreSQL at {store.host}:{store.port} "
                            f"({text}); check that the server runs and the URL is right") from None
    return bool(row and row[0])

