"""Certificates: issue (generated key or CSR), import, browse, renew, revoke, delete, export,
and the same in bulk (each item in its own savepoint; renewals signed first, then written)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tessera.core import inspect
from tessera.core.clock import as_utc
from tessera.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PolicyViolation,
)
from tessera.core.formats import (
    decode_upload,
    is_issued_by,
    key_pem,
    load_certificate,
    load_csr,
    public_key_among,
    public_key_der,
    same_public_key,
)
from tessera.core.keys import (
    PrivateKey,
    describe_public_key,
    generate_private_key,
)
from tessera.core.names import ISSUED_SAN_TYPES, SubjectFields, format_san, parse_san
from tessera.core.profile import (
    CertificateRequest,
    key_to_generate,
    renewal_key_spec,
    under_current_template,
)
from tessera.core.revocation import normalize_reason
from tessera.domains import audit, bulk
from tessera.domains.bulk import BulkResult
from tessera.domains.cas.service import CAService, check_key_matches, read_bundle
from tessera.domains.exports import (
    BULK_FORMATS,
    Exported,
    bundle,
    check_key_options,
    export,
    safe_name,
    wants_key,
    zipped,
)
from tessera.domains.identity.permissions import grants
from tessera.domains.issuance import (
    Issuance,
    certificate_row,
    core_template,
    deferred,
    find_template,
    issuer_chain,
    write_issued,
)
from tessera.storage import models
from tessera.storage.repositories.certificates import CertificateFilter

# Widths of the columns an imported certificate fills (serial, key identifier, algorithm).
MAX_SERIAL_HEX, MAX_KEY_ID_HEX, MAX_ALGORITHM_NAME = 64, 128, 64


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


@dataclass(frozen=True)
class ImportOptions:
    name: str | None = None
    ca_id: int | None = None  # the issuer to link to (checked); found by AKI or name if None
    import_key: bool = True


@dataclass(frozen=True)
class Imported:
    """What an import stored: a certificate, or a CA when the certificate said CA:TRUE."""

    certificate: models.Certificate | None = None
    ca: models.CertificateAuthority | None = None
    # the CA's certificates: those imported before it were filed under it on its import
    ca_certificates: int = 0


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
        # An empty status (a cleared filter box) is no filter, as on every other listing.
        filters = replace(filters, status=filters.status or None)
        if filters.status and filters.status not in ("active", "expired", "revoked", "expiring"):
            raise InvalidInput("status must be one of active, expired, revoked, expiring")
        return self._repos.certificates.page(filters, self._now, page, per_page)

    def issue(self, spec: NewCertificate) -> models.Certificate:
        ca = self._issuing_ca(spec.ca_id)
        template = find_template(self._repos, spec.template_id)
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
            wanted = key_to_generate(core_template(template), spec.key_algorithm, spec.key_size)
            key = generate_private_key(wanted)
            public_key, subject, sans = key.public_key(), None, []
        if spec.subject is not None:
            subject = spec.subject.to_name()
        if subject is None:
            raise InvalidInput("common_name is required")
        sans = [parse_san(s) for s in spec.san] or sans  # none: the authority's default
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
        fresh = not spec.csr_pem  # generated here, not a key from outside
        return self._issuance.issue_certificate(request, ca, template, key, fresh_key=fresh)

    def renew(
        self, cert_id: int, validity_days: int | None, ca_id: int | None = None
    ) -> models.Certificate:
        """Same subject, names and usages; a fresh key when the server holds the old one.
        By the CA that issued it, or by `ca_id` when given."""
        renewed = self._renewal(cert_id, validity_days, ca_id)
        self._repos.audit.add(**self._renew_event(cert_id, renewed))
        return renewed

    def _renewal(
        self, cert_id: int, validity_days: int | None, ca_id: int | None
    ) -> models.Certificate:
        old = self.get(cert_id)
        issuer_id = ca_id if ca_id is not None else old.ca_id
        if issuer_id is None:
            raise Conflict("only certificates issued here can be renewed (or give a ca_id)")
        ca = self._issuing_ca(issuer_id)
        template = find_template(self._repos, old.template_id) if old.template_id else None
        policy = core_template(template)
        parsed = load_certificate(old.certificate_pem.encode())
        key: PrivateKey | None = None
        public_key = parsed.public_key()
        new_key_type = False
        if old.encrypted_private_key is not None:
            previous = self._issuance.keys.decrypt(old.encrypted_private_key)
            old_spec = describe_public_key(previous.public_key())
            new_spec = renewal_key_spec(policy, old_spec)
            key = generate_private_key(new_spec)
            public_key, new_key_type = key.public_key(), new_spec.algorithm != old_spec.algorithm
        days = validity_days or max((old.not_after - old.not_before).days, 1)
        request = replace(
            request_from_certificate(parsed, public_key),
            validity_days=days,
            requester=self._actor.username,
            origin="renewal",
            names_as_given=True,
        )
        if new_key_type:  # the old usages were the old type's (keyEncipherment is RSA's)
            request = replace(request, key_usage=None)
        request = under_current_template(request, policy, days_given=validity_days is not None)
        return self._issuance.issue_certificate(
            request, ca, template, key, fresh_key=key is not None
        )

    def _renew_event(self, old_id: int, renewed: models.Certificate) -> dict[str, Any]:
        details = {"renewed_by": renewed.id}
        return audit.event(self._actor, "certificate.renew", "certificate", old_id, details)

    def revoke(
        self,
        cert_id: int,
        reason: str | None,
        comment: str | None,
        invalidity_date: datetime | None = None,
    ) -> models.Certificate:
        """`invalidity_date` (RFC 5280 5.3.2): when the certificate became invalid, e.g. when
        the key is known or suspected to have been compromised; no later than now."""
        cert = self.get(cert_id)
        canonical = normalize_reason(reason)
        invalid_since = self._invalidity_date(invalidity_date)
        if canonical == "removeFromCRL":
            if invalid_since is not None:
                raise InvalidInput("invalidity_date does not apply to removeFromCRL")
            return self._release_hold(cert, comment)
        # A hold is the one revocation that is not final: it may become a permanent one
        # directly, so the certificate never reads as good in between (RFC 5280 5.3.1).
        held = cert.status == "revoked" and cert.revocation_reason == "certificateHold"
        if cert.status == "revoked" and not (held and canonical != "certificateHold"):
            raise Conflict(f"certificate {cert_id} is already revoked")
        self._change_status(
            cert,
            status="revoked",
            # It has been unusable since the hold began: that stays its revocation date.
            revoked_at=cert.revoked_at if held else self._now,
            revocation_reason=canonical,
            revocation_comment=comment,
            invalidity_date=invalid_since,
        )
        if canonical == "keyCompromise":
            spki = inspect.public_key_sha256(load_certificate(cert.certificate_pem.encode()))
            self._repos.certificates.report_compromised_key(spki, cert.id)
        details = {
            "serial": cert.serial_number,
            "reason": canonical,
            "invalidity_date": invalid_since.isoformat() if invalid_since else None,
        }
        if held:
            details["previous_reason"] = "certificateHold"
        audit.record(
            self._repos.audit, self._actor, "certificate.revoke", "certificate", cert.id, details
        )
        return cert

    def _invalidity_date(self, given: datetime | None) -> datetime | None:
        """In UTC (a time without a zone is taken as UTC), to the second as CRLs carry it."""
        if given is None:
            return None
        moment = as_utc(given, "invalidity_date").replace(microsecond=0)
        if moment > self._now:
            raise InvalidInput("invalidity_date must not be in the future")
        return moment

    def _release_hold(self, cert: models.Certificate, comment: str | None) -> models.Certificate:
        """removeFromCRL is no revocation reason (RFC 5280 5.3.1): it lifts a certificateHold."""
        if cert.status != "revoked" or cert.revocation_reason != "certificateHold":
            raise Conflict(
                f"certificate {cert.id} is not on hold; removeFromCRL only releases a hold"
            )
        self._change_status(
            cert,
            status="active",
            revoked_at=None,
            revocation_reason=None,
            revocation_comment=None,
            invalidity_date=None,
        )
        details = {"serial": cert.serial_number, "comment": comment}
        audit.record(
            self._repos.audit, self._actor, "certificate.unhold", "certificate", cert.id, details
        )
        return cert

    def _change_status(self, cert: models.Certificate, **values: object) -> None:
        if not self._repos.certificates.change_status(cert, **values):
            raise Conflict(f"certificate {cert.id} was revoked or released meanwhile; reload it")
        self._repos.status_changes.record(cert)

    def delete(self, cert_id: int) -> None:
        cert = self.get(cert_id)
        # The row goes first, and what is retained is the state it had as it went: read
        # before, a revocation committed meanwhile would be deleted with no CRL entry kept,
        # and two deletions at once would both retain one.
        if not self._repos.certificates.delete(cert):
            raise NotFound(f"certificate {cert_id} not found")
        # A revoked certificate stays revoked until it expires, inventory row or not: its
        # CRL entry is kept (docs/crl.md).
        self._repos.crl.retain(cert, self._now)
        # Logged like a status change: every process's OCSP responder holds a pre-signed
        # answer for the serial and re-reads it only when the log names it (else it says
        # `good` until its refresh); it now reads `unknown`, or `revoked` if retained.
        self._repos.status_changes.record(cert)
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
        ca = self._repos.cas.get(cert.ca_id) if cert.ca_id is not None else None
        return [] if ca is None else list(issuer_chain(self._repos, ca).certificates)

    def export(
        self,
        cert_id: int,
        fmt: str,
        include_key: bool,
        password: str | None,
        key_allowed: bool,
        delivered: bool = True,
    ) -> Exported:
        """A key goes out only when asked for, stored here, and allowed; each time audited.
        Not `delivered` (the file is made for its size and name only, never sent: an HTTP
        HEAD), no key leaves and none is audited, but the same permission is needed."""
        cert = self.get(cert_id)
        check_key_options(fmt, include_key, password)
        key = None
        if wants_key(fmt, include_key) and (include_key or cert.encrypted_private_key):
            if not key_allowed:
                raise PermissionDenied("exporting a private key needs 'write:certificates'")
            key = self.private_key(cert, fmt, audited=delivered)
        name = safe_name(cert.common_name, f"certificate-{cert.id}")
        parsed = load_certificate(cert.certificate_pem.encode())
        return export(fmt, name, parsed, self.issuer_chain(cert), key, password)

    def private_key(
        self, cert: models.Certificate, purpose: str, audited: bool = True
    ) -> PrivateKey:
        """Decrypt a stored key for an export; every such export is audited (`audited` is
        False only for an export that is never sent)."""
        if cert.encrypted_private_key is None:
            raise NotFound(f"no private key is stored for certificate {cert.id}")
        if audited:
            details = {"format": purpose}
            audit.record(
                self._repos.audit,
                self._actor,
                "certificate.export_key",
                "certificate",
                cert.id,
                details,
            )
        return self._issuance.keys.decrypt(cert.encrypted_private_key)

    def private_key_pem(self, cert_id: int, passphrase: str | None) -> str:
        """The stored key as PKCS#8 PEM, under the passphrase when one is given; audited."""
        cert = self.get(cert_id)
        key = self.private_key(cert, "pem-encrypted" if passphrase else "pem")
        return key_pem(key, passphrase or None)

    def export_all(self, fmt: str = "pem") -> Exported:
        """Every certificate of the organization in one file: a PEM bundle, or PKCS#7."""
        rows = self._repos.certificates.all()
        return bundle(fmt, [r.certificate_pem for r in rows], "certificates", "certificates")

    def export_many(self, ids: Sequence[int], fmt: str) -> Exported:
        """The chosen certificates (without keys) as a ZIP, one file each."""
        if fmt not in BULK_FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(BULK_FORMATS)}")
        rows = self._repos.certificates.many(ids)
        if not rows:
            raise NotFound("none of the certificates was found")
        files = []
        for row in rows:
            name = safe_name(row.common_name, f"certificate-{row.id}")
            parsed = load_certificate(row.certificate_pem.encode())
            exported = export(fmt, name, parsed, self.issuer_chain(row))
            files.append((f"{row.id}-{exported.filename}", exported.content))
        return zipped(files, "certificates.zip")

    # --- bulk: each id in its own savepoint, so one failure leaves the others done ----------

    def bulk_revoke(self, ids: Sequence[int], reason: str | None) -> BulkResult:
        normalize_reason(reason)  # an unknown reason refuses the whole call
        return self._each(ids, lambda cert_id: self.revoke(cert_id, reason, None, None))

    def bulk_delete(self, ids: Sequence[int]) -> BulkResult:
        return self._each(ids, self.delete)

    def bulk_renew(self, ids: Sequence[int], ca_id: int | None) -> BulkResult:
        """An unknown CA, or one that cannot sign, refuses the whole call. Every renewal is
        signed before anything is written; then all their rows go in together, as a batch of
        issuances does. A server-held key is made afresh for each renewal (up to a second for
        RSA-4096), and a transaction's first write holds up the other writers until it
        commits: on SQLite every writer, on PostgreSQL the organization's audited writes."""
        if ca_id is not None:
            self._issuance.issuer(self._issuing_ca(ca_id))
        with deferred(self._repos.session.info) as issued:
            result, renewals = bulk.each_unwritten(
                ids, lambda cert_id: self._renewal(cert_id, None, ca_id)
            )
        write_issued(issued)
        self._repos.audit.add_many([self._renew_event(old, new) for old, new in renewals])
        result.renewed = [{"id": old, "new_id": new.id} for old, new in renewals]
        return result

    def _each(self, ids: Sequence[int], action: Callable[[int], object]) -> BulkResult:
        return bulk.each(self._repos.session, ids, action)

    # --- import ---------------------------------------------------------------------------

    def import_certificate(
        self,
        data: bytes,
        password: str | None,
        options: ImportOptions,
        key_data: bytes | None = None,
    ) -> Imported:
        """PEM (with text around it), DER, PKCS#12 or PKCS#7; a CA certificate (CA:TRUE) is
        stored as a CA. Of several certificates (a chain), the one the key belongs to, else the
        end entity, is imported; the others are not (smart import takes them all). A key given
        apart (`key_data`) must be readable, or nothing is imported."""
        bundle = read_bundle(decode_upload(data), password, key_data, options.import_key)
        key = bundle.private_key if options.import_key else None
        cert = _primary([bundle.certificate, *bundle.extra], bundle.private_key)
        if inspect.is_ca(cert):
            ca = self.store_imported_ca(cert, key, options.name)
            return Imported(
                ca=ca, ca_certificates=CAService(self._issuance).certificate_count(ca.id)
            )
        return Imported(certificate=self.store_imported(cert, key, options.ca_id, options.name))

    def store_imported_ca(
        self, cert: x509.Certificate, key: PrivateKey | None, name: str | None
    ) -> models.CertificateAuthority:
        self.require("write:cas")
        _check_storable(cert)
        return CAService(self._issuance).store_imported(cert, key, name)

    def same_ca(self, cert: x509.Certificate) -> models.CertificateAuthority | None:
        return CAService(self._issuance).same_certificate(cert)

    def attach_ca_key(self, row: models.CertificateAuthority, key: PrivateKey) -> None:
        self.require("write:cas")
        CAService(self._issuance).attach_key(row, key)

    def store_imported(
        self,
        cert: x509.Certificate,
        key: PrivateKey | None,
        ca_id: int | None,
        name: str | None = None,
    ) -> models.Certificate:
        """A certificate made elsewhere, with its key (encrypted) when given. Refused when the
        key does not match (422) or the same certificate is already here (409)."""
        check_key_matches(cert, key)
        _check_storable(cert)
        # Two imports of one certificate at once would both find none and both store it:
        # the check runs under the organization's row lock (no unique index: see the method).
        self._repos.organizations.hold(self._repos.org_id)
        existing = self.by_fingerprint(cert)
        if existing is not None:
            raise Conflict(f"this certificate is already present (certificate {existing.id})")
        ca = self._linked_ca(cert, ca_id)
        row = certificate_row(cert, self._issuance.keys, key)
        row.ca_id = ca.id if ca else None
        row.origin, row.created_by = models.ORIGIN_IMPORT, self._actor.username
        self._repos.certificates.add(row)
        details = {
            "subject": row.subject,
            "fingerprint": row.fingerprint_sha256,
            "ca_id": row.ca_id,
            "with_key": key is not None,
            "name": name,
        }
        audit.record(
            self._repos.audit, self._actor, "certificate.import", "certificate", row.id, details
        )
        return row

    def attach_key(self, row: models.Certificate, key: PrivateKey) -> None:
        """Keep the key of a certificate that is here without one (encrypted, audited)."""
        if row.encrypted_private_key is not None:
            raise Conflict(f"certificate {row.id} already has its private key")
        check_key_matches(load_certificate(row.certificate_pem.encode()), key)
        row.encrypted_private_key = self._issuance.keys.encrypt(key)
        audit.record(
            self._repos.audit,
            self._actor,
            "certificate.import_key",
            "certificate",
            row.id,
            {"serial": row.serial_number},
        )

    def with_public_keys(self, keys: Sequence[PrivateKey]) -> dict[bytes, list[tuple[int, bool]]]:
        """For each key's SubjectPublicKeyInfo (DER), the organization's certificates whose
        public key it is, newest first, as (id, whether their key is stored already). No
        column holds a certificate's public key: every row of the keys' types is read, once
        for all the keys."""
        by_type: dict[tuple[str, int], set[bytes]] = {}
        for key in keys:
            try:
                spec = describe_public_key(key.public_key())
            except PolicyViolation:  # no certificate of a type Tessera does not know is stored
                continue
            by_type.setdefault((spec.algorithm, spec.size), set()).add(
                public_key_der(key.public_key())
            )
        found: dict[bytes, list[tuple[int, bool]]] = {}
        for (algorithm, size), wanted in by_type.items():
            for cert_id, pem, has_key in self._repos.certificates.with_key_type(algorithm, size):
                spki = public_key_among(pem, wanted)
                if spki is not None:
                    found.setdefault(spki, []).append((cert_id, has_key))
        return found

    def by_fingerprint(self, cert: x509.Certificate) -> models.Certificate | None:
        return self._repos.certificates.by_fingerprint(cert.fingerprint(hashes.SHA256()).hex())

    def require(self, permission: str) -> None:
        if not grants(self._actor.permissions, permission):
            raise PermissionDenied(f"permission {permission!r} required")

    def _linked_ca(
        self, cert: x509.Certificate, ca_id: int | None
    ) -> models.CertificateAuthority | None:
        """The given CA, which must have signed the certificate; else the CA found by key
        identifier or issuer name, if its signature checks out."""
        if ca_id is not None:
            ca = self._issuing_ca(ca_id)
            if not is_issued_by(cert, load_certificate(ca.certificate_pem.encode())):
                raise PolicyViolation(f"the certificate was not issued by CA {ca_id}")
            return ca
        return CAService(self._issuance).find_issuer(cert)

    def _issuing_ca(self, ca_id: int) -> models.CertificateAuthority:
        ca = self._repos.cas.get(ca_id)
        if ca is None:
            raise NotFound(f"CA {ca_id} not found")
        return ca


