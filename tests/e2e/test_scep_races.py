"""SCEP requests fired at the same moment at a server with two worker processes, on SQLite
and PostgreSQL: a PKCSReq sent again is answered from its transaction's request, and that
must hold when the copies race past each other's check for an earlier request."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.e2e.helpers import data, released_together, unique
from tests.e2e.test_scep_protocol import (
    API,
    SUCCESS,
    Scep,
    Sent,
    ca_certificates,
    csr_der,
    default_profile,
    new_client,
    pki_message,
    profile,
    read_reply,
    rsa_ca,
    split,
)
from tests.support import Server, module_server

AT_ONCE = 8
ROUNDS = 3  # the race is not hit every time


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Two worker processes: the racing requests land in different processes."""
    data_dir = tmp_path_factory.mktemp("scep-races") / "data"
    with module_server(request.param, data_dir, workers=2) as up:
        yield up


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP Race Root") as made:
        yield made


def at_once(server: Server, sent: Sent, path: str) -> list[httpx.Response]:
    """The same pkiMessage from AT_ONCE clients (each its own connection), released
    together."""
    clients = [httpx.Client(base_url=server.http_url, timeout=60) for _ in range(AT_ONCE)]
    for client in clients:  # connected first, so the barrier releases requests, not handshakes
        client.get(f"{path}?operation=GetCACaps").raise_for_status()

    def post(client: httpx.Client) -> httpx.Response:
        return client.post(
            f"{path}?operation=PKIOperation",
            content=sent.der,
            headers={"content-type": "application/x-pki-message"},
        )

    return released_together(clients, post)


def requests_for(api: httpx.Client, transaction_id: str) -> list[dict[str, Any]]:
    rows = data(api.get(f"{API}/scep/requests", params={"per_page": 100}))
    return [row for row in rows if row["transaction_id"] == transaction_id]


def test_same_pkcsreq_at_once_issues_one_certificate(
    server: Server, scep: Scep, api: httpx.Client
) -> None:
    for _ in range(ROUNDS):
        one_certificate_for(server, api, scep.path, scep.ra, scep.challenge)


def test_same_pkcsreq_at_once_spends_its_dynamic_challenge_once(
    server: Server, scep: Scep, api: httpx.Client
) -> None:
    """The copies that lose the race find the challenge spent, and are answered from the
    request that spent it rather than refused."""
    ca_id = rsa_ca(api, unique("SCEP Race Dynamic Root"))
    path = profile(api, scep, ca_id=ca_id, challenge_type="dynamic", auto_approve=True)
    _ca, ra = split(ca_certificates(scep.http, path))
    for _ in range(ROUNDS):
        challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
        one_certificate_for(server, api, path, ra, challenge)


def one_certificate_for(
    server: Server, api: httpx.Client, path: str, ra: x509.Certificate, challenge: str
) -> None:
    """Every copy answered SUCCESS with the one certificate issued, and one request row."""
    cn = unique("race-device").lower()
    client = new_client()
    sent = pki_message(client, ra, csr_der(client, cn, challenge))
    replies = [read_reply(answer, client, ra) for answer in at_once(server, sent, path)]
    assert [reply.status for reply in replies] == [SUCCESS] * AT_ONCE, replies
    assert all(len(reply.certificates) == 1 for reply in replies), replies
    issued = {reply.certificates[0].serial_number for reply in replies}
    assert len(issued) == 1, issued
    listed = data(api.get(f"{API}/certificates", params={"search": cn}))
    assert [int(row["serial_number"], 16) for row in listed] == list(issued), listed
    (row,) = requests_for(api, sent.transaction_id)
    assert row["status"] == "issued" and row["certificate_id"] == listed[0]["id"], row
