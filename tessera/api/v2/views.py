"""Rows to wire dictionaries, shaped like the seed's response examples."""

from datetime import datetime
from typing import Any

from tessera.api.v2.envelope import iso
from tessera.core import inspect
from tessera.core.formats import load_certificate
from tessera.storage import models


def serial(hex_serial: str) -> str:
    """As the seed writes it: `0x2A`. A negative serial (RFC 5280 forbids them; imported
    certificates carry some) is `-0x2A`, which reads back as a signed hexadecimal number
    (Python's `int(s, 16)`, JavaScript's `parseInt`), where `0x-2A` read as nothing."""
    sign, digits = ("-", hex_serial[1:]) if hex_serial.startswith("-") else ("", hex_serial)
    return f"{sign}0x{digits}"


# The seed (UCM) spells one reason differently from RFC 5280, which the core stores and CRLs and
# OCSP carry: it lists unspecified, keyCompromise, caCompromise, affiliationChanged, superseded
# and cessationOfOperation. The reasons it does not list (aACompromise among them) keep the
# RFC 5280 name: the seed has no spelling of its own for them.
SEED_REASONS = {"cACompromise": "caCompromise"}


def revocation_reason(reason: str | None) -> str | None:
    return SEED_REASONS.get(reason, reason) if reason else reason


def ca_view(ca: models.CertificateAuthority, certificates_count: int) -> dict[str, Any]:
    return {
        "id": ca.id,
        "refid": ca.refid,
        "name": ca.name,
        "descr": ca.name,
        "common_name": ca.common_name,
        "ca_type": ca.ca_type,
        "is_root": ca.ca_type == "root",
        "parent_id": ca.parent_id,
        "subject": ca.subject,
        "issuer": ca.issuer,
        "serial_number": serial(ca.serial_number),
        "valid_from": iso(ca.not_before),
        "valid_until": iso(ca.not_after),
        "key_algorithm": ca.key_algorithm,
        "key_size": ca.key_size,
        "signature_algorithm": ca.signature_algorithm,
        "is_active": ca.is_active,
        "has_private_key": ca.encrypted_private_key is not None,
        "imported": ca.imported,
        "internal": ca.internal,
        "certificates_count": certificates_count,
        "created_at": iso(ca.created_at),
        # not in the seed: set when its issuer here revoked it (POST /cas/{id}/revoke)
        "revoked_at": iso(ca.revoked_at) if ca.revoked_at else None,
        "revocation_reason": ca.revocation_reason,
    }


def ca_details(ca: models.CertificateAuthority, count: int, now: datetime) -> dict[str, Any]:
    parsed = load_certificate(ca.certificate_pem.encode())
    return {
        **ca_view(ca, count),
        **inspect.details(parsed, now),
        "serial_number": serial(ca.serial_number),
        "path_length": inspect.path_length(parsed),
        "pem": ca.certificate_pem,
    }


def certificate_status(cert: models.Certificate, now: datetime) -> str:
    if cert.status == "revoked":
        return "revoked"
    return "expired" if cert.not_after <= now else "active"


def certificate_view(cert: models.Certificate, now: datetime) -> dict[str, Any]:
    return {
        "id": cert.id,
        "refid": cert.refid,
        "serial_number": serial(cert.serial_number),
        "common_name": cert.common_name,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "ca_id": cert.ca_id,
        "template_id": cert.template_id,
        "status": certificate_status(cert, now),
        "valid_from": iso(cert.not_before),
        "valid_until": iso(cert.not_after),
        "san": cert.san_text.split() if cert.san_text else [],
        "key_algorithm": cert.key_algorithm,
        "key_size": cert.key_size,
        "private_key_available": cert.encrypted_private_key is not None,
        "revoked_at": iso(cert.revoked_at),
        "revocation_reason": revocation_reason(cert.revocation_reason),
        "invalidity_date": iso(cert.invalidity_date),
        "source": cert.origin,
        "created_by": cert.created_by,
        "created_at": iso(cert.created_at),
    }


def certificate_details(cert: models.Certificate, now: datetime) -> dict[str, Any]:
    parsed = load_certificate(cert.certificate_pem.encode())
    return {
        **certificate_view(cert, now),
        **inspect.details(parsed, now),
        "serial_number": serial(cert.serial_number),
        "revocation_comment": cert.revocation_comment,
        "pem": cert.certificate_pem,
    }


def user_view(user: models.User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "full_name": user.full_name,
        "role": user.role,
        "active": user.active,
        "created_at": iso(user.created_at),
        "last_login": iso(user.last_login),
    }


def api_key_view(key: models.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "permissions": key.permissions,
        "enabled": key.enabled,
        "expires_at": iso(key.expires_at),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }


def csr_view(row: models.CertificateRequestRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "refid": row.refid,
        "name": row.name,
        "descr": row.name,
        "common_name": row.common_name,
        "cn": row.common_name,
        "subject": row.subject,
        "san": row.san_text.split() if row.san_text else [],
        "key_algorithm": row.key_algorithm,
        "key_size": row.key_size,
        "status": row.status,
        "has_private_key": row.encrypted_private_key is not None,
        "certificate_id": row.certificate_id,
        "signed_at": iso(row.signed_at),
        "created_by": row.created_by,
        "requester": row.created_by,
        "created_at": iso(row.created_at),
    }


def csr_details(row: models.CertificateRequestRow, decoded: dict[str, Any]) -> dict[str, Any]:
    """The list view, the request decoded (see core.csr_details.describe) and its PEM."""
    return {
        **csr_view(row),
        **decoded,
        "pem": row.csr_pem,
        "csr_pem": row.csr_pem,
    }
