from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, module_server

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One real `tessera serve` per test module and storage backend."""
    with module_server(request.param, tmp_path_factory.mktemp("tessera") / "data") as running:
        yield running


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
