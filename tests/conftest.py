import compileall
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, module_server

BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the package once (in the xdist controller): every server the suite
    starts imports it twice, and with PYTHONDONTWRITEBYTECODE set, as on CI's machine, each
    import compiled every module from source (about a second of CPU per server)."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(Path(__file__).parent.parent / "tessera", quiet=1)


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
