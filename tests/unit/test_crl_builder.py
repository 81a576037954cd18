"""The CRL builder's hand-made DER, read back by cryptography and by openssl."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tessera.core.keys import PrivateKey, signature_hash
from tessera.domains.crl.builder import CRLSpec, Entry, build_crl, to_pem
from tessera.domains.crl.publisher import delta_entries
from tests.tools import openssl

NOW = datetime(2026, 11, 25, 12, 30, 45, tzinfo=UTC)


def issuer(key: PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Unit CRL CA")])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, signature_hash(key))  # type: ignore[arg-type]
    )


KEYS: dict[str, Callable[[], PrivateKey]] = {
    "ec": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", KEYS)
def test_entries_read_back_exactly(kind: str) -> None:
    key = KEYS[kind]()
    ca = issuer(key)
    entries = [
        Entry("7F", NOW, "keyCompromise"),
        Entry("80", NOW - timedelta(days=400), None),  # high bit set: a leading zero octet
        Entry("1", int((NOW - timedelta(seconds=1)).timestamp()), "certificateHold"),
        Entry("-5", NOW, "superseded"),  # imported, non-conforming: still encodable
        Entry("AB" * 20, datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC), "unspecified"),
        Entry("C0FFEE", NOW, "cACompromise", NOW - timedelta(hours=2)),
    ]
    spec = CRLSpec(ca, key, 2**70, NOW, NOW + timedelta(days=1), None, "http://x/d.crl")
    crl = x509.load_der_x509_crl(build_crl(spec, entries))
    assert crl.is_signature_valid(key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2**70
    assert crl.extensions.get_extension_for_class(x509.FreshestCRL)
    assert len(crl) == len(entries)
    found = {r.serial_number: r for r in crl}
    assert found[0x80].revocation_date_utc == NOW - timedelta(days=400)
    assert found[1].revocation_date_utc == NOW - timedelta(seconds=1)
    assert found[-5].extensions.get_extension_for_class(x509.CRLReason)
    far = found[int("AB" * 20, 16)]
    assert far.revocation_date_utc == datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC)  # Generalized
    assert len(far.extensions) == 0  # unspecified: the reason is left out
    hold = found[1].extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert hold == x509.ReasonFlags.certificate_hold
    invalid = found[0xC0FFEE].extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalid.invalidity_date_utc == NOW - timedelta(hours=2)
    text = openssl("crl", "-noout", "-text", input=to_pem(build_crl(spec, entries)).encode())
    assert text.returncode == 0 and b"Certificate Hold" in text.stdout


def test_empty_and_delta_crls() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = issuer(key)
    spec = CRLSpec(ca, key, 8, NOW, NOW + timedelta(hours=4), delta_base=6)
    crl = x509.load_der_x509_crl(build_crl(spec, []))
    assert crl.is_signature_valid(key.public_key())
    assert len(crl) == 0
    indicator = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 6
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_large_crl_has_long_form_lengths() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    entries = [Entry(format(i + 1, "X"), NOW, "superseded") for i in range(20_000)]
    der = build_crl(CRLSpec(issuer(key), key, 1, NOW, NOW + timedelta(days=1)), entries)
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 20_000 and crl.is_signature_valid(key.public_key())


def test_delta_lists_changes_as_they_stand_now() -> None:
    current = {"AA": ("AA", 100, "keyCompromise")}
    changes = [("AA", NOW), ("BB", NOW - timedelta(minutes=1)), ("BB", NOW)]
    listed = {entry[0]: entry for entry in delta_entries(current, changes)}  # type: ignore[arg-type]
    assert listed["AA"] == ("AA", 100, "keyCompromise")
    assert listed["BB"] == Entry("BB", NOW, "removeFromCRL")  # released: the last change
