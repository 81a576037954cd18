"""Fixtures of the unit tests that need a real database."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tessera.storage.db import make_engine, migrate
from tests.support import database


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database built by the migrations, on each backend (PostgreSQL: a throwaway one)."""
    with database(request.param) as url:
        built = make_engine(url or f"sqlite:///{tmp_path / 'tessera.db'}")
        migrate(built)
        try:
            yield built
        finally:
            built.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database on each backend, for tests that run the migrations themselves."""
    with database(request.param) as url:
        engine = make_engine(url or f"sqlite:///{tmp_path / 'tessera.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
