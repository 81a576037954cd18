"""Every kind of certificate, CRL and OCSP response Tessera signs, made by a real server
through its public interfaces (the API, the plain-HTTP CRL and OCSP endpoints, SCEP, ACME)
and linted by pkilint (tests/e2e/lint_helpers.py): no ERROR or FATAL finding anywhere."""

import ipaddress
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from tests.e2e.acme_helpers import AcmeEnv, acme_env, csr_for, registered
from tests.e2e.helpers import (
    API,
    create_intermediate,
    create_root,
    data,
    foreign_root,
    foreign_signed,
    issue,
    unique,
)
from tests.e2e.lint_helpers import (
    assert_clean,
    lint_certificate,
    lint_crl,
    lint_issued_by,
    lint_ocsp_response,
)
from tests.e2e.test_chain_constraints import foreign_cert, imported, name
from tests.e2e.test_crl import entry_reason, listed, not_listed, wait_for_crl
from tests.e2e.test_scep_protocol import csr_der, default_profile, new_client
from tests.support import Server, database

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}
# Every reason a certificate can be revoked with through the API; removeFromCRL is the
# release of a hold and shows only in a delta CRL.
REASONS = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AcmeEnv]:
    """One server for the module (ACME needs its challenge DNS; everything else is the
    plain server), with CRLs made promptly after a revocation."""
    work = tmp_path_factory.mktemp("lint")
    extra = {"TESSERA_CRL_DEBOUNCE_SECONDS": "0.2"}
    with database(request.param) as url, acme_env(url, work, extra) as running:
        yield running


@pytest.fixture(scope="module")
def server(env: AcmeEnv) -> Server:
    return env.server


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def inter(api: httpx.Client) -> dict[str, Any]:
    """An EC root and an issuing intermediate under it, with their PEMs."""
    root = create_root(api, unique("Lint Root"))
    made = create_intermediate(api, root["id"], unique("Lint Issuing CA"))
    made["pem"] = ca_pem(api, made["id"])
    made["root"] = {**root, "pem": ca_pem(api, root["id"])}
    return made


# Helpers ---------------------------------------------------------------------------------


def ca_pem(api: httpx.Client, ca_id: int) -> str:
    return str(data(api.get(f"{API}/cas/{ca_id}"))["pem"])


def cert_pem(api: httpx.Client, cert_id: int) -> str:
    return str(data(api.get(f"{API}/certificates/{cert_id}"))["pem"])


def check(pem: str | x509.Certificate, what: str, issuer: str | x509.Certificate) -> None:
    """The certificate alone, and as issued by `issuer` (names, key ids, signature)."""
    assert_clean(lint_certificate(pem), what)
    assert_clean(lint_issued_by(issuer, pem), f"{what} (issued by)")


def csr_pem(subject: x509.Name, sans: list[x509.GeneralName] | None = None) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def cn(value: str, **more: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, value)]
    if "email" in more:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, more["email"]))
    return x509.Name(attributes)


def fetch_crl(server: Server, reference: object, kind: str = "full") -> bytes:
    suffix = "-delta.crl" if kind == "delta" else ".crl"
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(f"{server.http_url}/cdp/{reference}{suffix}", timeout=30)
        if response.status_code == 200:
            return response.content
        assert response.status_code == 503, response.text  # the first CRL is on its way
        assert time.monotonic() < deadline, f"no {kind} CRL of {reference}"
        time.sleep(0.3)


def ocsp_answer(server: Server, request: ocsp.OCSPRequestBuilder) -> bytes:
    der = request.build().public_bytes(serialization.Encoding.DER)
    response = httpx.post(f"{server.http_url}/ocsp", content=der, headers=OCSP_REQUEST)
    assert response.status_code == 200, response.text
    return response.content


# CAs ---------------------------------------------------------------------------------------

ALGORITHMS = [("RSA", 2048), ("EC", 256), ("EC", 384), ("EC", 521), ("Ed25519", None)]


