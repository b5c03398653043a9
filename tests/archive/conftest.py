"""Archive fixtures: a PostgreSQL schema of our own (per test Redis db), emptied per test."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from pydantic import SecretStr

from shared.archive import ArchiveStore
from shared.settings import Settings
from tests.archive.support import PG_DSN
from tests.conftest import TEST_REDIS_URL


@pytest.fixture(scope="session")
def archive_schema() -> str:
    """Named after the test Redis db, which is already one per xdist worker and one per
    person sharing the machine (CLAUDE_QUEUE_TEST_REDIS_URL): two suites running at once
    never truncate or lock each other's tables."""
    db = urlsplit(TEST_REDIS_URL).path.strip("/") or "0"
    return f"cqtest_db{db}"


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
