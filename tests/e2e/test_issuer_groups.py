"""A re-issued root: two CA rows of one organization with the same subject and the same key
(importing a root again with a new validity makes a new CA) are one issuer to a relying
party, whose OCSP CertID hashes only that name and key and whose CRL names only them. So
OCSP answers for what both rows issued, whichever row's certificate the client names as
issuer; each row's distribution point serves one CRL listing the revocations of both, in
one CRL number sequence; openssl refuses a revoked certificate of either row with either
CRL. Another organization holding the same root is another issuer. Both storage backends."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.helpers import API, data, issue, self_signed_ca, unique
from tests.e2e.test_crl import listed, not_listed, number, pem_file, verify, wait_for_crl
from tests.e2e.test_inventory_isolation import foreign_admin_key
from tests.support import Server
from tests.tools import openssl

ROWS = ("old", "new")
REVOKED = ("old-revoked", "new-revoked")  # one revoked certificate under each row


@dataclass
class Reissued:
    """The two rows (API views with their PEM) and certificates issued under each."""

    dir: Path
    rows: dict[str, dict[str, Any]]
    certs: dict[str, dict[str, Any]]
    key_pem: str
    common_name: str

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def revoked_by_both(self) -> Callable[[x509.CertificateRevocationList], bool]:
        first, second = (listed(self.certs[name]["serial_number"]) for name in REVOKED)
        return lambda crl: first(crl) and second(crl)


def reissued_root(key: ec.EllipticCurvePrivateKey, name: str, days: int) -> str:
    """A self-signed root for `key`; called twice with one key and name, a re-issued root."""
    cert, _ = self_signed_ca(name, timedelta(days=days), key=key)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def import_root(api: httpx.Client, pem: str, key_pem: str) -> dict[str, Any]:
    body = {"certificate": pem, "private_key": key_pem}
    imported: dict[str, Any] = data(api.post(f"{API}/cas/import", json=body), 201)
    return imported


def leaf(api: httpx.Client, ca_id: int, name: str) -> dict[str, Any]:
    issued = issue(api, ca_id, f"{name}.reissued.test")
    cert: dict[str, Any] = data(api.get(f"{API}/certificates/{issued['id']}"))
    return cert


def revoke(api: httpx.Client, cert: dict[str, Any]) -> None:
    data(api.post(f"{API}/certificates/{cert['id']}/revoke", json={"reason": "keyCompromise"}))


def imported_group(api: httpx.Client, common_name: str) -> tuple[dict[str, Any], str]:
    """One root imported twice with its key, living one year ("old") then two ("new"): the
    rows of one issuer group, each with its PEM; and the key's PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    rows = {
        row: import_root(api, reissued_root(key, common_name, days), key_pem)
        for row, days in zip(ROWS, (365, 730), strict=True)
    }
    for row in rows.values():
        row["pem"] = data(api.get(f"{API}/cas/{row['id']}"))["pem"]
    return rows, key_pem


