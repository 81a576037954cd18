"""Certificate authorities: create (root and intermediate), browse, update, delete, import."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from tessera.core import inspect
from tessera.core.clock import utc_now
from tessera.core.errors import Conflict, InvalidInput, NotFound, PolicyViolation
from tessera.core.formats import (
    cert_der,
    is_issued_by,
    key_is_encrypted,
    load_certificate,
    load_certificates,
    load_pkcs12,
    load_private_key,
    looks_like_pkcs12,
)
from tessera.core.keys import PrivateKey, generate_private_key
from tessera.core.names import SubjectFields, name_text
from tessera.core.profile import CertificateRequest, key_to_generate
from tessera.core.revocation import normalize_reason
from tessera.domains import audit, bulk
from tessera.domains.exports import Exported, bundle, export, safe_name, zipped
from tessera.domains.issuance import Issuance, ca_chain, ca_row, core_template, find_template
from tessera.domains.issuer_groups import group_of
from tessera.storage import models


@dataclass(frozen=True)
class NewCA:
    subject: SubjectFields
    ca_type: str
    key_algorithm: str | None
    key_size: int | None
    validity_days: int | None
    parent_id: int | None = None
    name: str | None = None
    path_length: int | None = None
    template_id: int | None = None


@dataclass(frozen=True)
class ImportedBundle:
    certificate: x509.Certificate
    private_key: PrivateKey | None
    extra: list[x509.Certificate]


class CAService:
    def __init__(self, issuance: Issuance, now: datetime | None = None) -> None:
        self._issuance = issuance
        self._repos = issuance.repos
        self._actor = issuance.actor
        self._now = now or utc_now()

    def get(self, ca_id: int) -> models.CertificateAuthority:
        ca = self._repos.cas.get(ca_id)
        if ca is None:
            raise NotFound(f"CA {ca_id} not found")
        return ca

    def listing(
        self, page: int, per_page: int
    ) -> tuple[Sequence[models.CertificateAuthority], int, dict[int, int]]:
        rows, total = self._repos.cas.page(page, per_page)
        return rows, total, self._repos.cas.certificate_counts([r.id for r in rows])

    def all(self) -> Sequence[models.CertificateAuthority]:
        return self._repos.cas.all()

    def tree(self) -> tuple[Sequence[models.CertificateAuthority], dict[int, int]]:
        """Every CA, with its certificate count (as the listing gives it)."""
        return self._repos.cas.all(), self._repos.cas.certificate_counts(None)

    def many(self, ids: Sequence[int]) -> Sequence[models.CertificateAuthority]:
        return self._repos.cas.many(ids)

    def certificate_count(self, ca_id: int) -> int:
        return self._repos.cas.certificate_counts([ca_id]).get(ca_id, 0)

    def create(self, spec: NewCA) -> models.CertificateAuthority:
        if spec.ca_type not in ("root", "intermediate"):
            raise InvalidInput("ca_type must be 'root' or 'intermediate'")
        parent = None
        if spec.ca_type == "intermediate":
            if spec.parent_id is None:
                raise InvalidInput("an intermediate CA needs parent_id")
            parent = self.get(spec.parent_id)
        elif spec.parent_id is not None:
            raise InvalidInput("a root CA has no parent_id")
        template = find_template(self._repos, spec.template_id)
        policy = core_template(template)
        key = generate_private_key(key_to_generate(policy, spec.key_algorithm, spec.key_size))
        default_days = (policy and policy.validity_days) or (3650 if parent is None else 1825)
        request = CertificateRequest(
            subject=spec.subject.to_name(),
            public_key=key.public_key(),
            validity_days=spec.validity_days or default_days,
            is_ca=True,
            path_length=spec.path_length,
            requester=self._actor.username,
        )
        name = spec.name or spec.subject.common_name
        return self._issuance.issue_ca(request, name, key, parent, template=template)

    def update(
        self, ca_id: int, name: str | None, is_active: bool | None
    ) -> models.CertificateAuthority:
        ca = self.get(ca_id)
        changes: dict[str, object] = {}
        if name is not None:
            if not name.strip():
                raise InvalidInput("name cannot be empty")
            ca.name = changes["name"] = name.strip()[:200]
        if is_active is not None:
            if is_active and ca.revoked_at is not None:
                raise Conflict(f"CA {ca.id} was revoked; a revoked CA is not enabled again")
            ca.is_active = changes["is_active"] = is_active
        # Written before the audit row: issuances hold the CA's row, then the audit chain,
        # and so must this change (in the other order, the two deadlock on PostgreSQL).
        self._repos.session.flush()
        audit.record(self._repos.audit, self._actor, "ca.update", "ca", ca.id, changes)
        return ca

    def delete(self, ca_id: int) -> None:
        ca = self.get(ca_id)
        self._repos.crl.hold_states(ca.org_id, ca.subject)  # first, as a publication does
        if ca.id not in self._repos.cas.hold_named(ca.subject):
            raise NotFound(f"CA {ca_id} not found")  # deleted meanwhile
        if self._repos.cas.children_count(ca.id):
            raise Conflict(f"CA {ca.id} has subordinate CAs; delete them first")
        # Its OCSP responder certificates are the server's own, issued when relying parties
        # first asked about it (anonymously): they go with it instead of keeping it.
        responders = self._repos.ocsp.signer_certificates(ca.id)
        issued = self._repos.cas.certificate_counts([ca.id]).get(ca.id, 0) - len(responders)
        if issued:
            raise Conflict(f"CA {ca.id} has issued {issued} certificates; delete them first")
        if ca.internal:
            raise Conflict("the internal CA that signs the server's own certificate is kept")
        if self._repos.acme.settings().issuing_ca_id == ca.id:
            # The setting holds a bare id: SQLite may give it to the next CA created.
            raise Conflict(f"CA {ca.id} issues for ACME; choose another in the ACME settings first")
        if ca.parent_id is not None:
            # Its issuer's OCSP responders hold a signed answer for it: they read it again
            # (now `unknown`, or `revoked` when retained), as for a deleted certificate.
            self._repos.status_changes.record_ca(ca)
            self._repos.session.flush()  # a write first: SQLite's lock, then read again
            self._repos.cas.reread_for_change(ca)  # a revocation that committed meanwhile
        for responder in responders:  # as a certificate is deleted (CertificateService)
            if self._repos.certificates.delete(responder):
                self._repos.crl.retain(responder, self._now)
                self._repos.status_changes.record(responder)
        # A revoked CA stays revoked until it expires, row or not: its entry on its
        # issuer's CRL (and OCSP answer) is kept, as a deleted certificate's is.
        self._repos.crl.retain_ca(ca, self._now)
        self._hand_over_revocations(ca)
        self._repos.cas.delete(ca)
        details: dict[str, object] = {"subject": ca.subject}
        if responders:
            details["ocsp_responder_certificates"] = [r.id for r in responders]
        audit.record(self._repos.audit, self._actor, "ca.delete", "ca", ca.id, details)

    def _hand_over_revocations(self, ca: models.CertificateAuthority) -> None:
        """A row of an issuer group being deleted leaves what its group publishes to a row
        that stays: the kept CRL entries filed under it (its deleted revoked certificates and
        subordinate CAs) would go with its row, and its status changes would drop out of the
        group's delta CRLs, although what it issued still verifies under the rows that stay
        (one name, one key). The last row of a group takes them with it: nothing here speaks
        for that issuer any more (docs/crl.md). `hold_named` made this the only deletion in
        the group, so the row that inherits them is not being deleted meanwhile."""
        heirs = [row for row in group_of(self._repos.cas, ca) if row.id != ca.id]
        if heirs:
            self._repos.crl.hand_over(ca.id, [row.id for row in heirs], self._now)

    def revoke(self, ca_id: int, reason: str | None) -> models.CertificateAuthority:
        """Its issuer, held here, revokes a subordinate CA's certificate (RFC 5280 5.3.1): the
        issuer's CRLs list it and its OCSP answers say revoked. For good: a hold would let it
        sign again, so certificateHold is refused (disabling pauses a CA). The CA signs no
        more, nor does any CA below it (`issuance.revoked_above`)."""
        ca = self.get(ca_id)
        canonical = normalize_reason(reason)
        if canonical in ("certificateHold", "removeFromCRL"):
            raise InvalidInput(f"a CA is revoked for good; {canonical} does not apply (disable it)")
        parent = self.get(ca.parent_id) if ca.parent_id is not None else None
        if parent is None:
            raise Conflict(f"CA {ca.id} has no issuer here to revoke it; disable or delete it")
        if parent.encrypted_private_key is None:
            # Nothing here could sign a CRL or an OCSP answer saying so.
            raise Conflict(
                f"the key of CA {ca.id}'s issuer (CA {parent.id}) is not held here, so no CRL "
                "or OCSP answer of ours can tell relying parties; revoke it where that key is"
            )
        if ca.revoked_at is not None or not self._repos.cas.revoke(ca, self._now, canonical):
            raise Conflict(f"CA {ca.id} is already revoked")
        self._repos.status_changes.record_ca(ca)
        details = {"serial": ca.serial_number, "reason": canonical, "issuer_ca_id": parent.id}
        audit.record(self._repos.audit, self._actor, "ca.revoke", "ca", ca.id, details)
        return ca

    def bulk_delete(self, ids: Sequence[int]) -> bulk.BulkResult:
        return bulk.each(self._repos.session, ids, self.delete)

    def chain(self, ca: models.CertificateAuthority) -> list[models.CertificateAuthority]:
        """The CA and its parents up to the root, nearest first."""
        return ca_chain(self._repos, ca)

    def export(self, ca_id: int, fmt: str) -> Exported:
        ca = self.get(ca_id)
        if fmt not in ("pem", "der", "chain"):
            raise InvalidInput("format must be pem, der or chain")
        chain = [load_certificate(c.certificate_pem.encode()) for c in self.chain(ca)]
        return export(fmt, safe_name(ca.name, f"ca-{ca.id}"), chain[0], chain[1:])

    def export_all(self, fmt: str) -> Exported:
        """All CAs in one file, as all certificates are: a PEM bundle, or PKCS#7."""
        return bundle(fmt, [r.certificate_pem for r in self.all()], "cas", "CAs")

    def export_many(self, ids: Sequence[int]) -> Exported:
        """The chosen CAs as a ZIP of single files."""
        rows = self.many(ids)
        if not rows:  # as the certificates' bulk export: unknown ids are no empty archive
            raise NotFound("none of the CAs was found")
        files = [
            (f"{r.id}-{safe_name(r.name, 'ca')}.pem", r.certificate_pem.encode()) for r in rows
        ]
        return zipped(files, "cas.zip")

    def import_ca(
        self,
        data: bytes,
        password: str | None,
        name: str | None,
        import_key: bool = True,
        key_data: bytes | None = None,
    ) -> models.CertificateAuthority:
        bundle = read_bundle(data, password, key_data, import_key)
        if not inspect.is_ca(bundle.certificate):
            raise PolicyViolation("the certificate is not a CA certificate (no CA:TRUE)")
        key = bundle.private_key if import_key else None
        return self.store_imported(bundle.certificate, key, name)

    def store_imported(
        self, cert: x509.Certificate, key: PrivateKey | None, name: str | None
    ) -> models.CertificateAuthority:
        """A CA certificate made elsewhere. Refused (409) when the very same certificate is
        here already; another certificate of the same key (a re-issued root) is a new CA."""
        check_key_matches(cert, key)
        # As for certificates: two imports at once would both find none and both store it.
        self._repos.organizations.hold(self._repos.org_id)
        existing = self.same_certificate(cert)
        if existing is not None:
            raise Conflict(f"this CA is already present (CA {existing.id})")
        parent = self.find_issuer(cert)
        encrypted = self._issuance.keys.encrypt(key) if key is not None else None
        display = name or inspect.common_name(cert.subject) or name_text(cert.subject)
        row = ca_row(cert, encrypted, display, parent)
        row.imported = True
        self._repos.cas.add(row)
        adopted = self._adopt(row, cert)
        details = {"subject": row.subject, "with_key": key is not None}
        audit.record(self._repos.audit, self._actor, "ca.import", "ca", row.id, details)
        if adopted:
            audit.record(self._repos.audit, self._actor, "ca.link", "ca", row.id, adopted)
        return row

    def attach_key(self, row: models.CertificateAuthority, key: PrivateKey) -> None:
        """Keep the key of a CA that is here without one (encrypted, audited): a CA first
        imported as a bare certificate can sign once its key comes."""
        if row.encrypted_private_key is not None:
            raise Conflict(f"CA {row.id} already has its private key")
        check_key_matches(load_certificate(row.certificate_pem.encode()), key)
        row.encrypted_private_key = self._issuance.keys.encrypt(key)
        details = {"subject": row.subject}
        audit.record(self._repos.audit, self._actor, "ca.import_key", "ca", row.id, details)

    def _adopt(
        self, row: models.CertificateAuthority, cert: x509.Certificate
    ) -> dict[str, list[int]] | None:
        """What was imported before its issuer is filed under it now that it is here (the
        seed's "auto-links certificates to parent CA by issuer matching"): the CAs and
        certificates with no issuer here, named as issued by this CA and whose signature its
        key verifies."""
        subject = name_text(cert.subject)
        cas = [
            child
            for child in self._repos.cas.unlinked_issued_by(subject)
            if child.id != row.id and _signed_by(child.certificate_pem, cert)
        ]
        leaves = [
            leaf
            for leaf in self._repos.certificates.unlinked_issued_by(subject)
            if _signed_by(leaf.certificate_pem, cert)
        ]
        for child in cas:
            child.parent_id = row.id
        for leaf in leaves:
            leaf.ca_id = row.id
        if not (cas or leaves):
            return None
        # Written before any audit row: an issuance under an adopted CA holds its row, then
        # the audit chain (issuance.write_issued); in the other order the two would deadlock.
        self._repos.session.flush()
        return {"cas": [c.id for c in cas], "certificates": [c.id for c in leaves]}

    def same_certificate(self, cert: x509.Certificate) -> models.CertificateAuthority | None:
        """The CA here whose certificate is `cert`, byte for byte (the same DER, hence the
        same SHA-256 fingerprint): the one rule for a duplicate CA, whatever the import."""
        der = cert_der(cert)
        for row in self._repos.cas.with_subject(name_text(cert.subject)):
            if cert_der(load_certificate(row.certificate_pem.encode())) == der:
                return row
        return None

    def find_issuer(self, cert: x509.Certificate) -> models.CertificateAuthority | None:
        """The CA here that signed `cert`: found by authority key identifier, then by issuer
        name, and kept only if its key verifies the signature, so a forged certificate that
        copies a real CA's identifiers is never filed (or chained) under it."""
        if cert.issuer == cert.subject:
            return None
        aki = inspect.authority_key_identifier(cert)
        candidates = [self._repos.cas.by_subject_key_id(aki)] if aki else []
        # Every CA of that name: re-issued roots share one.
        candidates.extend(self._repos.cas.with_subject(name_text(cert.issuer)))
        for ca in candidates:
            if ca is not None and is_issued_by(cert, load_certificate(ca.certificate_pem.encode())):
                return ca
        return None


