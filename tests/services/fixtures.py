"""Session-scoped fixtures for the real services (registered in tests/conftest.py).

Each starts once per test session (per xdist worker) and is stopped at its end. A missing
binary fails the test with ServiceError naming what to install; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .azurite import AzuriteServer, start_azurite
from .moto_s3 import MotoS3, start_moto
from .postgres import PostgresServer, start_postgres


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server; use ``postgres.create_database(name)`` for an isolated database."""
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's Blob service; ``azurite.create_container(name)``, ``azurite.env()``."""
    with start_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's S3 server; ``moto_s3.create_bucket(name)``, ``moto_s3.env()``."""
    with start_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server
