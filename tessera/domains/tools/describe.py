"""Facts about certificates, CSRs and keys for display (the tools and smart import). Any key
type is described, including those Tessera does not issue for; nothing here raises on an
object the readers in core.formats accepted."""

from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from tessera.core import inspect
from tessera.core.clock import wire_time
from tessera.core.errors import PolicyViolation
from tessera.core.formats import cert_pem, csr_pem, csr_signature_valid, is_issued_by
from tessera.core.names import format_san, name_text

iso = wire_time


def key_facts(key: PublicKeyTypes) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPublicKey):
        return {"algorithm": "RSA", "size": key.key_size, "exponent": key.public_numbers().e}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"algorithm": "EC", "size": key.curve.key_size, "curve": key.curve.name}
    sizes: list[tuple[type, str, int]] = [
        (ed25519.Ed25519PublicKey, "Ed25519", 256),
        (ed448.Ed448PublicKey, "Ed448", 456),
        (x25519.X25519PublicKey, "X25519", 256),
        (x448.X448PublicKey, "X448", 448),
    ]
    for kind, name, size in sizes:
        if isinstance(key, kind):
            return {"algorithm": name, "size": size}
    if isinstance(key, dsa.DSAPublicKey):
        return {"algorithm": "DSA", "size": key.key_size}
    return {"algorithm": type(key).__name__, "size": 0}


def validity_status(cert: x509.Certificate, now: datetime) -> str:
    if now < cert.not_valid_before_utc:
        return "not_yet_valid"
    return "expired" if cert.not_valid_after_utc <= now else "valid"


def certificate_summary(cert: x509.Certificate, now: datetime) -> dict[str, Any]:
    """The short form: what a chain or a bundle listing shows for each certificate."""
    left = cert.not_valid_after_utc - now
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "common_name": inspect.common_name(cert.subject),
        "serial_number": inspect.serial_hex(cert.serial_number),
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "days_remaining": left.days,
        "status": validity_status(cert, now),
        "is_ca": inspect.is_ca(cert),
        "self_signed": cert.issuer == cert.subject and is_issued_by(cert, cert),
        "fingerprint_sha256": inspect.fingerprint(cert, hashes.SHA256()),
    }


def certificate_facts(cert: x509.Certificate, now: datetime) -> dict[str, Any]:
    """Everything the decoder shows."""
    key = key_facts(cert.public_key())
    return {
        **certificate_summary(cert, now),
        "version": cert.version.name,
        "san": inspect.sans(cert),
        "key_usage": inspect.key_usages(cert),
        "extended_key_usage": inspect.extended_key_usages(cert),
        "path_length": inspect.path_length(cert),
        "subject_key_identifier": inspect.key_identifier(cert),
        "authority_key_identifier": inspect.authority_key_identifier(cert),
        "public_key": key,
        "key_algorithm": key["algorithm"],
        "key_size": key["size"],
        "signature_algorithm": inspect.signature_algorithm(cert),
        "fingerprint_sha1": inspect.fingerprint(cert, hashes.SHA1()),  # noqa: S303 - display only
        "extensions": [_extension(ext) for ext in cert.extensions],
        "pem": cert_pem(cert),
    }


def csr_facts(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    key = key_facts(csr.public_key())
    try:
        valid, problem = csr_signature_valid(csr), None
    except PolicyViolation as exc:
        valid, problem = False, exc.message
    return {
        "subject": name_text(csr.subject),
        "common_name": inspect.common_name(csr.subject),
        "san": [format_san(name) for name in _requested_sans(csr)],
        "public_key": key,
        "key_algorithm": key["algorithm"],
        "key_size": key["size"],
        "signature_algorithm": inspect.oid_name(csr.signature_algorithm_oid),
        "signature_valid": valid,
        "signature_error": problem,
        "extensions": [_extension(ext) for ext in csr.extensions],
        "pem": csr_pem(csr),
    }


def _requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _extension(ext: x509.Extension[x509.ExtensionType]) -> dict[str, Any]:
    return {
        "oid": ext.oid.dotted_string,
        "name": inspect.oid_name(ext.oid),
        "critical": ext.critical,
    }
