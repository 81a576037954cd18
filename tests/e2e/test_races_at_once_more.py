"""More requests at the same moment at a server with two worker processes, on SQLite and
PostgreSQL (as tests/e2e/test_races_at_once.py): different requests on one record (a key
attached as its CSR is signed, a revocation and a deletion, an issuance and the disabling
of its CA) must end as one after the other would, and the same request twice (a sync of
the trust store) as idempotent as it is one at a time."""

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.accounts_helpers import create_user
from tests.e2e.helpers import (
    API,
    create_intermediate,
    create_root,
    data,
    db_rows,
    error,
    foreign_root,
    issue,
    unique,
)
from tests.e2e.test_issuer_groups import imported_group
from tests.support import Server, module_server
from tests.tools import openssl_csr

AT_ONCE = 4
ROUNDS = 3
Call = tuple[str, str, dict[str, Any]]  # method, path under /api/v2, httpx keywords


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Two worker processes: the racing requests land in different processes."""
    with module_server(request.param, tmp_path_factory.mktemp("races") / "data", workers=2) as up:
        yield up


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def together(server: Server, calls: list[Call], delays: list[float] | None = None) -> list[Any]:
    """Each call from its own client (connected first), released together by a barrier (the
    i-th after delays[i] seconds); the answers, and when each arrived, in the calls' order."""
    barrier = threading.Barrier(len(calls))
    clients = [server.client() for _ in calls]
    for client in clients:
        client.get(f"{API}/health/ready").raise_for_status()

    def fire(index: int) -> tuple[httpx.Response, datetime]:
        method, path, request = calls[index]
        barrier.wait()
        time.sleep((delays or [0.0] * len(calls))[index])
        answer = clients[index].request(method, f"{API}{path}", **request)
        return answer, datetime.now(UTC)

    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(fire, range(len(calls))))
    finally:
        for client in clients:
            client.close()


def answers_of(calls: list[Call], server: Server) -> list[httpx.Response]:
    return [answer for answer, _ in together(server, calls)]


def db_execute(server: Server, sql: str) -> None:
    """Write to the server's database directly (setting up a round, not under test)."""
    if server.database_url:
        import psycopg

        with psycopg.connect(server.database_url) as conn:
            conn.execute(sql)
        return
    with sqlite3.connect(server.data_dir / "tessera.db", timeout=30) as conn:
        conn.execute(sql)


def no_server_error(answers: list[httpx.Response]) -> None:
    assert all(a.status_code < 500 for a in answers), [a.text for a in answers]


# --- the trust store ------------------------------------------------------------------


