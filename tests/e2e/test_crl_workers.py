"""CRL publication with two server processes on one database, and across a restart: one CRL
number sequence, never repeated, never going back; every revocation ends up on the CRL."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.e2e.accounts_helpers import db
from tests.e2e.helpers import API, create_root, data, issue, unique
from tests.e2e.test_crl import number, wait_for_crl
from tests.support import Server, admin_api_key, database, start_server, stop_server

BACKENDS = ["sqlite", "postgresql"]
REVOCATIONS = 30


def published_numbers(server: Server, ca_id: int) -> list[tuple[int, str]]:
    """(CRL number, kind) of the CRLs stored for the CA, in the order they were stored."""
    rows = db(server, "SELECT crl_number, kind FROM crls WHERE ca_id = ? ORDER BY id", (ca_id,))
    return [(int(n), str(kind)) for n, kind in rows]


def publish_audit_numbers(server: Server, ca_id: int) -> list[int]:
    import json

    rows = db(
        server,
        "SELECT details FROM audit_logs WHERE action IN ('crl.publish', 'crl.regenerate')"
        " AND resource_type = 'ca' AND resource_id = ? ORDER BY id",
        (str(ca_id),),
    )
    numbers = []
    for (details,) in rows:
        parsed = json.loads(details) if isinstance(details, str) else details
        numbers.append(int(parsed["crl_number"]))
    return numbers


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_share_one_crl_number_sequence(backend: str, tmp_path: Path) -> None:
    with database(backend) as url:
        server = start_server(tmp_path / "data", url, workers=2)
        try:
            server.api_key = admin_api_key(server)
            ca_id, last = _revoke_concurrently(server)
        finally:
            stop_server(server)
        # A restart (one process now) continues the sequence from the database.
        again = start_server(tmp_path / "data", url, workers=1)
        try:
            again.api_key = admin_api_key(again)
            with again.client() as api:
                regenerated = data(api.post(f"{API}/crl/{ca_id}/regenerate"))
            assert regenerated["crl_number"] > last
            numbers = publish_audit_numbers(again, ca_id)
            assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))
        finally:
            stop_server(again)


def _revoke_concurrently(server: Server) -> tuple[int, int]:
    with server.client() as api:
        root = create_root(api, unique("Workers CRL Root"))
        certs = [issue(api, root["id"], f"w{i}.example.com") for i in range(REVOCATIONS)]

    def revoke(cert: dict[str, Any]) -> None:
        with server.client() as client:
            data(client.post(f"{API}/certificates/{cert['id']}/revoke", json={}))

    def fetch_numbers(_: int) -> int | None:
        response = httpx.get(f"{server.http_url}/cdp/{root['refid']}.crl", timeout=30)
        if response.status_code != 200:
            return None
        return number(x509.load_der_x509_crl(response.content))

    with ThreadPoolExecutor(8) as pool:
        revoking = pool.map(revoke, certs)
        fetched = list(pool.map(fetch_numbers, range(40)))  # served by both processes
        list(revoking)
    assert all(n is None or n >= 1 for n in fetched)
    _, crl = wait_for_crl(server, root["id"], lambda c: len(c) == REVOCATIONS)
    stored = published_numbers(server, root["id"])
    numbers = [n for n, _ in stored]
    assert len(numbers) == len(set(numbers)), stored  # no number published twice
    audited = publish_audit_numbers(server, root["id"])
    assert audited == sorted(audited) and len(audited) == len(set(audited)), audited
    # Both processes follow every change, yet the burst made far fewer CRLs than revocations.
    assert len(audited) <= REVOCATIONS / 2, audited
    return root["id"], number(crl)
