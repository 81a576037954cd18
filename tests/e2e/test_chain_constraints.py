"""Name constraints and path length along the whole issuer chain (RFC 5280 6.1): a relying
party intersects the permitted subtrees and unions the excluded ones of every CA down the
path, and counts every CA below each pathLenConstraint. A CA imported under a constrained
one (without constraints of its own) must not sign what the chain above it forbids; every
refusal here is one `openssl verify` agrees with, checked on a certificate made outside."""

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import API, data, download, error, import_ca_file, issue, unique
from tests.support import Server
from tests.tools import openssl_verify, pem_blocks

DNS_ONLY_EXAMPLE = x509.NameConstraints([x509.DNSName("example.com")], None)
NO_BAD_EXAMPLE = x509.NameConstraints(None, [x509.DNSName("bad.example.com")])


@dataclass(frozen=True)
class ForeignCA:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def pem_with_key(self) -> str:
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.pem + key.decode()


def name(common_name: str, **more: str) -> x509.Name:
    """C, O, then CN (the order Tessera writes its own subjects in)."""
    attributes = []
    if "country" in more:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, more["country"]))
    if "organization" in more:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, more["organization"]))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def foreign_cert(
    subject: x509.Name,
    issuer: ForeignCA | None = None,
    is_ca: bool = True,
    path_length: int | None = None,
    constraints: x509.NameConstraints | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> ForeignCA:
    """A certificate made outside Tessera with cryptography: a CA (root when `issuer` is None)
    or, with `is_ca` False, a leaf, to ask `openssl verify` what it thinks of the chain."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer else key
    now = datetime.now(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3000 if issuer is None else 2000))
        .add_extension(x509.BasicConstraints(is_ca, path_length if is_ca else None), True)
        .add_extension(_usage(is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return ForeignCA(builder.sign(signer, hashes.SHA256()), key)


def _usage(is_ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )


def imported(api: httpx.Client, ca: ForeignCA, with_key: bool = True) -> dict:
    content = ca.pem_with_key if with_key else ca.pem
    row: dict = data(import_ca_file(api, content.encode(), "ca.pem"), 201)
    return row


def openssl_says(workdir: Path, leaf: ForeignCA, *chain: ForeignCA) -> str:
    """`openssl verify -CAfile <root> -untrusted <the rest>` on a chain made outside."""
    return openssl_verify(workdir, leaf.pem, [c.pem for c in chain])


def certificates_total(api: httpx.Client) -> int:
    return int(data(api.get(f"{API}/certificates/stats"))["total"])


def cas_total(api: httpx.Client) -> int:
    return int(api.get(f"{API}/cas", params={"per_page": 1}).json()["meta"]["total"])


def refused_leaf(api: httpx.Client, ca_id: int, host: str) -> str:
    body = {"common_name": host, "ca_id": ca_id, "key_algorithm": "EC", "san": [f"dns:{host}"]}
    return error(api.post(f"{API}/certificates", json=body), 422)


def sub_ca(api: httpx.Client, parent_id: int, **extra: object) -> httpx.Response:
    body = {
        "common_name": unique("Chain Sub CA"),
        "ca_type": "intermediate",
        "parent_id": parent_id,
        "key_algorithm": "EC",
        "key_size": 256,
        **extra,
    }
    return api.post(f"{API}/cas", json=body)


def chain_of(api: httpx.Client, certificate_id: int) -> list[str]:
    path = f"{API}/certificates/{certificate_id}/export"
    return pem_blocks(download(api, path, format="chain").text)


# Name constraints


def test_a_roots_permitted_subtree_holds_under_an_unconstrained_intermediate(
    api: httpx.Client, workdir: Path
) -> None:
    root = foreign_cert(name(unique("Permits Example Root")), constraints=DNS_ONLY_EXAMPLE)
    inter = foreign_cert(name(unique("Unconstrained Issuing")), root)
    imported(api, root)
    issuing = imported(api, inter)
    assert issuing["parent_id"] is not None
    inside = issue(api, issuing["id"], "www.example.com", san=["dns:www.example.com"])
    chain = chain_of(api, inside["id"])
    assert len(chain) == 3 and "OK" in openssl_verify(workdir, chain[0], chain[1:])

    before = certificates_total(api)
    message = refused_leaf(api, issuing["id"], "www.other.org")
    assert "name constraints" in message and "dns:www.other.org" in message
    assert "dns:example.com" in message and root.certificate.subject.rfc4514_string() in message
    assert certificates_total(api) == before
    outside = foreign_cert(
        name("www.other.org"), inter, is_ca=False, sans=[x509.DNSName("www.other.org")]
    )
    assert "permitted subtree violation" in openssl_says(workdir, outside, inter, root)


def test_a_roots_excluded_subtree_holds_under_an_unconstrained_intermediate(
    api: httpx.Client, workdir: Path
) -> None:
    root = foreign_cert(name(unique("Excludes Bad Root")), constraints=NO_BAD_EXAMPLE)
    inter = foreign_cert(name(unique("Unconstrained Issuing")), root)
    imported(api, root)
    issuing = imported(api, inter)
    issue(api, issuing["id"], "good.example.com", san=["dns:good.example.com"])
    before = certificates_total(api)
    message = refused_leaf(api, issuing["id"], "host.bad.example.com")
    assert "name constraints" in message and "excluded dns:bad.example.com" in message
    assert certificates_total(api) == before
    outside = foreign_cert(
        name("host.bad.example.com"),
        inter,
        is_ca=False,
        sans=[x509.DNSName("host.bad.example.com")],
    )
    assert "excluded subtree violation" in openssl_says(workdir, outside, inter, root)


def test_permitted_subtrees_intersect_down_the_chain(api: httpx.Client, workdir: Path) -> None:
    """The root permits 192.0.2.0/25, the intermediate (wider) 192.0.2.0/24: only the lower
    half is allowed, whichever CA's constraint a name misses."""
    narrow = x509.NameConstraints([x509.IPAddress(ipaddress.ip_network("192.0.2.0/25"))], None)
    wide = x509.NameConstraints([x509.IPAddress(ipaddress.ip_network("192.0.2.0/24"))], None)
    root = foreign_cert(name(unique("Narrow Root")), constraints=narrow)
    inter = foreign_cert(name(unique("Wide Issuing")), root, constraints=wide)
    imported(api, root)
    issuing = imported(api, inter)
    inside = issue(api, issuing["id"], "device", san=["ip:192.0.2.5"])
    chain = chain_of(api, inside["id"])
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    for address in ("192.0.2.200", "10.0.0.1"):
        body = {"common_name": "device", "ca_id": issuing["id"], "san": [f"ip:{address}"]}
        assert f"ip:{address}" in error(api.post(f"{API}/certificates", json=body), 422)


# Path length


def test_a_child_of_a_path_length_zero_root_signs_nothing(api: httpx.Client, workdir: Path) -> None:
    """A root with pathLen 0 allows no CA below it: a CA imported under it breaks the chain
    for everything it signs, sub-CAs and leaves alike."""
    root = foreign_cert(name(unique("PathLen0 Root")), path_length=0)
    inter = foreign_cert(name(unique("Too Deep Issuing")), root)
    imported(api, root)
    issuing = imported(api, inter)
    cas_before, certs_before = cas_total(api), certificates_total(api)
    message = error(sub_ca(api, issuing["id"]), 422)
    assert "path length" in message and root.certificate.subject.rfc4514_string() in message
    assert "path length" in refused_leaf(api, issuing["id"], "leaf.example.com")
    assert (cas_total(api), certificates_total(api)) == (cas_before, certs_before)
    leaf = foreign_cert(name("leaf.example.com"), inter, is_ca=False)
    assert "path length constraint exceeded" in openssl_says(workdir, leaf, inter, root)


def test_a_ca_whose_chain_is_broken_cannot_be_chosen_for_acme_or_scep(
    api: httpx.Client,
) -> None:
    """The settings that choose a CA refuse one that could sign nothing valid, as they refuse
    a disabled or keyless one, instead of failing every order and enrollment later."""
    root = foreign_cert(name(unique("PathLen0 Chosen Root")), path_length=0)
    inter = foreign_cert(name(unique("Too Deep Chosen")), root)
    imported(api, root)
    issuing = imported(api, inter)
    before = data(api.get(f"{API}/acme/settings"))["issuing_ca_id"]
    patch = api.patch(f"{API}/acme/settings", json={"issuing_ca_id": issuing["id"]})
    assert "path length" in error(patch, 400)  # as for a disabled or keyless CA
    assert data(api.get(f"{API}/acme/settings"))["issuing_ca_id"] == before
    slug = unique("deep").lower()
    body = {"slug": slug, "enabled": True, "ca_id": issuing["id"], "use_ra": False}
    assert "path length" in error(api.post(f"{API}/scep/profiles", json=body), 422)
    error(api.get(f"{API}/scep/profiles/{slug}"), 404)


def test_an_ancestors_spent_path_length_budget_refuses_a_sub_ca(
    api: httpx.Client, workdir: Path
) -> None:
    """A root with pathLen 1 allows one CA below it: the imported intermediate (which sets
    none of its own) is that one. It may sign leaves, not another CA."""
    root = foreign_cert(name(unique("PathLen1 Root")), path_length=1)
    inter = foreign_cert(name(unique("Last Allowed Issuing")), root)
    imported(api, root)
    issuing = imported(api, inter)
    leaf = issue(api, issuing["id"], "ok.example.com")
    chain = chain_of(api, leaf["id"])
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    before = cas_total(api)
    message = error(sub_ca(api, issuing["id"]), 422)
    assert "path length" in message and "(1)" in message
    assert cas_total(api) == before
    deeper = foreign_cert(name(unique("Deeper")), inter)
    below = foreign_cert(name("below.example.com"), deeper, is_ca=False)
    assert "path length constraint exceeded" in openssl_says(workdir, below, deeper, inter, root)


def test_a_sub_ca_takes_the_chains_remaining_path_length(api: httpx.Client, workdir: Path) -> None:
    """A root with pathLen 2 over an imported intermediate without one: a sub-CA made under
    the intermediate gets pathLen 0 (what the root leaves), and may not ask for more."""
    root = foreign_cert(name(unique("PathLen2 Root")), path_length=2)
    inter = foreign_cert(name(unique("Middle Issuing")), root)
    imported(api, root)
    issuing = imported(api, inter)
    assert "path length" in error(sub_ca(api, issuing["id"], path_length=1), 422)
    made = data(sub_ca(api, issuing["id"]), 201)
    assert data(api.get(f"{API}/cas/{made['id']}"))["path_length"] == 0
    leaf = issue(api, made["id"], "deep.example.com")
    chain = chain_of(api, leaf["id"])
    assert len(chain) == 4 and "OK" in openssl_verify(workdir, chain[0], chain[1:])


# Certificates Tessera names itself: the OCSP responder and the SCEP RA

ACME_DE = x509.Name(name("x", country="DE", organization="Acme").rdns[:2])


def acme_chain(api: httpx.Client) -> tuple[ForeignCA, ForeignCA, dict]:
    """A root whose name constraints permit directoryName C=DE, O=Acme only, over an
    imported intermediate (with its key) that has none of its own."""
    permits_acme = x509.NameConstraints([x509.DirectoryName(ACME_DE)], None)
    root = foreign_cert(
        name(unique("Acme Root"), country="DE", organization="Acme"), constraints=permits_acme
    )
    inter = foreign_cert(name(unique("Acme Issuing"), country="DE", organization="Acme"), root)
    imported(api, root)
    return root, inter, imported(api, inter)


def common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def within_acme(certificate: x509.Certificate) -> bool:
    return certificate.subject.rdns[:2] == ACME_DE.rdns


def test_the_ocsp_responder_is_named_within_the_chains_directory_name_constraints(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    """The delegated responder certificate is named `<CA> OCSP Responder`; under a chain
    that permits C=DE, O=Acme alone it is named under the CA's own subject instead, so
    that it validates (and the responder answers)."""
    root, inter, issuing = acme_chain(api)
    made = issue(api, issuing["id"], "device.example.com", organization="Acme", country="DE")
    leaf = x509.load_pem_x509_certificate(
        download(api, f"{API}/certificates/{made['id']}/export", format="pem").content
    )
    asked = ocsp.OCSPRequestBuilder().add_certificate(leaf, inter.certificate, hashes.SHA1())
    response = httpx.post(
        f"{server.http_url}/ocsp",
        content=asked.build().public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=30,
    )
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    [signer] = answer.certificates
    inter_cn = common_name(inter.certificate)
    assert within_acme(signer), signer.subject.rfc4514_string()
    assert common_name(signer) == f"{inter_cn} OCSP Responder"
    signer_pem = signer.public_bytes(serialization.Encoding.PEM).decode()
    assert "OK" in openssl_verify(workdir, signer_pem, [inter.pem, root.pem])


def test_the_scep_ra_is_named_within_the_chains_directory_name_constraints(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    """The RA is O=Tessera, CN=SCEP RA <slug>; under a chain that permits C=DE, O=Acme alone
    it is named under the CA's own subject instead, so that clients can validate it."""
    root, inter, issuing = acme_chain(api)
    slug = unique("acme").lower()
    body = {"slug": slug, "enabled": True, "ca_id": issuing["id"]}
    data(api.post(f"{API}/scep/profiles", json=body), 201)
    with httpx.Client(base_url=server.http_url, timeout=60) as http:
        reply = http.get(f"/scep/{slug}/pkiclient.exe", params={"operation": "GetCACert"})
    assert reply.status_code == 200, reply.text
    certificates = pkcs7.load_der_pkcs7_certificates(reply.content)
    [ra] = [c for c in certificates if common_name(c) == f"SCEP RA {slug}"]
    assert within_acme(ra), ra.subject.rfc4514_string()
    ra_pem = ra.public_bytes(serialization.Encoding.PEM).decode()
    assert "OK" in openssl_verify(workdir, ra_pem, [inter.pem, root.pem])


def test_a_responder_subject_that_cannot_fit_refuses_the_scep_profile(
    api: httpx.Client,
) -> None:
    """When no subject under the CA's own or a permitted subtree fits (here every one of
    them is excluded too), the RA is refused with a clear 422 and the profile not saved."""
    both = x509.NameConstraints([x509.DirectoryName(ACME_DE)], [x509.DirectoryName(ACME_DE)])
    root = foreign_cert(
        name(unique("Nothing Fits Root"), country="DE", organization="Acme"), constraints=both
    )
    issuing = imported(api, root)
    slug = unique("none").lower()
    body = {"slug": slug, "enabled": True, "ca_id": issuing["id"]}
    message = error(api.post(f"{API}/scep/profiles", json=body), 422)
    assert "directoryName constraints" in message and f"SCEP RA {slug}" in message
    error(api.get(f"{API}/scep/profiles/{slug}"), 404)
