"""The trust store: certificates this organization trusts (external roots, intermediates and,
when someone pins one, leaves). Entries are keyed by their SHA-256 fingerprint: adding one
that is already there is a conflict; importing or syncing one skips it."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from tessera.core import inspect
from tessera.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PolicyViolation,
    UnparsableInput,
)
from tessera.core.formats import (
    cert_pem,
    decode_text,
    decode_upload,
    load_certificate,
    load_certificate_file,
    load_certificates,
    pem_blocks,
    secret,
)
from tessera.core.names import name_text
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.truststore import TrustFilter

# The operating system's CA bundle (Debian's ca-certificates package).
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SOURCES = ("manual", "import", "system")
PURPOSE_MAX, SEARCH_MAX = 64, 200  # the purpose column's width; the certificate list's term


@dataclass(frozen=True)
class TrustDetails:
    """What a person says about an entry; the rest is read from the certificate."""

    name: str | None = None
    description: str | None = None
    purpose: str | None = None
    notes: str | None = None

    def checked(self) -> "TrustDetails":
        limits = {"name": 200, "description": 4000, "purpose": PURPOSE_MAX, "notes": 4000}
        for label, limit in limits.items():
            value = getattr(self, label)
            if value is not None and ("\x00" in value or len(value) > limit):
                raise InvalidInput(f"{label} must be text of at most {limit} characters")
        return self


@dataclass
class Added:
    """The outcome of an import or a sync."""

    rows: list[models.TrustedCertificate] = field(default_factory=list)
    skipped: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return len(self.rows) + self.skipped + self.failed


class TrustStoreService:
    def __init__(self, repos: Repositories, actor: Actor, now: datetime) -> None:
        self._repos = repos
        self._actor = actor
        self._now = now

    def get(self, row_id: int) -> models.TrustedCertificate:
        row = self._repos.truststore.get(row_id)
        if row is None:
            raise NotFound(f"trusted certificate {row_id} not found")
        return row

    def listing(
        self, page: int, per_page: int, filters: TrustFilter
    ) -> tuple[Sequence[models.TrustedCertificate], int]:
        """An empty filter is no filter, as on the other lists."""
        filters = TrustFilter(
            filters.source or None, filters.purpose or None, filters.search or None
        )
        if filters.source is not None and filters.source not in SOURCES:
            raise InvalidInput(f"source must be one of {', '.join(SOURCES)}")
        for label, value, limit in (
            ("purpose", filters.purpose, PURPOSE_MAX),
            ("search", filters.search, SEARCH_MAX),
        ):
            if value is not None and ("\x00" in value or len(value) > limit):
                raise InvalidInput(f"{label} must be text of at most {limit} characters")
        return self._repos.truststore.page(page, per_page, filters)

    def stats(self) -> dict[str, int]:
        return self._repos.truststore.stats(self._now)

    def details(self, row: models.TrustedCertificate) -> dict[str, object]:
        """Parsed details; a trusted certificate may carry a key Tessera never issues for
        (DSA, a binary curve), which is shown as such rather than refused."""
        cert = load_certificate(row.certificate_pem.encode())
        try:
            return inspect.details(cert, self._now)
        except PolicyViolation:
            return _details_without_key(cert)

    def add(
        self, content: str, password: str | None, details: TrustDetails
    ) -> models.TrustedCertificate:
        """One certificate: PEM text, or base64 of a DER, PKCS#7 or PKCS#12 file."""
        certs = load_certificate_file(decode_text(content), secret(password))
        if len(certs) != 1:
            raise InvalidInput(
                f"the content holds {len(certs)} certificates; add one, or import the bundle"
            )
        row = trusted_row(certs[0], details.checked(), "manual")
        self._hold()
        if self._repos.truststore.known_fingerprints([row.fingerprint_sha256]):
            raise Conflict("this certificate is already in the trust store")
        self._repos.truststore.add(row)
        self._record_one("truststore.add", row)
        return row

    def import_file(self, data: bytes, password: str | None, details: TrustDetails) -> Added:
        """PEM (one or many), DER, PKCS#7 or PKCS#12 (its key is not kept), read as the
        certificate import reads them; entries already trusted are skipped."""
        if not data.strip():
            raise InvalidInput("the uploaded content is empty")
        certs = load_certificate_file(decode_upload(data), secret(password))
        if not certs:
            raise InvalidInput("the upload holds no certificate")
        outcome = self._add_new(certs, details.checked(), "import")
        self._record_bulk("truststore.import", outcome, {"ids": [r.id for r in outcome.rows]})
        return outcome

    def sync(self, bundle: Path = SYSTEM_BUNDLE) -> Added:
        """Trust every certificate of the system bundle; run again, it adds nothing."""
        try:
            data = bundle.read_bytes()
        except OSError as exc:
            raise NotFound(f"the system CA bundle {bundle} cannot be read on the server") from exc
        certs, failed = _each_certificate(data)
        outcome = self._add_new(certs, TrustDetails(purpose="trust_anchor"), "system")
        outcome.failed = failed
        self._record_bulk("truststore.sync", outcome, {"bundle": str(bundle)})
        return outcome

    def delete(self, row_id: int) -> None:
        row = self.get(row_id)
        self._repos.truststore.delete(row)
        self._record_one("truststore.delete", row)

    def _add_new(
        self, certs: Sequence[x509.Certificate], details: TrustDetails, source: str
    ) -> Added:
        outcome = Added()
        candidates = [trusted_row(c, _entry_details(details, c, len(certs)), source) for c in certs]
        self._hold()
        known = self._repos.truststore.known_fingerprints(r.fingerprint_sha256 for r in candidates)
        for row in candidates:
            if row.fingerprint_sha256 in known:
                outcome.skipped += 1
                continue
            known.add(row.fingerprint_sha256)
            outcome.rows.append(row)
        self._repos.truststore.add_many(outcome.rows)
        return outcome

    def _hold(self) -> None:
        """The unique fingerprint keeps a second entry out, but a request that lost the race
        would fail as a whole with a generic clash (a sync or import that should skip what
        the other added; an add that should say the entry is there): the check and the
        insert run with the organization's row held, one request at a time."""
        self._repos.organizations.hold(self._repos.org_id)

    def _record_one(self, action: str, row: models.TrustedCertificate) -> None:
        details = {"subject": row.subject, "fingerprint_sha256": row.fingerprint_sha256}
        audit.record(self._repos.audit, self._actor, action, "trusted_certificate", row.id, details)

    def _record_bulk(self, action: str, outcome: Added, extra: dict[str, object]) -> None:
        details = {"added": len(outcome.rows), "skipped": outcome.skipped, **extra}
        if outcome.failed:
            details["failed"] = outcome.failed
        audit.record(self._repos.audit, self._actor, action, "trusted_certificate", None, details)


