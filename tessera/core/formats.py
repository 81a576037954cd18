"""Reading and writing certificates, CSRs and keys in the formats the dialects exchange."""

import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from tessera.core.errors import InvalidInput, PolicyViolation, UnparsableInput
from tessera.core.keys import PrivateKey
from tessera.core.keystore import _as_supported

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?-----END \1-----", re.DOTALL)


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """Every PEM block with this label, ignoring text before, between and after them."""
    wanted = label.encode()
    return [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) == wanted]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM (one or many, with surrounding text), DER, or a PKCS#7 bundle."""
    try:
        blocks = pem_blocks(data, "CERTIFICATE")
        if blocks:
            return [x509.load_pem_x509_certificate(b) for b in blocks]
        if b"-----BEGIN PKCS7-----" in data:
            return pkcs7.load_pem_pkcs7_certificates(data)
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            return pkcs7.load_der_pkcs7_certificates(data)
    except ValueError as exc:
        raise UnparsableInput("not a certificate in PEM, DER or PKCS#7 form") from exc


def load_certificate(data: bytes) -> x509.Certificate:
    certs = load_certificates(data)
    if not certs:
        raise UnparsableInput("no certificate found")
    return certs[0]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A PEM or DER CSR whose self-signature verifies."""
    try:
        blocks = pem_blocks(data, "CERTIFICATE REQUEST") or pem_blocks(
            data, "NEW CERTIFICATE REQUEST"
        )
        if blocks:
            pem = blocks[0].replace(b"NEW CERTIFICATE REQUEST", b"CERTIFICATE REQUEST")
            csr = x509.load_pem_x509_csr(pem)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise UnparsableInput("not a certificate signing request in PEM or DER form") from exc
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise PolicyViolation("CSR signature cannot be checked") from exc
    if not valid:
        raise PolicyViolation("CSR signature does not verify")
    return csr


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    try:
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data) if b"PRIVATE KEY" in m.group(1)]
        if blocks:
            key = serialization.load_pem_private_key(blocks[0], password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except TypeError as exc:
        raise InvalidInput("the private key is encrypted: a password is required") from exc
    except ValueError as exc:
        raise UnparsableInput("not a private key in PEM or DER form, or wrong password") from exc
    return _as_supported(key)


def load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[x509.Certificate | None, PrivateKey | None, list[x509.Certificate]]:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        raise InvalidInput("not a PKCS#12 file, or the password is wrong") from exc
    return cert, (_as_supported(key) if key is not None else None), list(extra)


def looks_like_pkcs12(data: bytes) -> bool:
    """PKCS#12 is DER starting with a SEQUENCE holding version 3."""
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[:8]


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def key_pem(key: PrivateKey, passphrase: str | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode("ascii")


def pkcs12_bundle(
    name: str,
    cert: x509.Certificate,
    key: PrivateKey | None,
    chain: list[x509.Certificate],
    password: str,
) -> bytes:
    if not password:
        raise InvalidInput("a password is required for PKCS#12 export")
    # AES-256 with PBKDF2 and SHA-256 MAC: readable by OpenSSL 1.1+ and 3.x.
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode(), key, cert, chain or None, encryption
    )


def pkcs7_bundle(certs: list[x509.Certificate], der: bool = False) -> bytes:
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return pkcs7.serialize_certificates(certs, encoding)
