"""The one issuance path.

Every certificate Tessera signs (roots, intermediates, leaves from any front end, renewals,
the server's own TLS certificate) is made by `Authority.issue`. It applies the template, the
key floor and the issuer's constraints, builds the extensions, lints the result, takes a
serial the ledger has reserved, signs, and hands the certificate and its audit event to the ledger
so the caller writes both in one transaction.
"""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from tessera.core import lint, name_constraints
from tessera.core.clock import Clock, utc_now, wire_time
from tessera.core.errors import IssuerNotValid, PolicyViolation
from tessera.core.issuer_chain import IssuerChain
from tessera.core.keys import PrivateKey, enforce_key_floor, signature_hash
from tessera.core.names import extended_key_usage, key_usage, name_text
from tessera.core.profile import (
    MAX_VALIDITY_DAYS,
    CertificateRequest,
    Template,
    apply_template,
    with_subject_emails,
)

SERIAL_BITS = 159  # 20 octets, positive: RFC 5280 section 4.1.2.2


@dataclass(frozen=True)
class PublicationURLs:
    """Where relying parties fetch the issuer's CRL, OCSP answers and certificate."""

    crl: str | None = None
    ocsp: str | None = None
    ca_issuers: str | None = None
    delta_crl: str | None = None  # Freshest CRL (RFC 5280 4.2.1.15) when deltas are published


@dataclass(frozen=True)
class Issuer:
    certificate: x509.Certificate | None  # None while a root is signing itself
    key: PrivateKey
    urls: PublicationURLs = PublicationURLs()
    # The issuer's own issuers held here, its parent first: their name constraints and
    # path lengths hold for what it signs as much as its own (core/issuer_chain.py).
    ancestors: tuple[x509.Certificate, ...] = ()
    # The next CA of a SCEP rollover (RFC 8894 4.7), which may sign its RA before its own
    # validity starts: that RA is handed out for use once the CA is valid.
    upcoming: bool = False

    @property
    def name(self) -> x509.Name | None:
        return self.certificate.subject if self.certificate else None

    @property
    def chain(self) -> IssuerChain:
        if self.certificate is None:
            return IssuerChain()
        return IssuerChain((self.certificate, *self.ancestors))


@dataclass(frozen=True)
class AuditEvent:
    action: str
    resource_type: str
    details: dict[str, object]


class IssuanceLedger(Protocol):
    """What the authority needs from storage; the service implements it per transaction."""

    def reserve_serial(self) -> int:
        """A serial claimed for this certificate alone (see `random_serial`), never reused."""

    def record(self, certificate: x509.Certificate, event: AuditEvent) -> None:
        """Persist the signed certificate and its audit event in the caller's transaction."""


def random_serial() -> int:
    return secrets.randbits(SERIAL_BITS) | (1 << (SERIAL_BITS - 1))


class Authority:
    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock

    def issue(
        self,
        request: CertificateRequest,
        issuer: Issuer,
        ledger: IssuanceLedger,
        template: Template | None = None,
    ) -> x509.Certificate:
        request = issuer.chain.with_default_path_length(apply_template(request, template))
        request = with_subject_emails(request)
        enforce_key_floor(request.public_key)
        _enforce_issuer_key_floor(issuer)
        not_before, not_after = self._validity(request, issuer)
        builder = self._builder(request, issuer, not_before, not_after)
        serial = ledger.reserve_serial()
        builder = builder.serial_number(serial)
        lint.check_before_signing(request, issuer.chain, not_before, not_after)
        certificate = builder.sign(issuer.key, signature_hash(issuer.key))  # type: ignore[arg-type]
        issuer_name = issuer.name or request.subject
        signed = _Signed(serial, request.subject, issuer_name, not_after.astimezone(UTC))
        ledger.record(certificate, _audit_event(request, signed, template))
        return certificate

    def _validity(self, request: CertificateRequest, issuer: Issuer) -> tuple[datetime, datetime]:
        days = request.validity_days or (3650 if request.is_ca else 365)
        if days <= 0 or days > MAX_VALIDITY_DAYS:
            raise PolicyViolation(f"validity_days must be between 1 and {MAX_VALIDITY_DAYS}")
        not_before = self._clock().replace(microsecond=0)
        not_after = not_before + timedelta(days=days)
        if request.not_after is not None:
            if request.not_after <= not_before:
                raise PolicyViolation("the requested end of validity has passed")
            not_after = min(not_after, request.not_after.replace(microsecond=0))
        if issuer.certificate is None:
            return not_before, not_after
        _check_issuer_valid(issuer, not_before)
        parent_end = issuer.certificate.not_valid_after_utc
        if not_after > parent_end:
            if request.is_ca:
                raise PolicyViolation(
                    f"a CA may not outlive its issuer (issuer valid until {parent_end.isoformat()})"
                )
            not_after = parent_end
        return not_before, not_after

    def _builder(
        self,
        request: CertificateRequest,
        issuer: Issuer,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.CertificateBuilder:
        public_key = request.public_key
        issuer_name = issuer.name or request.subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(issuer_name)
            .public_key(public_key)  # type: ignore[arg-type]
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for extension, critical in _extensions(request, issuer):
            builder = builder.add_extension(extension, critical=critical)
        return builder


def _extensions(
    request: CertificateRequest, issuer: Issuer
) -> list[tuple[x509.ExtensionType, bool]]:
    ski = x509.SubjectKeyIdentifier.from_public_key(request.public_key)  # type: ignore[arg-type]
    if issuer.certificate is None:
        aki = x509.AuthorityKeyIdentifier(ski.digest, None, None)
    else:
        aki = _authority_key_id(issuer.certificate)
    usage_names = list(request.key_usage or _default_key_usage(request))
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=request.is_ca, path_length=_path_length(request)), True),
        (key_usage(usage_names), True),
        (ski, False),
        (aki, False),
    ]
    if not request.is_ca:
        ekus = extended_key_usage(list(request.extended_key_usage or ("serverAuth", "clientAuth")))
        # RFC 3161 2.3: a time-stamping certificate's EKU "MUST be critical".
        extensions.append((ekus, ExtendedKeyUsageOID.TIME_STAMPING in ekus))
    if request.ocsp_nocheck:
        extensions.append((x509.OCSPNoCheck(), False))
    if request.sans:
        critical = len(request.subject) == 0
        extensions.append((x509.SubjectAlternativeName(list(request.sans)), critical))
    constraints = name_constraints.issuer_constraints(issuer.certificate)
    if request.is_ca and constraints is not None:
        # A sub-CA inherits them (critical, RFC 5280 4.2.1.10): it carries them wherever its
        # certificate goes, and states in itself what it may sign (the lint holds each
        # certificate to the constraints of every CA up the chain anyway).
        extensions.append((constraints, True))
    if issuer.certificate is not None and not request.ocsp_nocheck:
        # Not in a delegated OCSP responder's certificate: id-pkix-ocsp-nocheck tells clients
        # not to check its status (RFC 6960 4.2.2.2.1), so CRL and OCSP pointers would only
        # invite a check of the responder by itself, and the CA/B Forum profile of responder
        # certificates (BR 7.1.2.8) forbids the CRL distribution point.
        extensions.extend(_publication_extensions(issuer.urls))
    return extensions


