"""Revoking a subordinate CA (POST /api/v2/cas/{id}/revoke): its issuer's CRL lists it and
its OCSP answers say revoked (checked with openssl as the relying party), it and every CA
below it sign no more, and its entry outlives its deletion."""

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from tests.e2e.helpers import (
    API,
    create_intermediate,
    create_root,
    data,
    db_rows,
    error,
    foreign_root,
    foreign_signed,
    import_ca_file,
    issue,
    unique,
)
from tests.e2e.test_crl import entry_reason, listed, pem_file, verify, wait_for_crl
from tests.support import Server, module_server

WAIT = 90.0  # seconds for OCSP to reflect a revocation (a bound, not a target)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {"TESSERA_CRL_DEBOUNCE_SECONDS": "1"}
    with module_server(request.param, tmp_path_factory.mktemp("carev") / "data", env) as running:
        yield running


def chain(api: httpx.Client, workdir: Path) -> dict[str, Any]:
    """A root, an intermediate under it, a CA under that, and a leaf of the intermediate."""
    root = create_root(api, unique("Revoking Root"))
    inter = create_intermediate(api, root["id"], unique("Revoked Intermediate"))
    # Shorter than its parent's 1825 days: made a second later, as long it would outlive it.
    below = create_intermediate(api, inter["id"], unique("Below Revoked"), validity_days=1000)
    leaf = issue(api, inter["id"], f"{unique('leaf')}.example.com")
    files = {}
    for name, path in (("root", f"cas/{root['id']}"), ("inter", f"cas/{inter['id']}")):
        files[name] = workdir / f"{name}.pem"
        files[name].write_text(data(api.get(f"{API}/{path}"))["pem"])
    files["leaf"] = workdir / "leaf.pem"
    files["leaf"].write_text(data(api.get(f"{API}/certificates/{leaf['id']}"))["pem"])
    return {"root": root, "inter": inter, "below": below, "leaf": leaf, "files": files}


def ocsp_status(server: Server, issuer: Path, cert: Path) -> str:
    url = f"{server.http_url}/ocsp"
    args = ["openssl", "ocsp", "-url", url, "-issuer", str(issuer), "-CAfile", str(issuer)]
    result = subprocess.run([*args, "-cert", str(cert)], capture_output=True, timeout=60)
    out = (result.stdout + result.stderr).decode()
    assert "Response verify OK" in out, out
    return out


def wait_for_ocsp(server: Server, issuer: Path, cert: Path, wanted: str) -> str:
    deadline = time.monotonic() + WAIT
    while True:
        out = ocsp_status(server, issuer, cert)
        if f"{cert}: {wanted}" in out:
            return out
        assert time.monotonic() < deadline, out
        time.sleep(0.3)


def test_a_revoked_intermediate_is_refused_by_relying_parties(
    server: Server, tmp_path: Path
) -> None:
    with server.client() as api:
        made = chain(api, tmp_path)
        root, inter, files = made["root"], made["inter"], made["files"]
        wait_for_ocsp(server, files["root"], files["inter"], "good")
        revoked = data(api.post(f"{API}/cas/{inter['id']}/revoke", json={"reason": "caCompromise"}))
        assert revoked["revocation_reason"] == "cACompromise" and revoked["revoked_at"]
        assert revoked["is_active"] is False
        # It signs no more, nor does the CA below it, and it is not enabled again.
        refused = api.post(
            f"{API}/certificates", json={"common_name": "x.test", "ca_id": inter["id"]}
        )
        assert "revoked" in error(refused, 422)
        below = {"common_name": "y.test", "ca_id": made["below"]["id"]}
        assert "above it was revoked" in error(api.post(f"{API}/certificates", json=below), 422)
        again = api.patch(f"{API}/cas/{inter['id']}", json={"is_active": True})
        assert "not enabled again" in error(again, 409)
        assert "already revoked" in error(api.post(f"{API}/cas/{inter['id']}/revoke", json={}), 409)

    out = wait_for_ocsp(server, files["root"], files["inter"], "revoked")
    assert "Reason: cACompromise" in out, out
    der, crl = wait_for_crl(server, root["refid"], listed(inter["serial_number"]))
    assert entry_reason(crl, inter["serial_number"]) == x509.ReasonFlags.ca_compromise
    root_crl = pem_file(tmp_path, "root-crl", der)
    inter_der, _ = wait_for_crl(server, inter["refid"], lambda crl: True)
    inter_crl = pem_file(tmp_path, "inter-crl", inter_der)
    crls = ["-CRLfile", str(root_crl), "-CRLfile", str(inter_crl)]
    trust = ["-CAfile", str(files["root"]), "-untrusted", str(files["inter"])]
    status, text = verify("-crl_check_all", *crls, *trust, str(files["leaf"]))
    assert status != 0 and "certificate revoked" in text, text


