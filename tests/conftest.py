"""Shared fixtures: a fresh store of each kind (SQLite file, PostgreSQL schema) per test.

The PostgreSQL server is the one these machines run (``SAFETY_MONITOR_TEST_PG``, default
``postgresql://postgres@127.0.0.1:5432/test``). Without it the PostgreSQL tests skip, except when
``CI=true``: there they fail, so a missing database can never pass as green.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.store import Store

PG_URL = os.environ.get("SAFETY_MONITOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_admin() -> object:
    import psycopg

    s = Store.parse(PG_URL)
    return psycopg.connect(
        host=s.host, port=s.port, user=s.user, password=s.password or None, dbname=s.dbname,
        autocommit=True, connect_timeout=5,
    )


def _pg_available() -> str | None:
    try:
        conn = _pg_admin()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    conn.close()  # type: ignore[attr-defined]
    return None


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_available())
    return _PG_PROBLEM[0]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL on a fresh schema, dropped afterwards."""
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL is not reachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    schema = "t_" + uuid.uuid4().hex[:12]
    with _pg_admin() as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        # A new connection: the server may have been restarted by the test (tests/test_faults.py).
        for _ in range(60):
            try:
                with _pg_admin() as conn:  # type: ignore[attr-defined]
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                break
            except Exception:
                time.sleep(0.5)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")  # type: ignore[no-any-return]
    return request.getfixturevalue("pg_url")  # type: ignore[no-any-return]


@pytest.fixture
def store(store_url: str) -> Store:
    return Store.parse(store_url)


@pytest.fixture(scope="session")
def broker() -> Iterator[object]:
    """One Tansu broker for the session; tests isolate themselves by topic name."""
    from tests.broker import Broker

    b = Broker().start()
    yield b
    b.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On the controlling process only: gather the fault tests' results into RELIABILITY.md."""
    if hasattr(session.config, "workerinput"):
        return
    from tests.reliability import write_report

    write_report()
