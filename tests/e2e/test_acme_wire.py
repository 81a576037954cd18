"""What every /acme/ answer carries (RFC 8555 6.5, 6.7, 7.1), when things fail too: a nonce
store that cannot give a fresh nonce, an internal error in a GET endpoint, a request refused
before it reaches the ACME endpoints."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from tests.e2e.acme_helpers import (
    Acme,
    AcmeEnv,
    acme_name,
    b64,
    csr_for,
    drain_nonces,
    needs_challtestsrv,
    nonces_refused,
    problem,
    table_away,
    verified_chain,
)
from tests.e2e.helpers import API, create_intermediate, create_root, data, unique
from tests.e2e.test_acme_protocol import ari_id

pytestmark = needs_challtestsrv


def index_link(env: AcmeEnv) -> str:
    return f'<{env.directory}>;rel="index"'


# --- no fresh nonce to be had (RFC 8555 6.5) -----------------------------------------------


def test_work_done_is_answered_when_no_fresh_nonce_can_be_had(env: AcmeEnv, account: Acme) -> None:
    """A new-order whose order is created when the nonce store refuses new nonces: the
    client is told so (201 and the order's URL), without a Replay-Nonce, rather than a 500
    that has it believe nothing happened. The outage is logged once, without the store's
    statements (whose parameters are the nonces)."""
    spare = account.nonce()
    logged = env.server.log()
    payload = {"identifiers": [{"type": "dns", "value": acme_name()}]}
    with nonces_refused(env):
        drain_nonces(env)
        created = account.post(account.dir["newOrder"], payload, nonce=spare)
        assert created.status_code == 201, created.text
        assert "replay-nonce" not in created.headers
        assert index_link(env) in created.headers.get_list("link")
        drain_nonces(env)
    order = account.get(created.headers["location"])
    assert order.status_code == 200 and order.json()["identifiers"] == payload["identifiers"]
    assert created.headers["location"] in account.get(f"{account.kid}/orders").json()["orders"]
    outage = env.server.log()[len(logged) :]
    assert outage.count("nonce store unavailable") == 1, outage
    assert "INSERT" not in outage and spare not in outage, outage


def test_new_nonce_without_a_nonce_is_a_503_to_retry(env: AcmeEnv, account: Acme) -> None:
    """new-nonce's answer is its nonce: when none can be had it is a serverInternal problem
    with Retry-After (RFC 8555 6.6-style), by HEAD, GET and POST-as-GET alike; once the
    store is back, new-nonce gives nonces that are accepted."""
    spare = account.nonce()
    with nonces_refused(env):
        drain_nonces(env)
        with httpx.Client(verify=env.server.ssl_context(), timeout=60) as http:
            answers = [
                http.head(account.dir["newNonce"]),
                http.get(account.dir["newNonce"]),
                account.post(account.dir["newNonce"], None, nonce=spare),
            ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert "replay-nonce" not in answer.headers
            assert int(answer.headers["retry-after"]) > 0
            assert answer.headers["cache-control"] == "no-store"
            assert index_link(env) in answer.headers.get_list("link")
            assert answer.headers["content-type"].startswith("application/problem+json")
        body = answers[1].json()
        assert body["type"] == "urn:ietf:params:acme:error:serverInternal", body
    fresh = account.nonce()
    assert account.post(account.kid or "", None, nonce=fresh).status_code == 200


# --- errors outside the signed endpoints (RFC 8555 6.7, 7.1) -------------------------------


def test_an_internal_error_of_a_get_endpoint_carries_the_acme_headers(
    env: AcmeEnv, account: Acme
) -> None:
    """directory and renewalInfo are plain GETs: an unexpected failure there is a
    serverInternal problem with a Replay-Nonce and the index link, as in the signed ones."""
    with table_away(env, "acme_settings"):
        answers = [
            account.http.get(env.directory),
            account.http.get(f"{account.dir['renewalInfo']}/AAAA.AQ"),
        ]
    for answer in answers:
        body = problem(answer, "serverInternal", 500)
        assert "acme_settings" not in body["detail"], body
        assert index_link(env) in answer.headers.get_list("link")
        assert answer.headers["cache-control"] == "no-store"


def test_refusals_before_the_endpoints_are_acme_problems_with_the_headers(
    env: AcmeEnv, account: Acme
) -> None:
    """A NUL in the URL, a JWS body that is not UTF-8: refused before any endpoint runs,
    still as ACME problems with a nonce and the index link."""
    answers = [
        account.http.get(f"{env.directory}?x=%00"),
        account.raw(account.dir["newOrder"], '{"protected": "x"}'.encode("utf-16")),
    ]
    for answer in answers:
        problem(answer, "malformed", 400)
        assert index_link(env) in answer.headers.get_list("link")


# --- certificate download (RFC 8555 7.4.2) ------------------------------------------------


@pytest.fixture
def under_intermediate(env: AcmeEnv) -> Iterator[int]:
    """Certificates issued for the test by an intermediate CA under a root of its own (the
    root's id)."""
    with env.api() as api:
        root = create_root(api, unique("Download Root"))
        inter = create_intermediate(api, root["id"], unique("Download Issuing"))
        data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": inter["id"]}))
    try:
        yield int(root["id"])
    finally:
        with env.api() as api:
            data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": env.ca["id"]}))


def fetch(account: Acme, url: str, accept: str | None) -> httpx.Response:
    """A POST-as-GET of the certificate URL with the given Accept (none when None)."""
    body = json.dumps(account.jws(url, None)).encode()
    headers = {"Content-Type": "application/jose+json"}
    if accept is not None:
        headers["Accept"] = accept
    request = account.http.build_request("POST", url, content=body, headers=headers)
    if accept is None:
        del request.headers["Accept"]
    return account.http.send(request)


def alternates(response: httpx.Response) -> list[str]:
    links = response.headers.get_list("link")
    return [m.group(1) for link in links if (m := re.fullmatch(r'<([^>]+)>;rel="alternate"', link))]


def test_every_alternate_chain_is_a_valid_chain_of_the_same_certificate(
    env: AcmeEnv, account: Acme, under_intermediate: int, tmp_path: Path
) -> None:
    """RFC 8555 7.4.2: each rel="alternate" link "SHOULD express an alternative certificate
    chain starting with the same end-entity certificate": every one downloads a chain that
    verifies, and leads back to the others."""
    host = acme_name()
    order = account.ready_order(host)
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    default = fetch(account, done["certificate"], None)
    assert default.headers["content-type"] == "application/pem-certificate-chain"
    leaf = verified_chain(env, default.content, tmp_path / "default", under_intermediate)[0]
    others = alternates(default)
    assert others, default.headers
    for n, url in enumerate(others):
        alternate = fetch(account, url, None)
        assert alternate.status_code == 200, alternate.text
        chain = verified_chain(env, alternate.content, tmp_path / str(n), under_intermediate)
        assert chain[0] == leaf and chain != x509.load_pem_x509_certificates(default.content)
        assert done["certificate"] in alternates(alternate)


def test_the_accept_header_chooses_the_certificate_format(
    env: AcmeEnv, account: Acme, under_intermediate: int
) -> None:
    """application/pem-certificate-chain by default (no Accept, */*, or an Accept none of
    the formats meets: RFC 9110 12.5.1 lets the server disregard it); the end-entity
    certificate in DER for application/pkix-cert, a certs-only PKCS#7 of the chain for
    application/pkcs7-mime, on the alternate chain too; qualities decide."""
    host = acme_name()
    order = account.ready_order(host)
    url = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()["certificate"]
    chain = x509.load_pem_x509_certificates(fetch(account, url, None).content)
    pem = "application/pem-certificate-chain"
    for accept in ("*/*", "application/json", pem, f"application/pkix-cert;q=0.5, {pem}"):
        answer = fetch(account, url, accept)
        assert answer.headers["content-type"] == pem, (accept, answer.headers)
        assert x509.load_pem_x509_certificates(answer.content) == chain
    der = fetch(account, url, "application/pkix-cert")
    assert der.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.content) == chain[0]
    # RFC 8555 7.4.2: one certificate alone links to its issuer, which is served there
    up = [link for link in der.headers.get_list("link") if link.endswith(';rel="up"')]
    assert len(up) == 1, der.headers
    issuer = httpx.get(up[0].split(">")[0].lstrip("<"), timeout=30)
    assert x509.load_der_x509_certificate(issuer.content) == chain[1]
    bundle = fetch(account, url, "application/pkcs7-mime, */*;q=0.1")
    assert bundle.headers["content-type"].startswith("application/pkcs7-mime")
    # a SET OF in DER: the certificates in the order of their encodings, not the chain's
    assert set(pkcs7.load_der_pkcs7_certificates(bundle.content)) == set(chain)
    short = fetch(account, alternates(bundle)[0], "application/pkcs7-mime")
    assert set(pkcs7.load_der_pkcs7_certificates(short.content)) == set(chain[:-1])


# --- profiles (draft-aaron-acme-profiles) ---------------------------------------------------


def test_an_order_whose_profile_was_withdrawn_is_not_issued_under_the_defaults(
    env: AcmeEnv, account: Acme
) -> None:
    """The order says which profile its certificate is issued under; once the server no
    longer offers that profile, finalize is refused (invalidProfile) rather than issuing a
    certificate of the server's default validity, and the order is not made valid."""
    before = env.settings()["profiles"]
    env.settings(profiles={"day": {"description": "24 hours", "validity_days": 1}})
    try:
        host = acme_name()
        order = account.ready_order(host, profile="day")
        assert order["profile"] == "day"
        env.settings(profiles=before)
        refused = account.post(order["finalize"], {"csr": csr_for(host)[0]})
        problem(refused, "invalidProfile", 400)
        after = account.get(order["url"]).json()
        assert after["status"] == "ready" and "certificate" not in after, after
    finally:
        env.settings(profiles=before)


# --- finalize (RFC 8555 7.4) ---------------------------------------------------------------


def must_staple_csr(host: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return b64(csr.public_bytes(Encoding.DER))


def test_a_csr_asking_for_must_staple_is_refused_not_issued_without_it(account: Acme) -> None:
    """RFC 8555 7.4: the server "MUST NOT issue a certificate with contents other than those
    requested"; OCSP Must-Staple (RFC 7633), which the CA does not issue, is badCSR, the
    order staying ready for a CSR without it."""
    host = acme_name()
    order = account.ready_order(host)
    refused = problem(
        account.post(order["finalize"], {"csr": must_staple_csr(host)}), "badCSR", 400
    )
    assert "Must-Staple" in refused["detail"], refused
    assert account.get(order["url"]).json()["status"] == "ready"
    issued = account.post(order["finalize"], {"csr": csr_for(host)[0]})
    assert issued.status_code == 200 and issued.json()["status"] == "valid", issued.text


# --- replaces (RFC 9773 5) ------------------------------------------------------------------


def test_replaces_naming_no_certificate_of_this_account_is_refused_as_the_request(
    env: AcmeEnv, account: Acme
) -> None:
    """`replaces` is a field of the new-order request, whose URL exists: a certificate
    nobody issued here is a malformed request (400), not a 404; another account's
    certificate is refused (RFC 9773 5: the same ACME account), and no order is created."""
    aki = account.http.get(f"{account.dir['renewalInfo']}/AAAA.AQ")
    assert aki.status_code == 404  # renewalInfo: the URL names nothing
    host = acme_name()
    problem(account.order(host, replaces="AAAA.AQ"), "malformed", 400)
    stranger = Acme(env)
    try:
        assert stranger.register().status_code == 201
        order = stranger.ready_order(host)
        done = stranger.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
        pem = stranger.get(done["certificate"]).content
        theirs = x509.load_pem_x509_certificates(pem)[0]
    finally:
        stranger.close()
    problem(account.order(host, replaces=ari_id(theirs)), "unauthorized", 403)
    assert account.get(f"{account.kid}/orders").json()["orders"] == []