def test_the_entry_outlives_the_deleted_ca(server: Server, tmp_path: Path) -> None:
    with server.client() as api:
        root = create_root(api, unique("Root of Deleted"))
        inter = create_intermediate(api, root["id"], unique("Deleted Revoked CA"))
        (tmp_path / "root.pem").write_text(data(api.get(f"{API}/cas/{root['id']}"))["pem"])
        (tmp_path / "inter.pem").write_text(data(api.get(f"{API}/cas/{inter['id']}"))["pem"])
        data(api.post(f"{API}/cas/{inter['id']}/revoke", json={"reason": "superseded"}))
        assert api.delete(f"{API}/cas/{inter['id']}").status_code == 204
    wait_for_ocsp(server, tmp_path / "root.pem", tmp_path / "inter.pem", "revoked")
    _, crl = wait_for_crl(server, root["refid"], listed(inter["serial_number"]))
    assert entry_reason(crl, inter["serial_number"]) == x509.ReasonFlags.superseded


def test_what_cannot_be_revoked_is_refused_and_nothing_changes(server: Server) -> None:
    with server.client() as api:
        root = create_root(api, unique("Unrevocable Root"))
        inter = create_intermediate(api, root["id"], unique("Held Intermediate"))
        revoke = f"{API}/cas/{{}}/revoke"
        assert "no issuer here" in error(api.post(revoke.format(root["id"]), json={}), 409)
        hold = {"reason": "certificateHold"}
        assert "for good" in error(api.post(revoke.format(inter["id"]), json=hold), 400)
        unknown = {"reason": "bored"}
        assert "unknown revocation reason" in error(
            api.post(revoke.format(inter["id"]), json=unknown), 400
        )
        error(api.post(revoke.format(999999), json={}), 404)
        shown = data(api.get(f"{API}/cas/{inter['id']}"))
        assert shown["revoked_at"] is None and shown["is_active"] is True
        issue(api, inter["id"], f"{unique('still')}.example.com")
    with server.client(api_key="") as anonymous:
        assert anonymous.post(revoke.format(inter["id"]), json={}).status_code == 401


def test_a_deleted_subordinate_ca_is_no_longer_good(server: Server, tmp_path: Path) -> None:
    """Its issuer's OCSP responders held a signed `good` for it: deleting the CA tells them,
    as deleting a certificate does."""
    with server.client() as api:
        root = create_root(api, unique("Root of Removed"))
        inter = create_intermediate(api, root["id"], unique("Removed Intermediate"))
        (tmp_path / "root.pem").write_text(data(api.get(f"{API}/cas/{root['id']}"))["pem"])
        (tmp_path / "inter.pem").write_text(data(api.get(f"{API}/cas/{inter['id']}"))["pem"])
        wait_for_ocsp(server, tmp_path / "root.pem", tmp_path / "inter.pem", "good")
        assert api.delete(f"{API}/cas/{inter['id']}").status_code == 204
    wait_for_ocsp(server, tmp_path / "root.pem", tmp_path / "inter.pem", "unknown")


def test_no_revocation_under_an_issuer_whose_key_is_elsewhere(
    server: Server, tmp_path: Path
) -> None:
    """Nothing here could sign the CRL or OCSP answer that says so: refused, not claimed."""
    outside = foreign_root(tmp_path, f"/CN={unique('Offline Root')}")
    sub = foreign_signed(tmp_path, outside, f"/CN={unique('Online Sub')}")
    with server.client() as api:
        bare = import_ca_file(api, outside.pem.encode(), "root.pem")
        assert bare.status_code == 201, bare.text
        bundle = (sub.pem + sub.key_pem).encode()
        held = data(import_ca_file(api, bundle, "sub.pem"), 201)
        assert held["parent_id"] == bare.json()["data"]["id"]
        refused = api.post(f"{API}/cas/{held['id']}/revoke", json={"reason": "keyCompromise"})
        assert "not held here" in error(refused, 409)
        shown = data(api.get(f"{API}/cas/{held['id']}"))
        assert shown["revoked_at"] is None and shown["is_active"] is True


def leaf_status(server: Server, files: dict[str, Path], *asked: str) -> str:
    """`openssl ocsp` for what the intermediate issued, verified up to the root."""
    url = f"{server.http_url}/ocsp"
    args = ["-url", url, "-issuer", str(files["inter"]), "-CAfile", str(files["root"])]
    args += ["-verify_other", str(files["inter"]), *asked]
    result = subprocess.run(["openssl", "ocsp", *args], capture_output=True, timeout=60)
    out = (result.stdout + result.stderr).decode()
    assert "Response verify OK" in out, out
    return out


def wait_for_leaf(server: Server, files: dict[str, Path], asked: list[str], wanted: str) -> str:
    deadline = time.monotonic() + WAIT
    while True:
        out = leaf_status(server, files, *asked)
        if f"{asked[-1]}: {wanted}" in out:
            return out
        assert time.monotonic() < deadline, out
        time.sleep(0.3)


