"""Human-readable facts about a certificate, shared by every dialect that shows details."""

import string
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tessera.core.errors import PolicyViolation
from tessera.core.keys import describe_public_key
from tessera.core.names import (
    extended_key_usage_names,
    format_san,
    key_usage_names,
    name_text,
)


def common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def name_field(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def serial_hex(serial: int) -> str:
    return format(serial, "X")


HEX_DIGITS = frozenset(string.hexdigits)
MAX_SERIAL_DIGITS = 64  # the column's width; RFC 5280 allows 40, imported ones may hold more


def serial_named_by(text: str) -> str | None:
    """The serial a search term names, written as stored (`serial_hex`), or None: hex digits,
    after an optional `0x`, maybe split by colons or spaces as openssl and browsers print it."""
    digits = text.strip()
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    digits = digits.replace(":", "").replace(" ", "")
    if not digits or len(digits) > MAX_SERIAL_DIGITS or not HEX_DIGITS.issuperset(digits):
        return None
    return serial_hex(int(digits, 16))


def public_key_sha256(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The SHA-256 of the SubjectPublicKeyInfo, hex: one key's identity across certificates
    and requests. Re-encoded by cryptography where it knows the algorithm (an EC point may be
    written compressed or not); as found in the certificate where it does not."""
    try:
        return key_sha256(cert.public_key())
    except UnsupportedAlgorithm:
        tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        return _sha256_hex(tbs["tbs_certificate"]["subject_public_key_info"].dump())


def issuer_identity(cert: x509.Certificate) -> tuple[bytes, str]:
    """What a relying party knows an issuer by: its name (DER) and its key. An OCSP CertID
    hashes exactly these, and a CRL names its issuer and its key identifier, so two CA
    certificates with both the same (a re-issued root) are one issuer to everyone outside."""
    return cert.subject.public_bytes(), public_key_sha256(cert)


def key_sha256(public_key: object) -> str:
    """`public_key_sha256` of a public key object (one cryptography can encode)."""
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _sha256_hex(der)


def _sha256_hex(data: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize().hex()


def fingerprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return cert.fingerprint(algorithm).hex(":").upper()


def sans(cert: x509.Certificate) -> list[str]:
    return [format_san(name) for name in general_names(cert)]


def general_names(
    signed: x509.Certificate | x509.CertificateSigningRequest,
) -> list[x509.GeneralName]:
    """The subject alternative names of a certificate or request (none without the extension)."""
    try:
        ext = signed.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def signature_algorithm(cert: x509.Certificate) -> str:
    return oid_name(cert.signature_algorithm_oid)


def oid_name(oid: x509.ObjectIdentifier) -> str:
    """The OID's short name, or its dotted form when cryptography knows no name (it says
    "Unknown OID" then, which tells a reader nothing)."""
    name = getattr(oid, "_name", None)
    return name if name and name != "Unknown OID" else oid.dotted_string


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None


def key_identifier(cert: x509.Certificate) -> str | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.digest.hex()


def key_identifiers(cert: x509.Certificate) -> set[bytes]:
    """What names `cert` as a signer or recipient by key identifier (RFC 5652 5.3, 6.2.1):
    its extension's value (RFC 7093's need not be the SHA-1 of the key), and that SHA-1."""
    found = {x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest}
    try:
        stated = key_identifier(cert)
    except ValueError:  # unreadable extensions: the SHA-1 is all that names it
        stated = None
    if stated is not None:
        found.add(bytes.fromhex(stated))
    return found


def authority_key_identifier(cert: x509.Certificate) -> str | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.key_identifier.hex() if ext.value.key_identifier else None


def details(cert: x509.Certificate, now: datetime) -> dict[str, object]:
    """Parsed details as the native API's certificate view shows them."""
    key_algorithm: str = "unknown"
    key_size = 0
    try:
        key = describe_public_key(cert.public_key())
        key_algorithm, key_size = key.algorithm, key.size
    except (ValueError, PolicyViolation):  # a key Tessera would not issue for is still shown
        public_key = cert.public_key()
        key_algorithm = type(public_key).__name__.removesuffix("PublicKey") or "unknown"
        key_size = int(getattr(public_key, "key_size", 0))
    remaining = cert.not_valid_after_utc - now
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "san": sans(cert),
        "key_usage": key_usages(cert),
        "extended_key_usage": extended_key_usages(cert),
        "serial_number": serial_hex(cert.serial_number),
        "fingerprint_sha1": fingerprint(cert, hashes.SHA1()),  # noqa: S303 - display only
        "fingerprint_sha256": fingerprint(cert, hashes.SHA256()),
        "key_algorithm": key_algorithm,
        "key_size": key_size,
        "signature_algorithm": signature_algorithm(cert),
        "is_ca": is_ca(cert),
        "days_remaining": max(remaining.days, 0) if remaining.total_seconds() > 0 else 0,
    }


def key_usages(cert: x509.Certificate) -> list[str]:
    try:
        return key_usage_names(cert.extensions.get_extension_for_class(x509.KeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def extended_key_usages(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return []
    return extended_key_usage_names(ext.value)