def _signed_by(pem: str, issuer: x509.Certificate) -> bool:
    return is_issued_by(load_certificate(pem.encode()), issuer)


def read_bundle(
    data: bytes, password: str | None, key_data: bytes | None = None, key_wanted: bool = True
) -> ImportedBundle:
    """A PKCS#12 file, or PEM/DER certificates optionally followed by a PEM private key.
    `key_data`, a key given apart (PEM or DER), is always read: one that cannot be is an
    error (400), never dropped; if the upload holds a key too, the two must be the same.
    A PEM key that is not wanted (`import_key=false`) and is encrypted, with no password
    given, is left closed: it was a 400 "a password is required" for a key to be dropped."""
    if not data:
        raise InvalidInput("the uploaded content is empty")
    secret = password.encode() if password else None
    if looks_like_pkcs12(data):
        cert, key, extra = load_pkcs12(data, secret)
        # Without a key bag no certificate is the key's (`openssl pkcs12 -nokeys`, Java trust
        # stores): all are in `extra`, and the caller picks the one the file is about.
        if cert is None and extra:
            cert, extra = extra[0], extra[1:]
        if cert is None:
            raise InvalidInput("the PKCS#12 file holds no certificate")
    else:
        certs = load_certificates(data)
        cert, extra = certs[0], certs[1:]
        key = None
        if b"PRIVATE KEY-----" in data and (key_wanted or secret or not key_is_encrypted(data)):
            key = load_private_key(data, secret)
    if key_data is not None:
        given = load_private_key(key_data, secret)
        if key is not None and key.public_key() != given.public_key():
            raise InvalidInput("private_key is not the key the upload itself holds")
        key = given
    return ImportedBundle(cert, key, extra)


def check_key_matches(cert: x509.Certificate, key: PrivateKey | None) -> None:
    if key is None:
        return
    if key.public_key() != cert.public_key():
        raise PolicyViolation("the private key does not belong to the certificate")