@pytest.mark.parametrize("reason", ["keyCompromise", "cACompromise"])
def test_everything_a_compromised_ca_issued_is_revoked_over_ocsp(
    server: Server, tmp_path: Path, reason: str
) -> None:
    """RFC 6960 2.7: a responder that knows a CA's key is compromised returns revoked for
    every certificate of that CA: those held as good before (in every cached answer), those
    never asked about, and serials it never issued (the key's holder may have). An earlier
    revocation for good keeps its own time and reason; a hold becomes the compromise."""
    with server.client() as api:
        made = chain(api, tmp_path)
        inter, files = made["inter"], made["files"]
        never_asked = issue(api, inter["id"], f"{unique('quiet')}.example.com")
        superseded = issue(api, inter["id"], f"{unique('old')}.example.com")
        held = issue(api, inter["id"], f"{unique('held')}.example.com")
        for cert in (never_asked, superseded, held):
            files[str(cert["id"])] = tmp_path / f"{cert['id']}.pem"
            pem = data(api.get(f"{API}/certificates/{cert['id']}"))["pem"]
            files[str(cert["id"])].write_text(pem)
        revoke = f"{API}/certificates/{{}}/revoke"
        data(api.post(revoke.format(superseded["id"]), json={"reason": "superseded"}))
        data(api.post(revoke.format(held["id"]), json={"reason": "certificateHold"}))
        for nonce in ("-nonce", "-no_nonce"):  # a good answer is held from now on
            wait_for_leaf(server, files, [nonce, "-cert", str(files["leaf"])], "good")
        wait_for_leaf(server, files, ["-cert", str(files[str(held["id"])])], "revoked")
        data(api.post(f"{API}/cas/{inter['id']}/revoke", json={"reason": reason}))

    out = wait_for_leaf(server, files, ["-cert", str(files["leaf"])], "revoked")
    assert "Reason: cACompromise" in out, out
    out = leaf_status(server, files, "-no_nonce", "-cert", str(files["leaf"]))
    assert ": revoked" in out and "Reason: cACompromise" in out, out  # the pre-signed one
    out = leaf_status(server, files, "-cert", str(files[str(never_asked["id"])]))
    assert f"{files[str(never_asked['id'])]}: revoked" in out and "cACompromise" in out, out
    out = leaf_status(server, files, "-serial", "0x" + secrets.token_hex(16))
    assert ": revoked" in out and "cACompromise" in out, out
    out = leaf_status(server, files, "-cert", str(files[str(superseded["id"])]))
    assert ": revoked" in out and "Reason: superseded" in out, out
    out = leaf_status(server, files, "-cert", str(files[str(held["id"])]))
    assert ": revoked" in out and "Reason: cACompromise" in out, out


def test_a_ca_revoked_for_another_reason_keeps_its_statuses(server: Server, tmp_path: Path) -> None:
    """Only a compromise of the key reaches what the CA issued (RFC 6960 2.7): a CA
    superseded or retired leaves its certificates' own statuses, which relying parties
    combine with the CA's own revocation when they build the path."""
    with server.client() as api:
        made = chain(api, tmp_path)
        files = made["files"]
        wait_for_leaf(server, files, ["-cert", str(files["leaf"])], "good")
        data(api.post(f"{API}/cas/{made['inter']['id']}/revoke", json={"reason": "superseded"}))
    wait_for_ocsp(server, files["root"], files["inter"], "revoked")
    time.sleep(1)  # the followers of every worker have seen it
    out = leaf_status(server, files, "-cert", str(files["leaf"]))
    assert f"{files['leaf']}: good" in out, out
    out = leaf_status(server, files, "-serial", "0x" + secrets.token_hex(16))
    assert ": unknown" in out, out


def test_a_revoked_ca_certifies_no_responder_and_signs_its_answers_itself(
    server: Server, tmp_path: Path
) -> None:
    """A revoked CA signs nothing more (nor any CA below it): asked about over OCSP for the
    first time after its revocation, it does not issue itself a responder certificate but
    signs the answer with its own key, as it signs its CRLs."""
    with server.client() as api:
        made = chain(api, tmp_path)
        inter = made["inter"]
        data(api.post(f"{API}/cas/{inter['id']}/revoke", json={"reason": "superseded"}))
    count = "SELECT count(*) FROM certificates WHERE ca_id = ?"
    before = db_rows(server, count, inter["id"])
    leaf, issuer = (
        x509.load_pem_x509_certificate(made["files"][n].read_bytes()) for n in ("leaf", "inter")
    )
    asked = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    der = asked.public_bytes(serialization.Encoding.DER)
    headers = {"Content-Type": "application/ocsp-request"}
    answer = ocsp.load_der_ocsp_response(
        httpx.post(f"{server.http_url}/ocsp", content=der, headers=headers, timeout=30).content
    )
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificates == []  # no delegated responder
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and answer.signature_hash_algorithm
    key.verify(
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )
    assert db_rows(server, count, inter["id"]) == before