@pytest.fixture(scope="module")
def reissued(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Reissued:
    """The reviewer's scenario: the same root imported twice (one year, then two), with its
    key; a certificate revoked under each row, and a good one under the older row."""
    folder = tmp_path_factory.mktemp("reissued")
    common_name = unique("Reissued Root")
    with server.client() as api:
        rows, key_pem = imported_group(api, common_name)
        certs = {
            "old-good": leaf(api, rows["old"]["id"], "old-good"),
            "old-revoked": leaf(api, rows["old"]["id"], "old-revoked"),
            "new-revoked": leaf(api, rows["new"]["id"], "new-revoked"),
        }
        for name in REVOKED:
            revoke(api, certs[name])
    made = Reissued(folder, rows, certs, key_pem, common_name)
    for row, view in rows.items():
        made.path(row).write_text(view["pem"])
    for name, cert in certs.items():
        made.path(name).write_text(cert["pem"])
    return made


def ask(server: Server, issuer: Path, cert: Path, *args: str) -> str:
    """`openssl ocsp` against the plain-HTTP listener, `issuer` also the trust anchor."""
    url = f"{server.http_url}/ocsp"
    common = ["-url", url, "-issuer", str(issuer), "-CAfile", str(issuer), "-cert", str(cert)]
    result = openssl("ocsp", *common, *args)
    return (result.stdout + result.stderr).decode()


def until_status(server: Server, issuer: Path, cert: Path, status: str, *args: str) -> str:
    """The answer once it says `status`: a revocation reaches held answers within a second."""
    deadline = time.monotonic() + 30
    out = ask(server, issuer, cert, *args)
    while f"{cert}: {status}" not in out and time.monotonic() < deadline:
        time.sleep(0.1)
        out = ask(server, issuer, cert, *args)
    assert f"{cert}: {status}" in out, out
    assert "Response verify OK" in out, out
    return out


# OCSP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonce", ["-nonce", "-no_nonce"])
@pytest.mark.parametrize("issuer", ROWS)
def test_ocsp_answers_for_what_either_row_issued(
    server: Server, reissued: Reissued, issuer: str, nonce: str
) -> None:
    """Whichever row's certificate the client holds as issuer (the CertID is the same), the
    revoked certificates of both rows are revoked and the good one of the older row is good,
    not `unknown` (which hard-failing clients refuse), and the response verifies against it."""
    anchor = reissued.path(issuer)
    expected = {"old-good": "good", "old-revoked": "revoked", "new-revoked": "revoked"}
    for name, status in expected.items():
        out = ask(server, anchor, reissued.path(name), nonce)
        assert f"{reissued.path(name)}: {status}" in out, out
        assert "Response verify OK" in out, out
        if status == "revoked":
            assert "Reason: keyCompromise" in out, out


def test_a_revocation_under_either_row_replaces_the_held_answer(
    server: Server, reissued: Reissued
) -> None:
    """Nonce-less answers are held pre-signed, per CertID, so under the issuer and not under
    a row: a revocation under either row must replace them, not leave `good` for an hour."""
    with server.client() as api:
        fresh = {row: leaf(api, reissued.rows[row]["id"], f"held-{row}") for row in ROWS}
    for row, cert in fresh.items():
        reissued.path(f"held-{row}").write_text(cert["pem"])
        until_status(server, reissued.path(row), reissued.path(f"held-{row}"), "good", "-no_nonce")
    with server.client() as api:
        for cert in fresh.values():
            revoke(api, cert)
    for row in ROWS:
        # asked naming the other row's certificate as issuer: the same CertID, the same answer
        other = reissued.path("new" if row == "old" else "old")
        until_status(server, other, reissued.path(f"held-{row}"), "revoked", "-no_nonce")


# CRLs ------------------------------------------------------------------------------------


def test_each_row_serves_one_crl_of_both_rows_in_one_sequence(
    server: Server, reissued: Reissued
) -> None:
    """Both distribution points list both revocations, and CRL numbers only increase
    whichever row's CRL was made or fetched last (RFC 5280 5.2.3: one sequence per scope and
    issuer, and both CRLs claim the whole scope of the one issuer)."""
    both = reissued.revoked_by_both()
    for row in ROWS:
        wait_for_crl(server, reissued.rows[row]["id"], both)
        wait_for_crl(server, reissued.rows[row]["id"], both, kind="delta")
    seen = []
    with server.client() as api:
        for row in (*ROWS, *ROWS):
            regenerated = data(api.post(f"{API}/crl/{reissued.rows[row]['id']}/regenerate"))
            assert regenerated["revoked_count"] >= len(REVOKED), regenerated  # both rows
            seen.append(regenerated["crl_number"])
        views = [data(api.get(f"{API}/crl/{reissued.rows[row]['id']}")) for row in ROWS]
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    assert {view["crl_number"] for view in views} == {seen[-1]}, views
    assert all(view["status"] == "published" for view in views), views
    for row in ROWS:
        _, full = wait_for_crl(server, reissued.rows[row]["id"], lambda c: number(c) >= seen[-1])
        assert number(full) == seen[-1] and both(full)
        _, delta = wait_for_crl(
            server, reissued.rows[row]["id"], lambda c: number(c) > seen[-1], kind="delta"
        )
        assert number(delta) == seen[-1] + 1


@pytest.mark.parametrize("crl_of", ROWS)
def test_openssl_refuses_both_revoked_certificates_with_either_crl(
    server: Server, reissued: Reissued, crl_of: str, workdir: Path
) -> None:
    der, _ = wait_for_crl(server, reissued.rows[crl_of]["id"], reissued.revoked_by_both())
    crl = pem_file(workdir, f"{crl_of}-crl", der)
    for anchor in ROWS:
        common = ["-crl_check", "-CAfile", str(reissued.path(anchor)), "-CRLfile", str(crl)]
        for name in REVOKED:
            status, text = verify(*common, str(reissued.path(name)))
            assert status != 0 and "certificate revoked" in text, (anchor, name, text)
        status, text = verify(*common, str(reissued.path("old-good")))
        assert status == 0 and "OK" in text, (anchor, text)


def test_a_row_without_the_key_serves_the_crl_its_group_signs(
    server: Server, reissued: Reissued
) -> None:
    """A third issue of the root imported as a bare certificate cannot sign, but its group
    can: its distribution point serves the group's CRL (not 404, as for a CA alone without
    its key), which the management API shows as published, and OCSP as served."""
    key = serialization.load_pem_private_key(reissued.key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    third_pem = reissued_root(key, reissued.common_name, 1095)
    with server.client() as api:
        third = data(api.post(f"{API}/cas/import", json={"certificate": third_pem}), 201)
        assert third["has_private_key"] is False, third
    _, crl = wait_for_crl(server, third["id"], reissued.revoked_by_both())
    assert crl.is_signature_valid(key.public_key())  # by a row holding the shared key
    with server.client() as api:
        regenerated = data(api.post(f"{API}/crl/{third['id']}/regenerate"))
        assert regenerated["status"] == "published", regenerated
        _, again = wait_for_crl(server, reissued.rows["old"]["id"], lambda c: True)
        assert number(again) == regenerated["crl_number"]  # one sequence, three rows
        status = data(api.get(f"{API}/ocsp/status"))
    (served,) = [r["served"] for r in status["responders"] if r["ca_id"] == third["id"]]
    assert served is True


def test_the_same_name_with_another_key_is_another_issuer(
    server: Server, reissued: Reissued
) -> None:
    """A root of the same name but another key, imported without it: not in the group, so
    it has no CRL (404, as any CA alone without its key), and the management API says why
    once the publisher has looked at it."""
    other_key = ec.generate_private_key(ec.SECP256R1())
    pem = reissued_root(other_key, reissued.common_name, 365)
    with server.client() as api:
        stranger = data(api.post(f"{API}/cas/import", json={"certificate": pem}), 201)
        deadline = time.monotonic() + 30
        view = data(api.get(f"{API}/crl/{stranger['id']}"))
        while view["last_error"] is None and time.monotonic() < deadline:
            time.sleep(0.3)
            view = data(api.get(f"{API}/crl/{stranger['id']}"))
    assert view["status"] == "unavailable" and view["crl_number"] is None, view
    assert "no private key" in (view["last_error"] or ""), view
    assert httpx.get(f"{server.http_url}/cdp/{stranger['id']}.crl").status_code == 404


def test_another_organization_holding_the_same_root_is_another_issuer(
    server: Server, reissued: Reissued
) -> None:
    """Rows of different organizations are never one group: neither tenant's CRL lists the
    other's revocations."""
    with server.client(api_key=foreign_admin_key(server)) as other:
        theirs = import_root(other, reissued.rows["old"]["pem"], reissued.key_pem)
        cert = leaf(other, theirs["id"], "theirs-revoked")
        revoke(other, cert)
    _, crl = wait_for_crl(server, theirs["id"], listed(cert["serial_number"]))
    assert not any(listed(reissued.certs[name]["serial_number"])(crl) for name in REVOKED)
    with server.client() as api:
        data(api.post(f"{API}/crl/{reissued.rows['new']['id']}/regenerate"))
    for row in ROWS:
        _, ours = wait_for_crl(server, reissued.rows[row]["id"], reissued.revoked_by_both())
        assert not_listed(cert["serial_number"])(ours)