@pytest.mark.parametrize("path_length", [None, 1], ids=["no-pathlen", "pathlen"])
@pytest.mark.parametrize(("algorithm", "size"), ALGORITHMS, ids=lambda v: str(v))
def test_root_and_intermediate_cas(
    server: Server, api: httpx.Client, algorithm: str, size: int | None, path_length: int | None
) -> None:
    """POST /api/v2/cas with each key algorithm, with and without a path length; their
    first CRLs (empty, full and delta) are signed by each key type too."""
    label = f"{algorithm}-{size}-{path_length}"
    extra = {} if path_length is None else {"path_length": path_length}
    root = create_root(api, unique(f"Lint Root {label}"), algorithm, size, **extra)
    # The sub-CA has the next key type: each key type signs another one's certificate.
    other = ALGORITHMS[(ALGORITHMS.index((algorithm, size)) + 1) % len(ALGORITHMS)]
    key = {"key_algorithm": other[0], "key_size": other[1]}
    below = {} if path_length is None else {"path_length": path_length - 1}
    sub = create_intermediate(api, root["id"], unique(f"Lint Sub {label}"), **key, **below)
    root_pem, sub_pem = ca_pem(api, root["id"]), ca_pem(api, sub["id"])
    check(root_pem, f"root {label}", root_pem)
    check(sub_pem, f"intermediate {label}", root_pem)
    for kind in ("full", "delta"):
        assert_clean(lint_crl(fetch_crl(server, root["refid"], kind)), f"{kind} CRL {label}")


def test_ca_from_a_ca_template(api: httpx.Client, inter: dict[str, Any]) -> None:
    """A CA:TRUE template with its own key usage and path length, for a root and a sub-CA."""
    body = {
        "name": unique("Lint CA template"),
        "basic_constraints": {"ca": True, "path_length": 0},
        "key_usage": ["keyCertSign", "cRLSign", "digitalSignature", "nonRepudiation"],
        "organization": "Lint Org",
        "country": "DE",
    }
    template = data(api.post(f"{API}/templates", json=body), 201)
    for ca_type, parent in (("root", None), ("intermediate", inter["root"]["id"])):
        made = {"common_name": unique("Lint Tpl CA"), "ca_type": ca_type, "parent_id": parent}
        made |= {"template_id": template["id"], "key_algorithm": "RSA", "key_size": 3072}
        ca = data(api.post(f"{API}/cas", json=made), 201)
        pem = ca_pem(api, ca["id"])
        check(pem, f"{ca_type} from a CA template", pem if parent is None else inter["root"]["pem"])


def test_server_tls_certificate_and_its_ca(server: Server) -> None:
    """The server's own TLS certificate (data directory) and the internal CA it chains to."""
    chain = x509.load_pem_x509_certificates((server.data_dir / "tls" / "server.pem").read_bytes())
    leaf, internal_ca = chain
    check(leaf, "server TLS certificate", internal_ca)
    check(internal_ca, "internal CA", internal_ca)


def test_name_constrained_chain(api: httpx.Client) -> None:
    """A CA imported with name constraints: a sub-CA made under it inherits them (critical),
    and a leaf with names of each constrained type is issued within them."""
    constraints = x509.NameConstraints(
        [
            x509.DNSName("example.com"),
            x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
            x509.RFC822Name("example.com"),
        ],
        [x509.DNSName("bad.example.com")],
    )
    outside = foreign_cert(name("Lint NC Root", organization="Acme"), constraints=constraints)
    top = imported(api, outside)
    body = {"common_name": unique("Lint NC Sub"), "ca_type": "intermediate"}
    body |= {"parent_id": top["id"], "key_algorithm": "EC", "key_size": 256}
    sub = data(api.post(f"{API}/cas", json=body), 201)
    sub_pem = ca_pem(api, sub["id"])
    check(sub_pem, "sub-CA under name constraints", outside.pem)
    sans = ["dns:in.example.com", "ip:10.1.2.3", "email:x@example.com"]
    leaf = issue(api, sub["id"], "in.example.com", san=sans)
    check(cert_pem(api, leaf["id"]), "leaf under name constraints", sub_pem)


# Leaves ------------------------------------------------------------------------------------

TEMPLATES = {
    "codeSigning": {"extended_key_usage": ["codeSigning"], "key_usage": ["digitalSignature"]},
    "emailProtection": {
        "extended_key_usage": ["emailProtection"],
        "key_usage": ["digitalSignature", "keyAgreement"],
    },
    # RFC 3161 2.3: the EKU of a time-stamping certificate must be critical.
    "timeStamping": {"extended_key_usage": ["timeStamping"], "key_usage": ["digitalSignature"]},
    "OCSPSigning": {"extended_key_usage": ["OCSPSigning"]},
    "cmcRA": {"extended_key_usage": ["cmcRA"]},
    "dotted-oid": {"extended_key_usage": ["1.3.6.1.4.1.311.20.2.2", "clientAuth"]},
    "keyAgreement-encipherOnly": {
        "extended_key_usage": ["serverAuth"],
        "key_usage": ["digitalSignature", "keyAgreement", "encipherOnly"],
    },
    "contentCommitment": {"key_usage": ["contentCommitment"]},
}


