"""Archive fixtures: a PostgreSQL schema of our own (per xdist worker), emptied per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from pydantic import SecretStr

from shared.archive import ArchiveStore
from shared.settings import Settings
from tests.archive.support import PG_DSN


@pytest.fixture(scope="session")
def archive_schema() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"cqtest_{worker}" if worker else "cqtest"


@pytest.fixture
def archive_settings(settings: Settings, archive_schema: str) -> Settings:
    """The test settings with the archive on, in our own schema."""
    return settings.model_copy(
        update={"archive_dsn": SecretStr(PG_DSN), "archive_schema": archive_schema}
    )


@pytest.fixture
def archive(archive_settings: Settings) -> Iterator[ArchiveStore]:
    """The migrated archive, empty (TRUNCATE) before the test."""
    try:
        store = ArchiveStore.open(archive_settings)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering at {PG_DSN} (run .ci/ensure-postgres): {exc}")
    store.conn.execute("TRUNCATE events, runs")
    store.conn.commit()
    yield store
    store.close()
