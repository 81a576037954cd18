"""Migration 0022 rewrites the subject, issuer and SAN texts stored before it, on both
backends: an emailAddress by name instead of its dotted OID, and SAN texts of the form older
rows kept (`other:` and a Python repr) as the current ones; the search copy follows."""

import base64
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, select

from tessera.core.formats import cert_pem
from tessera.domains.issuance import ca_row, certificate_row
from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.models_scep import ScepProfile, ScepRequest
from tessera.storage.models_search import CertificateSearchRow
from tessera.storage.repositories import Repositories
from tests.support import alembic

MAILBOX = "pki@mail.example"
ROOT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "Mail Root"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, MAILBOX),
    ]
)
LEAF = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "host.example"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "host@mail.example"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "FTX1234"),
        x509.NameAttribute(NameOID.UNSTRUCTURED_NAME, "router-7"),
    ]
)
LEAF_TEXT = (
    "unstructuredName=router-7,serialNumber=FTX1234,emailAddress=host@mail.example,CN=host.example"
)
# An OU whose value holds the dotted OID and `=` (not escaped by RFC 4514): left alone.
VALUE_LIKE_A_TYPE = r",OU=1.2.840.113549.1.9.1=x\,1.2.840.113549.1.9.1=y"
DIRECTORY = x509.DirectoryName(
    x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jane Doe"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "jane@mail.example"),
        ]
    )
)


def test_texts_stored_before_0022_are_rewritten(bare_engine: Engine) -> None:
    alembic(bare_engine, "upgrade", "0021")
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _signed(ROOT, ROOT, root_key, root_key, [], ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _signed(LEAF, ROOT, leaf_key, root_key, [x509.DNSName("host.example"), DIRECTORY])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(LEAF)
        .add_extension(x509.SubjectAlternativeName([DIRECTORY]), critical=False)
        .sign(leaf_key, hashes.SHA256())
    )
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        ids = _old_rows(session, root, leaf, csr)
    alembic(bare_engine, "upgrade", "head")

    root_text = f"emailAddress={MAILBOX},CN=Mail Root"
    leaf_text = LEAF_TEXT
    dirname = r"dirname:emailAddress=jane@mail.example,CN=Jane\20Doe"
    with sessions.begin() as session:
        ca = session.get(models.CertificateAuthority, ids["ca"])
        assert ca is not None and (ca.subject, ca.issuer) == (root_text, root_text)
        cert = session.get(models.Certificate, ids["certificate"])
        assert cert is not None and (cert.subject, cert.issuer) == (leaf_text, root_text)
        assert cert.san_text == f"dns:host.example {dirname}"
        search = session.get(CertificateSearchRow, ids["certificate"])
        assert search is not None and dirname.lower() in search.text
        trusted = session.get(models.TrustedCertificate, ids["trusted"])
        assert trusted is not None and (trusted.subject, trusted.issuer) == (root_text, root_text)
        request = session.get(models.CertificateRequestRow, ids["csr"])
        assert request is not None and (request.subject, request.san_text) == (leaf_text, dirname)
        scep = session.scalar(select(ScepRequest.subject).where(ScepRequest.id == ids["scep"]))
        assert scep == leaf_text + VALUE_LIKE_A_TYPE
        # what an import of the CA, or of what it issued, compares with: today's texts
        repos = Repositories(session, ca.org_id)
        assert [c.id for c in repos.cas.with_subject(root_text)] == [ids["ca"]]
        issued = repos.certificates.unlinked_issued_by(root_text)
        assert [c.id for c in issued] == [ids["certificate"]]

    alembic(bare_engine, "downgrade", "0021")  # the dotted OID again, for the older code
    with sessions.begin() as session:
        cert = session.get(models.Certificate, ids["certificate"])
        assert cert is not None and cert.issuer == root.issuer.rfc4514_string()
        scep = session.scalar(select(ScepRequest.subject).where(ScepRequest.id == ids["scep"]))
        assert scep == leaf.subject.rfc4514_string() + VALUE_LIKE_A_TYPE


