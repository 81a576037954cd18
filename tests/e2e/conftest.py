"""Fixtures several end-to-end modules share (the server and API client are in
tests/conftest.py)."""

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.accounts_helpers import API, Mailbox, running_mailbox
from tests.e2e.acme_helpers import Acme, AcmeEnv, acme_env, registered
from tests.e2e.helpers import data
from tests.support import Server, database


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server for the module (started only where a test asks for it)."""
    with running_mailbox() as box:
        yield box


@pytest.fixture
def mail(server: Server, api: httpx.Client, mailbox: Mailbox) -> Mailbox:
    """The mailbox, with Tessera's email settings pointed at it."""
    data(api.patch(f"{API}/settings/email", json=mailbox.settings()))
    return mailbox


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AcmeEnv]:
    """An ACME server (and its challenge DNS) per module, on SQLite and PostgreSQL."""
    with database(request.param) as url, acme_env(url, tmp_path_factory.mktemp("acme")) as running:
        yield running


@pytest.fixture
def account(env: AcmeEnv) -> Iterator[Acme]:
    """A registered ACME client on the module's server (modules that need another kind of
    account define their own)."""
    with registered(env) as client:
        yield client