@pytest.mark.parametrize("kind", list(TEMPLATES))
def test_leaf_from_template(api: httpx.Client, inter: dict[str, Any], kind: str) -> None:
    body = {"name": unique(f"Lint {kind}"), **TEMPLATES[kind]}
    template = data(api.post(f"{API}/templates", json=body), 201)
    leaf = issue(api, inter["id"], f"{kind.lower()}.example.com", template_id=template["id"])
    check(cert_pem(api, leaf["id"]), f"leaf from template {kind}", inter["pem"])


SANS = {
    "email": ["email:alice@example.com"],
    "uri": ["uri:https://svc.example.com/path"],
    "urn": ["uri:urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"],
    "ip": ["ip:10.0.0.1", "ip:2001:db8::1"],
    "wildcard": ["dns:*.example.com"],
    "mixed": ["dns:a.example.com", "email:b@example.com", "uri:spiffe://example.com/x"],
}


@pytest.mark.parametrize("kind", list(SANS))
def test_leaf_with_sans(api: httpx.Client, inter: dict[str, Any], kind: str) -> None:
    leaf = issue(api, inter["id"], "Alice Example", san=SANS[kind])
    check(cert_pem(api, leaf["id"]), f"leaf with {kind} SANs", inter["pem"])


def test_leaf_with_a_subject_email(api: httpx.Client, inter: dict[str, Any]) -> None:
    """The API's `email` subject field (RFC 5280 4.1.2.6: the address must be in the SAN)."""
    leaf = issue(api, inter["id"], "Alice Example", email="alice@example.com")
    check(cert_pem(api, leaf["id"]), "leaf with a subject email", inter["pem"])


CSRS = {
    "cn-only-person": (cn("John Doe"), None),
    "cn-only-host": (cn("cn-only.example.com"), None),
    "cn-only-single-label": (cn("device-42"), None),
    "empty-subject": (x509.Name([]), [x509.DNSName("no-subject.example.com")]),
    "subject-email": (cn("Bob", email="bob@example.com"), None),
}


@pytest.mark.parametrize("kind", list(CSRS))
def test_signed_csr_and_its_renewal(api: httpx.Client, inter: dict[str, Any], kind: str) -> None:
    subject, sans = CSRS[kind]
    body = {"ca_id": inter["id"], "csr": csr_pem(subject, sans)}
    signed = data(api.post(f"{API}/certificates", json=body), 201)
    check(cert_pem(api, signed["id"]), f"CSR {kind}", inter["pem"])
    renewed = data(api.post(f"{API}/certificates/{signed['id']}/renew", json={}), 201)
    check(cert_pem(api, renewed["id"]), f"renewal of CSR {kind}", inter["pem"])


def test_renewed_server_key_leaf(api: httpx.Client, inter: dict[str, Any]) -> None:
    leaf = issue(api, inter["id"], "renew.example.com", key_algorithm="RSA", key_size=2048)
    renewed = data(api.post(f"{API}/certificates/{leaf['id']}/renew", json={}), 201)
    check(cert_pem(api, renewed["id"]), "renewed leaf", inter["pem"])


def test_imported_then_renewed(api: httpx.Client, inter: dict[str, Any], workdir: Path) -> None:
    """A leaf made by openssl under a foreign root, imported with its key and renewed under a
    CA here."""
    outside = foreign_root(workdir, "/CN=Lint Foreign Root")
    made = foreign_signed(workdir, outside, "/CN=leaf.foreign.test", "v3_leaf", key="rsa:2048")
    body = {"certificate": made.pem, "private_key": made.key_pem}
    row = data(api.post(f"{API}/certificates/import", json=body), 201)
    renewed = api.post(f"{API}/certificates/{row['id']}/renew", json={"ca_id": inter["id"]})
    check(cert_pem(api, data(renewed, 201)["id"]), "imported then renewed", inter["pem"])


def test_acme_short_lived_profile(env: AcmeEnv) -> None:
    env.settings(profiles={"shortlived": {"description": "24 hours", "validity_days": 1}})
    host = f"{unique('lint')}.example.org"
    with registered(env) as account:
        order = account.ready_order(host, profile="shortlived")
        done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
        done = account.wait(done.get("url", order["url"]), ("valid", "invalid"))
        chain = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)
    assert chain[0].not_valid_after_utc - chain[0].not_valid_before_utc == timedelta(days=1)
    check(chain[0], "ACME short-lived certificate", chain[1])


