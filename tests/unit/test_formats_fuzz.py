"""Every parser in tessera.core.formats, fed random bytes and damaged valid files (PEM, DER,
PKCS#12, PKCS#7, CSRs, keys; byte flips, truncations, insertions, re-armoured damage): it
returns, or it raises a typed TesseraError. Nothing else may escape, and what it returns can
be read further (names, extensions, key) without an untyped error either."""

import base64
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.core import formats, inspect, uploads
from tessera.core.errors import TesseraError
from tests.tools import openssl

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PASSWORD = b"fuzz-password"
# TESSERA_FUZZ_EXAMPLES=20000 for a deeper run than the suite's.
FUZZ = settings(
    max_examples=int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,  # no .hypothesis directory in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(key: Any, issuer_key: Any, cn: str, ca: bool) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name("Fuzz Root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("fuzz.example"), x509.RFC822Name("a@fuzz.example")]
            ),
            False,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _samples() -> dict[str, bytes]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _certificate(root_key, root_key, "Fuzz Root", True)
    leaf = _certificate(leaf_key, root_key, "leaf.fuzz.example", False)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("csr.fuzz.example"))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("csr.fuzz.example")]), False)
        .sign(root_key, hashes.SHA256())
    )
    der, pem = serialization.Encoding.DER, serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain, locked = serialization.NoEncryption(), serialization.BestAvailableEncryption(PASSWORD)
    return {
        "cert.pem": leaf.public_bytes(pem) + root.public_bytes(pem),
        "cert.der": leaf.public_bytes(der),
        "csr.pem": csr.public_bytes(pem),
        "csr.der": csr.public_bytes(der),
        "key.pem": leaf_key.private_bytes(pem, pkcs8, plain),
        "key.der": root_key.private_bytes(der, pkcs8, plain),
        "key-encrypted.pem": root_key.private_bytes(pem, pkcs8, locked),
        "key-encrypted.der": root_key.private_bytes(der, pkcs8, locked),
        "key-traditional.pem": root_key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, locked
        ),
        "p7.pem": pkcs7.serialize_certificates([leaf, root], pem),
        "p7.der": pkcs7.serialize_certificates([leaf, root], der),
        "p12": formats.pkcs12_bundle("fuzz", leaf, leaf_key, [root], PASSWORD.decode()),
        "trusted.pem": _trusted_pem(root.public_bytes(der)),
    }


# OpenSSL's X509_CERT_AUX trusting serverAuth: SEQUENCE { SEQUENCE { OID 1.3.6.1.5.5.7.3.1 } }
SERVER_AUTH_TRUST = bytes.fromhex("300c300a06082b06010505070301")


def _trusted_pem(cert_der: bytes) -> bytes:
    """What `openssl x509 -trustout -addtrust serverAuth` writes."""
    body = base64.encodebytes(cert_der + SERVER_AUTH_TRUST)
    return b"-----BEGIN TRUSTED CERTIFICATE-----\n" + body + b"-----END TRUSTED CERTIFICATE-----\n"


def _openssl_pkcs12(samples: dict[str, bytes], workdir: Path) -> bytes:
    """A PKCS#12 made by openssl itself (its own MAC and encryption choices)."""
    (workdir / "c.pem").write_bytes(samples["cert.pem"])
    (workdir / "k.pem").write_bytes(samples["key.pem"])
    password = f"pass:{PASSWORD.decode()}"
    made = openssl(
        "pkcs12",
        "-export",
        "-in",
        str(workdir / "c.pem"),
        "-inkey",
        str(workdir / "k.pem"),
        "-passout",
        password,
    )
    assert made.returncode == 0, made.stderr.decode()
    return made.stdout


SAMPLES = _samples()
LABELS = [
    "CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "CERTIFICATE REQUEST",
    "PRIVATE KEY",
    "PKCS7",
    "ENCRYPTED PRIVATE KEY",
]