def trusted_row(
    cert: x509.Certificate, details: TrustDetails, source: str
) -> models.TrustedCertificate:
    self_issued = cert.issuer == cert.subject
    # A version 1 self-signed certificate has no basic constraints but is a root all the same.
    is_ca = inspect.is_ca(cert) or (self_issued and cert.version == x509.Version.v1)
    label = display_name(cert)
    return models.TrustedCertificate(
        name=(details.name or label)[:200],
        description=details.description,
        purpose=details.purpose,
        notes=details.notes,
        source=source,
        common_name=label[:200],
        subject=name_text(cert.subject),
        issuer=name_text(cert.issuer),
        serial_number=inspect.serial_hex(cert.serial_number),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        # A self-signed leaf (a pinned server certificate) is trusted, but no root CA.
        is_root=self_issued and is_ca,
        is_ca=is_ca,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        certificate_pem=cert_pem(cert),
    )


def display_name(cert: x509.Certificate) -> str:
    """The common name, or (for the roots that have none) the OU or O, or the whole DN."""
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.ORGANIZATION_NAME):
        value = inspect.name_field(cert.subject, oid)
        if value and value.strip("\x00 "):
            return value.replace("\x00", "")
    return name_text(cert.subject) or f"serial {inspect.serial_hex(cert.serial_number)}"


def _details_without_key(cert: x509.Certificate) -> dict[str, object]:
    return {
        "san": inspect.sans(cert),
        "key_usage": inspect.key_usages(cert),
        "extended_key_usage": inspect.extended_key_usages(cert),
        "fingerprint_sha256": inspect.fingerprint(cert, hashes.SHA256()),
        "key_algorithm": type(cert.public_key()).__name__.removesuffix("PublicKey"),
        "key_size": getattr(cert.public_key(), "key_size", 0),
        "signature_algorithm": inspect.signature_algorithm(cert),
    }


def _entry_details(details: TrustDetails, cert: x509.Certificate, count: int) -> TrustDetails:
    """A name given for a bundle labels each entry with its own certificate's name."""
    if count == 1 or details.name is None:
        return details
    name = f"{details.name}: {display_name(cert)}"
    return TrustDetails(name, details.description, details.purpose, details.notes)


def _each_certificate(data: bytes) -> tuple[list[x509.Certificate], int]:
    """Every certificate of a PEM bundle, block by block: one unreadable block is counted
    and passed over rather than failing the whole bundle."""
    certs, failed = [], 0
    for block in pem_blocks(data, "CERTIFICATE"):
        try:
            certs.extend(load_certificates(block))
        except UnparsableInput:
            failed += 1
    return certs, failed