def test_same_trusted_certificate_added_at_once_is_a_clear_conflict(
    server: Server, workdir: Path
) -> None:
    """One add stores it; the others are told it is in the trust store already, as one add
    after another is (not a generic clash of records)."""
    for _ in range(ROUNDS):
        root = foreign_root(workdir, f"/CN={unique('Trusted Race')}")
        body = {"json": {"certificate": root.pem}}
        answers = answers_of([("POST", "/truststore", body)] * AT_ONCE, server)
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] + [409] * (AT_ONCE - 1), [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 409:
                assert "already in the trust store" in error(answer, 409)


def test_trust_store_syncs_at_once_stay_idempotent(server: Server) -> None:
    """Syncs with the system bundle at once all succeed, and each entry is there once."""
    for _ in range(ROUNDS):
        db_execute(server, "DELETE FROM trusted_certificates WHERE source = 'system'")
        answers = answers_of([("POST", "/truststore/sync", {})] * AT_ONCE, server)
        assert [a.status_code for a in answers] == [200] * AT_ONCE, [a.text for a in answers]
        stored = db_rows(
            server, "SELECT count(*) FROM trusted_certificates WHERE source = 'system'"
        )
        assert stored[0][0] > 0
        assert sum(data(a)["added"] for a in answers) == stored[0][0], [a.text for a in answers]


def test_same_trust_store_file_imported_at_once(server: Server, workdir: Path) -> None:
    """A bundle imported by several requests at once: each entry is added by one of them and
    skipped by the others; none fails."""
    for _ in range(ROUNDS):
        roots = [foreign_root(workdir, f"/CN={unique('Bundle Race')}") for _ in range(3)]
        bundle = "".join(r.pem for r in roots).encode()
        upload = {"files": {"file": ("bundle.pem", bundle, "application/octet-stream")}}
        answers = answers_of([("POST", "/truststore/import", upload)] * AT_ONCE, server)
        assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
        reports = [a.json()["data"] for a in answers]
        assert sum(r["imported"] for r in reports) == len(roots), reports


# --- CSRs -------------------------------------------------------------------------------


def test_key_attached_while_its_csr_is_signed(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    """A key attached as the CSR is signed either goes with the certificate (attached first)
    or is refused (signed first): never left on the signed request, never accepted and then
    missing from the certificate."""
    ca = create_root(api, unique("CSR Race CA"))
    for _ in range(ROUNDS * 2):
        key, csr = openssl_csr(workdir, f"/CN={unique('csr-race')}.example")
        row = data(api.post(f"{API}/csrs", json={"csr": csr.read_text()}), 201)
        attach = ("POST", f"/csrs/{row['id']}/key", {"json": {"key": key.read_text()}})
        sign = ("POST", f"/csrs/{row['id']}/sign", {"json": {"ca_id": ca["id"]}})
        attached, signed = answers_of([attach, sign], server)
        assert signed.status_code == 201, signed.text
        assert attached.status_code in (200, 409), attached.text
        csr_key, cert_id = db_rows(
            server, "SELECT encrypted_private_key, certificate_id FROM csrs WHERE id = ?", row["id"]
        )[0]
        assert csr_key is None, "a key was left on the signed CSR"
        (cert_key,) = db_rows(
            server, "SELECT encrypted_private_key FROM certificates WHERE id = ?", cert_id
        )[0]
        if attached.status_code == 200:
            assert cert_key is not None, "the key was accepted but its certificate lacks it"


# --- certificates: revocation and deletion ----------------------------------------------


def test_certificate_revoked_while_deleted_keeps_its_crl_entry(
    server: Server, api: httpx.Client
) -> None:
    """A revocation and a deletion at once: if both succeed, the certificate was revoked
    before it went, and its CRL entry must be retained as for any deleted revoked one."""
    ca = create_root(api, unique("Revoke Race CA"))
    for _ in range(ROUNDS * 2):
        cert = issue(api, ca["id"], f"{unique('revoke-race')}.example")
        revoke = ("POST", f"/certificates/{cert['id']}/revoke", {"json": {"reason": "superseded"}})
        delete = ("DELETE", f"/certificates/{cert['id']}", {})
        revoked, deleted = answers_of([revoke, delete], server)
        no_server_error([revoked, deleted])
        if revoked.status_code == 200 and deleted.status_code == 204:
            kept = db_rows(
                server,
                "SELECT count(*) FROM crl_retained_entries WHERE certificate_id = ?",
                cert["id"],
            )
            assert kept[0][0] == 1, "a revoked certificate left its CRL with its deletion"


def test_revoked_certificate_deleted_twice_at_once(server: Server, api: httpx.Client) -> None:
    """One deletion removes it (its CRL entry retained once); the others find it gone."""
    ca = create_root(api, unique("Delete Race CA"))
    for _ in range(ROUNDS):
        cert = issue(api, ca["id"], f"{unique('delete-race')}.example")
        revoke = {"reason": "superseded"}
        data(api.post(f"{API}/certificates/{cert['id']}/revoke", json=revoke))
        answers = answers_of([("DELETE", f"/certificates/{cert['id']}", {})] * AT_ONCE, server)
        codes = sorted(a.status_code for a in answers)
        assert codes == [204] + [404] * (AT_ONCE - 1), [a.text for a in answers]
        kept = db_rows(
            server, "SELECT count(*) FROM crl_retained_entries WHERE certificate_id = ?", cert["id"]
        )
        assert kept[0][0] == 1, kept


# --- issuing under a CA that is being disabled or deleted ------------------------------


def slow_issuances(ca_id: int, count: int) -> list[Call]:
    """Issuances whose key takes a while to make (RSA-4096), between the CA's read and the
    certificate's write: the window in which the CA is disabled or deleted."""
    body = {"ca_id": ca_id, "key_algorithm": "RSA", "key_size": 4096, "validity_days": 30}
    return [
        ("POST", "/certificates", {"json": {**body, "common_name": f"{unique('slow')}.example"}})
        for _ in range(count)
    ]


def csr_issuances(ca_id: int, count: int) -> list[Call]:
    """Issuances from CSRs: quick to sign, so read their issuer's chain early in a batch."""
    calls: list[Call] = []
    for _ in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{unique('csr')}.example")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        calls.append(("POST", "/certificates", {"json": {"ca_id": ca_id, "csr": pem}}))
    return calls


def stored_time(value: object) -> datetime:
    """A timestamp column read back (PostgreSQL: a datetime; SQLite: its text), in UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_no_certificate_written_under_a_ca_after_its_disabling_committed(
    server: Server, api: httpx.Client
) -> None:
    """A certificate whose row was written after the CA's disabling had been answered (so
    committed) was issued by a disabled CA: the issuance must be refused instead."""
    for _ in range(ROUNDS):
        ca = create_root(api, unique("Disable Race CA"))
        disable = ("PATCH", f"/cas/{ca['id']}", {"json": {"is_active": False}})
        calls = [*slow_issuances(ca["id"], 3), disable]
        answered = together(server, calls, delays=[0, 0, 0, 0.15])
        no_server_error([a for a, _ in answered])
        disabled_answer, disabled_at = answered[-1]
        assert disabled_answer.status_code == 200, disabled_answer.text
        rows = db_rows(server, "SELECT id, created_at FROM certificates WHERE ca_id = ?", ca["id"])
        late = [cert_id for cert_id, created in rows if stored_time(created) > disabled_at]
        assert not late, f"certificates {late} written after CA {ca['id']} was disabled"


def test_no_certificate_written_under_a_ca_after_a_ca_above_it_was_revoked(
    server: Server, api: httpx.Client
) -> None:
    """A certificate written after the revocation of a CA above its issuer had been answered
    would not validate from the moment it exists: the issuance must be refused instead."""
    for _ in range(ROUNDS):
        root = create_root(api, unique("Above Race Root"))
        middle = create_intermediate(api, root["id"], unique("Above Race Middle"))
        issuing = create_intermediate(api, middle["id"], unique("Above Race Issuing"))
        revoke = ("POST", f"/cas/{middle['id']}/revoke", {"json": {"reason": "keyCompromise"}})
        # Signed in a batch with slow ones: written only once those are done.
        calls = [*csr_issuances(issuing["id"], 3), *slow_issuances(issuing["id"], 3), revoke]
        answered = together(server, calls, delays=[0, 0, 0, 0, 0, 0, 0.4])
        no_server_error([a for a, _ in answered])
        revoked_answer, revoked_at = answered[-1]
        assert revoked_answer.status_code == 200, revoked_answer.text
        rows = db_rows(
            server, "SELECT id, created_at FROM certificates WHERE ca_id = ?", issuing["id"]
        )
        late = [cert_id for cert_id, created in rows if stored_time(created) > revoked_at]
        assert not late, f"certificates {late} written after CA {middle['id']} was revoked"


def test_ca_deleted_while_issuing_fails_cleanly(server: Server, api: httpx.Client) -> None:
    """Issuances racing the deletion of their CA: either the deletion waits and is refused
    (the CA has issued), or the issuances are told the CA is gone; no certificate is left
    without its CA, and no issuance fails with a generic clash of records."""
    for _ in range(ROUNDS):
        ca = create_root(api, unique("Delete CA Race"))
        calls = [*slow_issuances(ca["id"], 3), ("DELETE", f"/cas/{ca['id']}", {})]
        answers = [a for a, _ in together(server, calls, delays=[0, 0, 0, 0.15])]
        no_server_error(answers)
        *issued, deleted = answers
        assert deleted.status_code in (204, 409), deleted.text
        for answer in issued:
            if answer.status_code != 201:
                assert "conflicts with an existing record" not in answer.text, answer.text
        if deleted.status_code == 204:
            assert all(a.status_code != 201 for a in issued), [a.text for a in issued]


def test_template_deleted_while_issuing_with_it_fails_cleanly(
    server: Server, api: httpx.Client
) -> None:
    """Issuances with a template deleted at the same moment: issued with it (the deletion
    then unlinks their certificates, as it does any), or told the template is gone; never a
    generic clash of records."""
    ca = create_root(api, unique("Template Race CA"))
    for _ in range(ROUNDS):
        body = {"name": unique("race-template"), "template_type": "server", "validity_days": 30}
        template = data(api.post(f"{API}/templates", json=body), 201)
        calls = slow_issuances(ca["id"], 3)
        for _method, _path, request in calls:
            request["json"]["template_id"] = template["id"]
        calls.append(("DELETE", f"/templates/{template['id']}", {}))
        answers = [a for a, _ in together(server, calls, delays=[0, 0, 0, 0.15])]
        no_server_error(answers)
        assert answers[-1].status_code == 204, answers[-1].text
        for answer in answers[:-1]:
            if answer.status_code != 201:
                assert "conflicts with an existing record" not in answer.text, answer.text


# --- group membership -----------------------------------------------------------------


def test_same_member_added_at_once_is_a_clear_conflict(server: Server, api: httpx.Client) -> None:
    """One addition makes the membership; the others are told the user is a member already,
    as one after another are (not a generic clash of records)."""
    for _ in range(ROUNDS):
        group = data(api.post(f"{API}/groups", json={"name": unique("race-group")}), 201)
        user = create_user(api)
        add = ("POST", f"/groups/{group['id']}/members", {"json": {"user_id": user["id"]}})
        answers = answers_of([add] * AT_ONCE, server)
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] + [409] * (AT_ONCE - 1), [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 409:
                assert "already a member" in error(answer, 409)


def test_same_member_removed_at_once_is_removed_once(server: Server, api: httpx.Client) -> None:
    """One removal removes (and is audited); the others find no membership left (404)."""
    for _ in range(ROUNDS):
        group = data(api.post(f"{API}/groups", json={"name": unique("race-group")}), 201)
        user = create_user(api)
        data(api.post(f"{API}/groups/{group['id']}/members", json={"user_id": user["id"]}), 201)
        remove = ("DELETE", f"/groups/{group['id']}/members/{user['id']}", {})
        answers = answers_of([remove] * AT_ONCE, server)
        codes = sorted(a.status_code for a in answers)
        assert codes == [204] + [404] * (AT_ONCE - 1), [a.text for a in answers]


# --- names taken at once -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["templates", "groups"])
def test_same_name_created_at_once_says_what_was_taken(server: Server, kind: str) -> None:
    """One creation gets the name; the others are told that name is taken, as they are one
    at a time, not given a generic clash of records."""
    raced = []  # refused by the database's unique index rather than the service's check
    for _ in range(ROUNDS * 2):
        name = unique(f"race-{kind}")
        answers = answers_of([("POST", f"/{kind}", {"json": {"name": name}})] * AT_ONCE, server)
        no_server_error(answers)
        assert sorted(a.status_code for a in answers) == [201] + [409] * (AT_ONCE - 1)
        for answer in answers:
            if answer.status_code == 409:
                message = error(answer, 409)
                assert "already exists" in message, message
                raced += [message] if "with this name" in message else []
    assert raced, "no request reached the database's unique index: the race was not run"
    assert set(raced) == {f"a {kind.removesuffix('s')} with this name already exists"}, raced


# --- an issuer group's row deleted as the group's first CRL is published ----------------


def test_group_row_deleted_during_the_groups_first_crl(server: Server, api: httpx.Client) -> None:
    """A root imported twice is one issuer group; deleting one row while the group's first
    CRLs are being published must end as one after the other would: no server error."""
    for _ in range(ROUNDS * 3):  # the window is narrow: before the fix, ~1 run in 2 hit it
        rows, _ = imported_group(api, unique("First CRL Race"))
        old, new = rows["old"]["id"], rows["new"]["id"]
        publish = ("POST", f"/crl/{old}/regenerate", {})
        answers = answers_of([publish, publish, ("DELETE", f"/cas/{new}", {})], server)
        no_server_error(answers)
        assert answers[-1].status_code == 204, answers[-1].text


def test_issuances_from_a_ca_and_from_a_ca_below_it_at_once(
    server: Server, api: httpx.Client
) -> None:
    """Batches that sign from a root and from its intermediate at once hold both CAs (the
    root as a signer, or as the CA above the intermediate): no two may wait for each other
    in a circle (PostgreSQL aborts one: a server error)."""
    root = create_root(api, unique("Mixed Batch Root"))
    inter = create_intermediate(api, root["id"], unique("Mixed Batch Intermediate"))
    for _ in range(ROUNDS * 3):  # before the fix, about one round in four hit it
        calls = [*csr_issuances(root["id"], 4), *csr_issuances(inter["id"], 12)]
        answers = answers_of(calls, server)
        no_server_error(answers)
        assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