def _old_rows(
    session: Any, root: x509.Certificate, leaf: x509.Certificate, csr: Any
) -> dict[str, int]:
    """Rows as the code before 0022 wrote them: names by dotted OID, SAN texts of the three
    other kinds as `other:` and a repr."""
    org = Repositories(session, 0).organizations.add("migrated").id
    ca = ca_row(root, None, "Mail Root", None)
    cert = certificate_row(leaf, cast(Any, None), None)
    old_san = f"dns:host.example other:{DIRECTORY.value}"
    ca.org_id, cert.org_id = org, org
    ca.subject = ca.issuer = cert.issuer = root.subject.rfc4514_string()
    cert.subject, cert.san_text = leaf.subject.rfc4514_string(), old_san
    trusted = _trusted(root, org)
    request = models.CertificateRequestRow(
        org_id=org,
        refid="csr-1",
        name="old csr",
        common_name="host.example",
        subject=csr.subject.rfc4514_string(),
        san_text=f"other:{DIRECTORY.value}",
        key_algorithm="EC",
        key_size=256,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
    )
    session.add_all([ca, cert, trusted, request])
    profile = ScepProfile(org_id=org, slug="old")
    session.add(profile)
    session.flush()
    scep = ScepRequest(
        org_id=org,
        profile_id=profile.id,
        transaction_id="t-1",
        message_type="PKCSReq",
        status="pending",
        subject=leaf.subject.rfc4514_string() + VALUE_LIKE_A_TYPE,
        key_digest="0" * 64,
        encrypted_csr="sealed",
        challenge="valid",
    )
    session.add(scep)
    session.flush()
    ids = {"ca": ca.id, "certificate": cert.id, "trusted": trusted.id, "csr": request.id}
    return {**ids, "scep": scep.id}


def _trusted(root: x509.Certificate, org: int) -> models.TrustedCertificate:
    return models.TrustedCertificate(
        org_id=org,
        name="Mail Root",
        common_name="Mail Root",
        subject=root.subject.rfc4514_string(),
        issuer=root.issuer.rfc4514_string(),
        serial_number=format(root.serial_number, "x"),
        not_before=root.not_valid_before_utc,
        not_after=root.not_valid_after_utc,
        is_root=True,
        fingerprint_sha256=root.fingerprint(hashes.SHA256()).hex(),
        certificate_pem=cert_pem(root),
    )


def _signed(
    subject: x509.Name,
    issuer: x509.Name,
    key: Any,
    issuer_key: Any,
    sans: list[x509.GeneralName],
    ca: bool = False,
    ian: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ian:  # an issuer alternative name like the SAN, for a test to turn into a second SAN
        builder = builder.add_extension(x509.IssuerAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_rows_this_library_cannot_fully_read_do_not_stop_the_upgrade(bare_engine: Engine) -> None:
    """A certificate cryptography refuses outright (here a version it does not know, which
    raises `InvalidVersion`, no ValueError) keeps its texts, and the upgrade goes on; one
    whose names read but whose SANs do not (a duplicate extension, raised only when the
    extensions are read) still gets today's subject and issuer texts, which imports and
    issuer groups match on, and keeps its SAN text."""
    alembic(bare_engine, "upgrade", "0021")
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _signed(ROOT, ROOT, root_key, root_key, [], ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _signed(LEAF, ROOT, leaf_key, root_key, [x509.DNSName("host.example")], ian=True)
    dotted_root, dotted_leaf = root.subject.rfc4514_string(), leaf.subject.rfc4514_string()
    sessions = session_factory(bare_engine)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("unreadable").id
        ca = ca_row(root, None, "Mail Root", None)
        cert = certificate_row(leaf, cast(Any, None), None)
        ca.org_id, cert.org_id = org, org
        ca.subject = ca.issuer = cert.issuer = dotted_root
        cert.subject, cert.san_text = dotted_leaf, "dns:host.example"
        ca.certificate_pem = _pem(_patched(root, "a003020102", "a003020103"))  # "v4"
        # the issuer alternative name's OID (2.5.29.18) as the SAN's: two SAN extensions
        cert.certificate_pem = _pem(_patched(leaf, "0603551d12", "0603551d11"))
        session.add_all([ca, cert])
        session.flush()
        ids = (ca.id, cert.id)
    alembic(bare_engine, "upgrade", "head")
    with sessions.begin() as session:
        kept = session.get(models.CertificateAuthority, ids[0])
        assert kept is not None and (kept.subject, kept.issuer) == (dotted_root, dotted_root)
        named = session.get(models.Certificate, ids[1])
        assert named is not None
        assert named.subject == LEAF_TEXT
        assert named.issuer == f"emailAddress={MAILBOX},CN=Mail Root"
        assert named.san_text == "dns:host.example"


def _patched(cert: x509.Certificate, old: str, new: str) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(bytes.fromhex(old)) == 1
    return der.replace(bytes.fromhex(old), bytes.fromhex(new))


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""])
