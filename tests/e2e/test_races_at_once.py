"""Requests fired at the same moment at a server with two worker processes, on SQLite and
PostgreSQL: what the API promises for one request at a time (a duplicate is 409, an import
with update_existing updates) must hold when two of them race past each other's checks."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes

from tests.e2e.helpers import (
    API,
    cert_of,
    data,
    db_rows,
    error,
    foreign_root,
    foreign_signed,
    released_together,
    unique,
)
from tests.support import Server, module_server
from tests.tools import openssl_csr

AT_ONCE = 4
ROUNDS = 3


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Two worker processes: the racing requests land in different processes."""
    with module_server(request.param, tmp_path_factory.mktemp("races") / "data", workers=2) as up:
        yield up


def at_once(server: Server, path: str, **request: Any) -> list[httpx.Response]:
    """The same POST from AT_ONCE clients (each its own connection), released together."""
    clients = [server.client() for _ in range(AT_ONCE)]
    for client in clients:  # connected first, so the barrier releases requests, not handshakes
        client.get(f"{API}/health/ready").raise_for_status()
    return released_together(clients, lambda client: client.post(f"{API}{path}", **request))


def pem_file(pem: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("upload.pem", pem.encode(), "application/octet-stream")}


def statuses(answers: list[httpx.Response]) -> list[int]:
    return sorted(a.status_code for a in answers)


def one_created(answers: list[httpx.Response]) -> None:
    """One 201; every other answer the duplicate's 409, saying what it is."""
    assert statuses(answers) == [201] + [409] * (AT_ONCE - 1), [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert "already present" in error(answer, 409)


def test_same_certificate_imported_at_once_is_stored_once(server: Server, workdir: Path) -> None:
    root = foreign_root(workdir, f"/CN={unique('Race Root')}")
    for _ in range(ROUNDS):
        leaf = foreign_signed(workdir, root, f"/CN={unique('race')}.example", "v3_leaf")
        answers = at_once(server, "/certificates/import", files=pem_file(leaf.pem))
        fingerprint = cert_of(leaf.pem).fingerprint(hashes.SHA256()).hex()
        rows = db_rows(
            server, "SELECT id FROM certificates WHERE fingerprint_sha256 = ?", fingerprint
        )
        assert len(rows) == 1, rows
        one_created(answers)


def test_same_ca_imported_at_once_is_stored_once(server: Server, workdir: Path) -> None:
    for _ in range(ROUNDS):
        name = unique("Race CA")
        root = foreign_root(workdir, f"/CN={name}")
        answers = at_once(server, "/cas/import", files=pem_file(root.pem))
        rows = db_rows(
            server, "SELECT id FROM certificate_authorities WHERE subject = ?", f"CN={name}"
        )
        assert len(rows) == 1, rows
        one_created(answers)


def test_template_imports_with_update_existing_at_once_all_succeed(server: Server) -> None:
    """The same new template imported by several requests with update_existing: one creates
    it, the others update it; none fails because another created it first."""
    for _ in range(ROUNDS):
        name = unique("Race Template")
        entry = {"name": name, "template_type": "server", "validity_days": 90}
        body = {"json_content": json.dumps([entry]), "update_existing": True}
        answers = at_once(server, "/templates/import", json=body)
        assert statuses(answers) == [200] * AT_ONCE, [a.text for a in answers]
        reports = [data(a) for a in answers]
        assert sorted(r["imported"] for r in reports) == [0] * (AT_ONCE - 1) + [1], reports
        assert all(r["skipped"] == 0 for r in reports), reports


def test_user_imports_at_once_report_the_taken_name_per_row(server: Server) -> None:
    """The same new users imported by several requests at once: each name is created by
    one of them and reported as taken ("already exists", in `errors`) by the others, as it
    is one import after another; no import fails as a whole."""
    for _ in range(ROUNDS):
        names = [unique("race-user") for _ in range(3)]
        body = {"users": [{"username": n, "password": "race-password-1"} for n in names]}
        answers = at_once(server, "/users/import", json=body)
        assert statuses(answers) == [200] * AT_ONCE, [a.text for a in answers]
        reports = [data(a) for a in answers]
        assert sum(r["imported"] for r in reports) == len(names), reports
        errors = [e["error"] for r in reports for e in r["errors"]]
        assert len(errors) == len(names) * (AT_ONCE - 1), reports
        assert all("already exists" in e for e in errors), errors


def test_same_csr_smart_imported_at_once_is_stored_once(server: Server, workdir: Path) -> None:
    for _ in range(ROUNDS):
        name = unique("race-csr")
        _, csr = openssl_csr(workdir, f"/CN={name}")
        at_once(server, "/import/execute", json={"content": csr.read_text()})
        rows = db_rows(server, "SELECT id FROM csrs WHERE common_name = ?", name)
        assert len(rows) == 1, rows
