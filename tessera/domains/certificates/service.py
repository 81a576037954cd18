"""Certificates: issue (generated key or CSR), browse, renew, revoke, delete, export."""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509

from tessera.core import inspect
from tessera.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PolicyViolation,
)
from tessera.core.formats import load_certificate, load_csr
from tessera.core.keys import (
    PrivateKey,
    describe_public_key,
    generate_private_key,
    parse_key_spec,
)
from tessera.core.names import SubjectFields, parse_san
from tessera.core.profile import CertificateRequest
from tessera.core.revocation import normalize_reason
from tessera.domains import audit
from tessera.domains.exports import Exported, export, safe_name, wants_key
from tessera.domains.issuance import Issuance
from tessera.storage import models
from tessera.storage.repositories.certificates import CertificateFilter


@dataclass(frozen=True)
class NewCertificate:
    ca_id: int
    subject: SubjectFields | None
    san: list[str]
    template_id: int | None = None
    validity_days: int | None = None
    key_algorithm: str | None = None
    key_size: int | None = None
    key_usage: list[str] | None = None
    extended_key_usage: list[str] | None = None
    csr_pem: str | None = None
    csr_key: PrivateKey | None = None  # a key held for the CSR, stored with the certificate
    origin: str | None = None


class CertificateService:
    def __init__(self, issuance: Issuance, now: datetime) -> None:
        self._issuance = issuance
        self._repos = issuance.repos
        self._actor = issuance.actor
        self._now = now

    def get(self, cert_id: int) -> models.Certificate:
        cert = self._repos.certificates.get(cert_id)
        if cert is None:
            raise NotFound(f"certificate {cert_id} not found")
        return cert

    def search(
        self, filters: CertificateFilter, page: int, per_page: int
    ) -> tuple[Sequence[models.Certificate], int]:
        if filters.status and filters.status not in ("active", "expired", "revoked", "expiring"):
            raise InvalidInput("status must be one of active, expired, revoked, expiring")
        return self._repos.certificates.page(filters, self._now, page, per_page)

    def issue(self, spec: NewCertificate) -> models.Certificate:
        ca = self._issuing_ca(spec.ca_id)
        template = self._template(spec.template_id)
        key: PrivateKey | None = None
        if spec.csr_pem:
            csr = load_csr(spec.csr_pem.encode())
            public_key, subject = csr.public_key(), csr.subject
            sans = _csr_sans(csr)
            if spec.csr_key is not None:
                if spec.csr_key.public_key() != public_key:
                    raise PolicyViolation("the private key does not belong to the CSR")
                key = spec.csr_key
        else:
            algorithm = spec.key_algorithm or (template.key_algorithm if template else None)
            size = spec.key_size or (template.key_size if template else None)
            key = generate_private_key(parse_key_spec(algorithm, size))
            public_key, subject, sans = key.public_key(), None, []
        if spec.subject is not None:
            subject = spec.subject.to_name()
        if subject is None:
            raise InvalidInput("common_name is required")
        sans = [parse_san(s) for s in spec.san] or sans or _cn_as_san(spec.subject)
        request = CertificateRequest(
            subject=subject,
            public_key=public_key,
            sans=tuple(dict.fromkeys(sans)),
            validity_days=spec.validity_days,
            key_usage=tuple(spec.key_usage) if spec.key_usage else None,
            extended_key_usage=tuple(spec.extended_key_usage) if spec.extended_key_usage else None,
            requester=self._actor.username,
            origin=spec.origin or ("csr" if spec.csr_pem else "api"),
        )
        return self._issuance.issue_certificate(request, ca, template, key)

    def renew(self, cert_id: int, validity_days: int | None) -> models.Certificate:
        """Same subject, names and usages; a fresh key when the server holds the old one."""
        old = self.get(cert_id)
        if old.ca_id is None:
            raise Conflict("only certificates issued here can be renewed")
        ca = self._issuing_ca(old.ca_id)
        parsed = load_certificate(old.certificate_pem.encode())
        key: PrivateKey | None = None
        public_key = parsed.public_key()
        if old.encrypted_private_key is not None:
            previous = self._issuance.keys.decrypt(old.encrypted_private_key)
            key = generate_private_key(parse_key_spec(*_spec_of(previous)))
            public_key = key.public_key()
        elif old.status == "revoked" and old.revocation_reason == "keyCompromise":
            raise PolicyViolation("the key was revoked as compromised; it is not certified again")
        days = validity_days or max((old.not_after - old.not_before).days, 1)
        request = replace(
            request_from_certificate(parsed, public_key),
            validity_days=days,
            requester=self._actor.username,
            origin="renewal",
        )
        template = self._template(old.template_id) if old.template_id else None
        renewed = self._issuance.issue_certificate(request, ca, template, key)
        audit.record(
            self._repos.audit,
            self._actor,
            "certificate.renew",
            "certificate",
            old.id,
            {"renewed_by": renewed.id},
        )
        return renewed

    def revoke(self, cert_id: int, reason: str | None, comment: str | None) -> models.Certificate:
        cert = self.get(cert_id)
        canonical = normalize_reason(reason)
        if canonical == "removeFromCRL":
            return self._release_hold(cert, comment)
        if cert.status == "revoked":
            raise Conflict(f"certificate {cert_id} is already revoked")
        cert.status, cert.revoked_at = "revoked", self._now
        cert.revocation_reason, cert.revocation_comment = canonical, comment
        details = {"serial": cert.serial_number, "reason": canonical}
        audit.record(
            self._repos.audit, self._actor, "certificate.revoke", "certificate", cert.id, details
        )
        return cert

    def _release_hold(self, cert: models.Certificate, comment: str | None) -> models.Certificate:
        """removeFromCRL is no revocation reason (RFC 5280 5.3.1): it lifts a certificateHold."""
        if cert.status != "revoked" or cert.revocation_reason != "certificateHold":
            raise Conflict(
                f"certificate {cert.id} is not on hold; removeFromCRL only releases a hold"
            )
        cert.status, cert.revoked_at = "active", None
        cert.revocation_reason, cert.revocation_comment = None, None
        details = {"serial": cert.serial_number, "comment": comment}
        audit.record(
            self._repos.audit, self._actor, "certificate.unhold", "certificate", cert.id, details
        )
        return cert

    def delete(self, cert_id: int) -> None:
        cert = self.get(cert_id)
        self._repos.certificates.delete(cert)
        audit.record(
            self._repos.audit,
            self._actor,
            "certificate.delete",
            "certificate",
            cert.id,
            {"serial": cert.serial_number, "subject": cert.subject},
        )

    def stats(self) -> dict[str, int]:
        return self._repos.certificates.stats(self._now)

    def issuer_chain(self, cert: models.Certificate) -> list[x509.Certificate]:
        """The issuing CA and its parents, nearest first."""
        if cert.ca_id is None:
            return []
        ca = self._repos.cas.get(cert.ca_id)
        chain = []
        seen: set[int] = set()
        while ca is not None and ca.id not in seen:
            chain.append(load_certificate(ca.certificate_pem.encode()))
            seen.add(ca.id)
            ca = self._repos.cas.get(ca.parent_id) if ca.parent_id else None
        return chain

    def export(
        self, cert_id: int, fmt: str, include_key: bool, password: str | None, key_allowed: bool
    ) -> Exported:
        """A key goes out only when asked for, stored here, and allowed; each time audited."""
        cert = self.get(cert_id)
        key = None
        if wants_key(fmt, include_key) and (include_key or cert.encrypted_private_key):
            if not key_allowed:
                raise PermissionDenied("exporting a private key needs 'write:certificates'")
            key = self.private_key(cert, fmt)
        name = safe_name(cert.common_name, f"certificate-{cert.id}")
        parsed = load_certificate(cert.certificate_pem.encode())
        return export(fmt, name, parsed, self.issuer_chain(cert), key, password)

    def private_key(self, cert: models.Certificate, purpose: str) -> PrivateKey:
        """Decrypt a stored key for an export; every such export is audited."""
        if cert.encrypted_private_key is None:
            raise NotFound(f"no private key is stored for certificate {cert.id}")
        audit.record(
            self._repos.audit,
            self._actor,
            "certificate.export_key",
            "certificate",
            cert.id,
            {"format": purpose},
        )
        return self._issuance.keys.decrypt(cert.encrypted_private_key)

    def _issuing_ca(self, ca_id: int) -> models.CertificateAuthority:
        ca = self._repos.cas.get(ca_id)
        if ca is None:
            raise NotFound(f"CA {ca_id} not found")
        return ca

    def _template(self, template_id: int | None) -> models.Template | None:
        if template_id is None:
            return None
        template = self._repos.templates.get(template_id)
        if template is None:
            raise NotFound(f"template {template_id} not found")
        return template


def request_from_certificate(cert: x509.Certificate, public_key: object) -> CertificateRequest:
    return CertificateRequest(
        subject=cert.subject,
        public_key=public_key,
        sans=tuple(parse_san(s) for s in inspect.sans(cert) if not s.startswith("other:")),
        key_usage=tuple(inspect.key_usages(cert)) or None,
        extended_key_usage=tuple(inspect.extended_key_usages(cert)) or None,
    )


def _spec_of(key: PrivateKey) -> tuple[str, int]:
    spec = describe_public_key(key.public_key())
    return spec.algorithm, spec.size


def _csr_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def _cn_as_san(subject: SubjectFields | None) -> list[x509.GeneralName]:
    """A leaf named like a host gets that name as a SAN, since clients ignore the CN."""
    if subject is None or not subject.common_name or " " in subject.common_name:
        return []
    try:
        return [parse_san(subject.common_name)]
    except InvalidInput:
        return []