def test_scep_ra_and_enrolled_certificate(server: Server) -> None:
    """The RA certificate GetCACert hands out, and a certificate enrolled through SCEP."""
    with default_profile(server, "Lint SCEP Root") as scep:
        check(scep.ra, "SCEP RA certificate", scep.ca)
        client = new_client()
        _, reply = scep.enroll(client, csr_der(client, "lint-device-1", scep.challenge))
    assert reply.certificates, reply
    check(reply.certificates[0], "SCEP-enrolled certificate", scep.ca)


# OCSP --------------------------------------------------------------------------------------


def test_ocsp_signer_and_responses(
    server: Server, api: httpx.Client, inter: dict[str, Any]
) -> None:
    """The delegated responder certificate, and good, revoked, unknown, nonce and error
    responses."""
    issuer = x509.load_pem_x509_certificate(inter["pem"].encode())
    rows = [issue(api, inter["id"], f"ocsp-{kind}.example.com") for kind in ("good", "revoked")]
    good, revoked = (x509.load_pem_x509_certificate(cert_pem(api, r["id"]).encode()) for r in rows)
    revoke_body = {"reason": "keyCompromise", "invalidity_date": "2024-01-02T03:04:05Z"}
    data(api.post(f"{API}/certificates/{rows[1]['id']}/revoke", json=revoke_body))

    def asking(cert: x509.Certificate) -> ocsp.OCSPRequestBuilder:
        return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())

    answer = ocsp_answer(server, asking(good))
    signer = ocsp.load_der_ocsp_response(answer).certificates[0]
    check(signer, "delegated OCSP responder certificate", issuer)
    nonce = x509.OCSPNonce(secrets.token_bytes(16))
    parsed = ocsp.load_der_ocsp_request(
        asking(good).build().public_bytes(serialization.Encoding.DER)
    )
    unknown = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        parsed.issuer_name_hash, parsed.issuer_key_hash, secrets.randbits(100), hashes.SHA1()
    )
    answers = {
        "good": answer,
        "revoked": ocsp_answer(server, asking(revoked)),
        "unknown": ocsp_answer(server, unknown),
        "nonce": ocsp_answer(server, asking(good).add_extension(nonce, critical=False)),
    }
    malformed = httpx.post(f"{server.http_url}/ocsp", content=b"\x30\x00", headers=OCSP_REQUEST)
    answers["malformedRequest"] = malformed.content
    for kind, der in answers.items():
        assert_clean(lint_ocsp_response(der), f"OCSP response {kind}")


# CRLs --------------------------------------------------------------------------------------


def test_crls_with_every_reason_and_a_delta(
    server: Server, api: httpx.Client, inter: dict[str, Any]
) -> None:
    """A full CRL with an entry of every reason (and an invalidity date), a delta with a
    released hold (removeFromCRL), and the root's CRL listing the revoked intermediate."""
    root = create_root(api, unique("Lint CRL Root"))
    ca = create_intermediate(api, root["id"], unique("Lint CRL CA"))
    certs = {
        reason: issue(api, ca["id"], f"crl-{reason.lower()}.example.com") for reason in REASONS
    }
    for reason, cert in certs.items():
        body = {"reason": reason, "invalidity_date": "2024-01-02T03:04:05Z"}
        data(api.post(f"{API}/certificates/{cert['id']}/revoke", json=body))
    last = certs[REASONS[-1]]["serial_number"]
    full, _ = wait_for_crl(server, ca["refid"], listed(last))
    assert_clean(lint_crl(full), "full CRL with every reason")
    held = certs["certificateHold"]
    data(api.post(f"{API}/certificates/{held['id']}/revoke", json={"reason": "removeFromCRL"}))

    def released_in(crl: x509.CertificateRevocationList) -> bool:
        return (
            listed(held["serial_number"])(crl)
            and entry_reason(crl, held["serial_number"]) == x509.ReasonFlags.remove_from_crl
        )

    delta, _ = wait_for_crl(server, ca["refid"], released_in, kind="delta")
    assert_clean(lint_crl(delta), "delta CRL with removeFromCRL")
    released, _ = wait_for_crl(server, ca["refid"], not_listed(held["serial_number"]))
    assert_clean(lint_crl(released), "full CRL after a release")
    data(api.post(f"{API}/cas/{ca['id']}/revoke", json={"reason": "cACompromise"}))
    root_crl, _ = wait_for_crl(server, root["refid"], listed(ca["serial_number"]))
    assert_clean(lint_crl(root_crl), "root CRL listing a CA")
    assert_clean(lint_crl(fetch_crl(server, root["refid"], "delta")), "root delta CRL")