def _check_issuer_valid(issuer: Issuer, now: datetime) -> None:
    """A CA signs only within its own validity: what a CA not valid yet or expired signs
    fails path validation, so it is refused, not shortened to fit (every path, one rule)."""
    assert issuer.certificate is not None
    start, end = issuer.certificate.not_valid_before_utc, issuer.certificate.not_valid_after_utc
    label = f"the issuing CA {name_text(issuer.certificate.subject)!r}"
    if start > now and not issuer.upcoming:
        raise IssuerNotValid(f"{label} is not valid until {wire_time(start)}")
    if end <= now:
        raise IssuerNotValid(f"{label} expired on {wire_time(end)}")


def _enforce_issuer_key_floor(issuer: Issuer) -> None:
    """The floor holds for the signing key too (an imported CA may bring a weak one): a
    signature by an RSA-1024 key is refused by relying parties at today's security levels."""
    try:
        enforce_key_floor(issuer.key.public_key())
    except PolicyViolation as exc:
        raise PolicyViolation(f"the issuing CA's key is too weak: {exc.message}") from exc


def _path_length(request: CertificateRequest) -> int | None:
    return request.path_length if request.is_ca else None


def _default_key_usage(request: CertificateRequest) -> tuple[str, ...]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    if request.is_ca:
        return ("digitalSignature", "keyCertSign", "cRLSign")
    if isinstance(request.public_key, rsa.RSAPublicKey):
        return ("digitalSignature", "keyEncipherment")
    return ("digitalSignature",)


def _authority_key_id(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ext = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ext.value)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_cert.public_key()  # type: ignore[arg-type]
        )


def _publication_extensions(urls: PublicationURLs) -> list[tuple[x509.ExtensionType, bool]]:
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if urls.crl:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        extensions.append((x509.CRLDistributionPoints([point]), False))
    if urls.delta_crl:
        delta = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(urls.delta_crl)], None, None, None
        )
        extensions.append((x509.FreshestCRL([delta]), False))
    access = []
    if urls.ocsp:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)
            )
        )
    if urls.ca_issuers:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(urls.ca_issuers),
            )
        )
    if access:
        extensions.append((x509.AuthorityInformationAccess(access), False))
    return extensions


@dataclass(frozen=True)
class _Signed:
    """What the certificate just signed says, as it was given to the builder: reading it
    back from the certificate would parse its names again."""

    serial: int
    subject: x509.Name
    issuer: x509.Name
    not_after: datetime


def _audit_event(
    request: CertificateRequest, signed: _Signed, template: Template | None
) -> AuditEvent:
    details: dict[str, object] = {
        "serial": format(signed.serial, "X"),
        "subject": name_text(signed.subject),
        "issuer": name_text(signed.issuer),
        "not_after": signed.not_after.isoformat(),
        "origin": request.origin,
    }
    if template is not None:
        details["template"] = template.name
    action = "ca.create" if request.is_ca else "certificate.issue"
    return AuditEvent(action, "ca" if request.is_ca else "certificate", details)
