"""`formats.public_key_among`: a stored certificate's key is found among a few keys by a bytes
search before a parse, and among many by a parse alone; both ways give the same answer, and a
key the certificate only quotes (in an extension) is not taken for its own."""

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tessera.core.formats import FEW_KEYS, cert_pem, public_key_among, public_key_der
from tests.e2e.helpers import self_signed_ca


def _spki() -> bytes:
    return public_key_der(ec.generate_private_key(ec.SECP256R1()).public_key())


def test_found_among_few_and_among_many_keys() -> None:
    cert, _ = self_signed_ca("Key Owner", timedelta(days=9))
    own = public_key_der(cert.public_key())
    pem = cert_pem(cert)
    for count in (1, FEW_KEYS, FEW_KEYS + 1, 3 * FEW_KEYS):
        others = {_spki() for _ in range(count - 1)}
        assert public_key_among(pem, others | {own}) == own, count
        assert public_key_among(pem, others | {_spki()}) is None, count


def test_a_key_quoted_in_an_extension_is_not_the_certificates() -> None:
    quoted = _spki()
    cert, _ = self_signed_ca("Quoter", timedelta(days=9))
    key = ec.generate_private_key(ec.SECP256R1())
    name = cert.subject
    # the certificate's DER holds `quoted` verbatim, in an unknown extension's value
    extension = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), quoted)
    quoting = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(extension, critical=False)
        .sign(key, hashes.SHA256())
    )
    assert public_key_among(cert_pem(quoting), {quoted}) is None
    assert public_key_among(cert_pem(quoting), {quoted, public_key_der(key.public_key())}) == (
        public_key_der(key.public_key())
    )