def _check_storable(cert: x509.Certificate) -> None:
    """Refuse what the inventory's columns cannot hold (a crafted certificate can carry a
    serial beyond RFC 5280's 20 octets, or an oversized key identifier)."""
    if len(inspect.serial_hex(cert.serial_number)) > MAX_SERIAL_HEX:
        raise InvalidInput("the serial number is longer than 32 octets")
    if len(inspect.key_identifier(cert) or "") > MAX_KEY_ID_HEX:
        raise InvalidInput("the subject key identifier is longer than 64 octets")
    if len(inspect.signature_algorithm(cert)) > MAX_ALGORITHM_NAME:
        raise InvalidInput("the signature algorithm identifier is too long")


def _primary(certs: list[x509.Certificate], key: PrivateKey | None) -> x509.Certificate:
    """The certificate a file is about: the key's, else the first end entity, else the CA
    lowest in the chain. (PKCS#7 sorts its certificates, so their order says nothing.)"""
    if key is not None:
        public = key.public_key()
        return next((c for c in certs if same_public_key(c.public_key(), public)), certs[0])
    leaves = [c for c in certs if not inspect.is_ca(c)]
    if leaves:
        return leaves[0]
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    return next((c for c in certs if c.subject not in issuers), certs[0])


def request_from_certificate(cert: x509.Certificate, public_key: object) -> CertificateRequest:
    return CertificateRequest(
        subject=cert.subject,
        public_key=public_key,
        sans=tuple(
            parse_san(format_san(name))
            for name in inspect.general_names(cert)
            if isinstance(name, ISSUED_SAN_TYPES)
        ),
        key_usage=tuple(inspect.key_usages(cert)) or None,
        extended_key_usage=tuple(inspect.extended_key_usages(cert)) or None,
    )


def _csr_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)
