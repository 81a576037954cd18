"""Fixtures several end-to-end modules share (the server and API client are in
tests/conftest.py)."""

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.accounts_helpers import API, Mailbox, running_mailbox
from tests.e2e.helpers import data
from tests.support import Server


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