def armour(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN " + label.encode() + b"-----\n" + body + b"-----END " + label.encode()


def _der_of(sample: bytes) -> bytes:
    """The binary inside the first PEM block, or the sample itself."""
    blocks = formats.pem_objects(sample)
    if not blocks:
        return sample
    lines = blocks[0][1].splitlines()[1:-1]
    return base64.b64decode(b"".join(line for line in lines if b":" not in line))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid sample with a few byte flips, cuts, insertions or deletions, sometimes put
    back in PEM armour so that the damage reaches the DER parser, not the base64 decoder."""
    name = draw(st.sampled_from(sorted(SAMPLES)))
    data = bytearray(_der_of(SAMPLES[name]) if draw(st.booleans()) else SAMPLES[name])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        return armour(draw(st.sampled_from(LABELS)), bytes(data))
    return bytes(data)


inputs = st.one_of(
    st.binary(max_size=2048),
    damaged(),
    st.binary(max_size=512).map(lambda raw: armour("CERTIFICATE", raw)),
    st.sampled_from(sorted(SAMPLES.values())),
)
passwords = st.sampled_from([None, PASSWORD, b"wrong"])


def _typed(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except TesseraError as exc:
        assert exc.message and isinstance(exc.status, int) and 400 <= exc.status < 500
        return None


def _read_further(cert: x509.Certificate) -> None:
    """What the views and the storage read from a certificate the parsers accepted."""
    _typed(lambda: inspect.details(cert, NOW))
    inspect.sans(cert)
    inspect.key_identifier(cert)
    inspect.authority_key_identifier(cert)
    inspect.path_length(cert)
    inspect.is_ca(cert)
    formats.cert_pem(cert)


@FUZZ
@given(data=inputs)
def test_certificate_readers(data: bytes) -> None:
    certs = _typed(lambda: formats.load_certificates(data))
    for cert in certs or []:
        _read_further(cert)
    _typed(lambda: formats.load_certificate(data))


@FUZZ
@given(data=inputs, verify=st.booleans())
def test_csr_reader(data: bytes, verify: bool) -> None:
    csr = _typed(lambda: formats.load_csr(data, verify=verify))
    if csr is not None:
        formats.csr_pem(csr)
        formats.public_key_der(csr.public_key())
        _typed(lambda: formats.csr_signature_valid(csr))


@FUZZ
@given(data=inputs, password=passwords)
def test_key_readers(data: bytes, password: bytes | None) -> None:
    key = _typed(lambda: formats.load_private_key(data, password))
    if key is not None:
        formats.key_pem(key)
    formats.key_is_encrypted(data)


@FUZZ
@given(data=inputs, password=passwords)
def test_pkcs12_reader(data: bytes, password: bytes | None) -> None:
    opened = _typed(lambda: formats.load_pkcs12(data, password))
    if opened is not None:
        cert, _key, extra = opened
        for each in [cert, *extra] if cert else extra:
            _read_further(each)


@FUZZ
@given(data=inputs, password=passwords)
def test_read_objects(data: bytes, password: bytes | None) -> None:
    content = _typed(lambda: uploads.read_objects(data, password))
    for found in content.objects if content else []:
        assert found.problem or found.certificate or found.csr or found.key
        if found.certificate is not None:
            _read_further(found.certificate)


@FUZZ
@given(text=st.text(max_size=1024) | inputs.map(lambda raw: base64.b64encode(raw).decode()))
def test_pasted_text(text: str) -> None:
    raw = formats.decode_text(text)
    assert isinstance(raw, bytes)
    _typed(lambda: uploads.read_objects(raw, None))


@FUZZ
@given(data=inputs)
def test_pem_scanner(data: bytes) -> None:
    for label, block in formats.pem_objects(data):
        assert block.startswith(b"-----BEGIN " + label.encode())
        assert block.endswith(b"-----END " + label.encode() + b"-----")
    formats.looks_like_pkcs12(data)
    formats.decode_upload(data)


@FUZZ
@given(data=damaged())
def test_issuer_check_never_raises(data: bytes) -> None:
    root = formats.load_certificates(SAMPLES["cert.pem"])[1]
    for cert in _typed(lambda: formats.load_certificates(data)) or []:
        assert formats.is_issued_by(cert, root) in (True, False)


def test_samples_are_readable(tmp_path: Path) -> None:
    """The seeds of the damage are themselves valid, so the fuzzing starts from real files."""
    assert len(formats.load_certificates(SAMPLES["cert.pem"])) == 2
    assert len(formats.load_certificates(SAMPLES["p7.der"])) == 2
    (trusted,) = formats.load_certificates(SAMPLES["trusted.pem"])
    assert trusted.subject == _name("Fuzz Root")
    assert formats.load_csr(SAMPLES["csr.der"]).subject == _name("csr.fuzz.example")
    assert formats.load_private_key(SAMPLES["key-encrypted.der"], PASSWORD) is not None
    assert formats.load_private_key(SAMPLES["key-traditional.pem"], PASSWORD) is not None
    for name in ("p12",):
        cert, key, extra = formats.load_pkcs12(SAMPLES[name], PASSWORD)
        assert cert is not None and key is not None and len(extra) == 1
    from_openssl = _openssl_pkcs12(SAMPLES, tmp_path)
    cert, key, _ = formats.load_pkcs12(from_openssl, PASSWORD)
    assert cert is not None and key is not None
    kinds = [f.kind for f in uploads.read_objects(b"".join(SAMPLES.values()), PASSWORD).objects]
    assert kinds.count("certificate") >= 4 and "csr" in kinds and "private_key" in kinds


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_is_typed(name: str) -> None:
    """Each prefix of each sample (DER and PEM): the exhaustive form of a cut."""
    sample = SAMPLES[name]
    step = max(1, len(sample) // 97)
    for end in range(0, len(sample), step):
        for password in (None, PASSWORD):
            _typed(lambda cut=sample[:end], pw=password: uploads.read_objects(cut, pw))
        _typed(lambda cut=sample[:end]: formats.load_certificates(cut))
