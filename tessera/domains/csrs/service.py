"""Certificate signing requests: upload, browse, attach a key, sign, delete, export.

A request is verified when it arrives (its self-signature, the key floor, decodable names,
the lint's subject bounds and SAN rules), so what the inventory holds can always be signed.
Signing goes through the one issuance path (`CertificateService.issue`) and then marks the
request signed, atomically, so a request is never certified twice. A key attached to a
request is encrypted at rest like every other key and moves to the certificate issued for it
(the request keeps no copy).
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from tessera.core import csr_details, inspect
from tessera.core.errors import Conflict, InvalidInput, NotFound, PolicyViolation
from tessera.core.formats import csr_pem, load_csr, load_private_key
from tessera.core.keys import PrivateKey
from tessera.domains import audit, bulk
from tessera.domains.bulk import BulkResult
from tessera.domains.certificates.service import CertificateService, NewCertificate
from tessera.domains.exports import PEM, Exported, safe_name
from tessera.domains.issuance import Issuance
from tessera.storage import models
from tessera.storage.repositories.csrs import PENDING, SIGNED

STATUSES = (PENDING, SIGNED)
MAX_NAME = 200


@dataclass(frozen=True)
class SignOptions:
    ca_id: int
    template_id: int | None = None
    validity_days: int | None = None


class CSRService:
    def __init__(self, issuance: Issuance, now: datetime) -> None:
        self._issuance = issuance
        self._repos = issuance.repos
        self._actor = issuance.actor
        self._now = now

    def get(self, csr_id: int) -> models.CertificateRequestRow:
        row = self._repos.csrs.get(csr_id)
        if row is None:
            raise NotFound(f"CSR {csr_id} not found")
        return row

    def decoded(self, row: models.CertificateRequestRow) -> dict[str, object]:
        return csr_details.describe(row.csr_pem)

    def listing(
        self, status: str | None, page: int, per_page: int
    ) -> tuple[Sequence[models.CertificateRequestRow], int]:
        if status is not None and status not in STATUSES:
            raise InvalidInput("status must be one of pending, signed")
        return self._repos.csrs.page(status, page, per_page)

    def history(
        self, page: int, per_page: int
    ) -> tuple[Sequence[models.CertificateRequestRow], int]:
        return self._repos.csrs.history(page, per_page)

    def same_request(
        self, csr: x509.CertificateSigningRequest
    ) -> models.CertificateRequestRow | None:
        """The very same request, if it is here already (as `upload` stores it)."""
        common_name = inspect.common_name(csr.subject)[:MAX_NAME]
        return self._repos.csrs.same_request(common_name, csr_pem(csr))

    def upload(
        self,
        data: bytes,
        name: str | None,
        source: str,
        key_data: bytes | None = None,
        password: str | None = None,
    ) -> models.CertificateRequestRow:
        """Store a PEM or DER request whose signature verifies and whose key may be certified,
        with its private key when the PEM holds one (`openssl req -keyout` and `-out` to one
        file) or one is given apart (`key_data`): a key is kept, or refused, never dropped."""
        if not data.strip():
            raise InvalidInput("the CSR is empty")
        csr = load_csr(data)
        summary = csr_details.summarize(csr)
        key = _uploaded_key(data, key_data, password)
        if key is not None and _spki(key.public_key()) != _spki(csr.public_key()):
            raise PolicyViolation("the private key does not match the CSR's public key")
        self._refuse_pending_copy(summary.common_name, summary.pem)
        row = models.CertificateRequestRow(
            refid=str(uuid.uuid4()),
            name=_display_name(name, summary),
            common_name=summary.common_name[:200],
            subject=summary.subject,
            san_text=" ".join(summary.sans),
            key_algorithm=summary.key.algorithm,
            key_size=summary.key.size,
            csr_pem=summary.pem,
            status=PENDING,
            created_by=self._actor.username,
            encrypted_private_key=self._issuance.keys.encrypt(key) if key is not None else None,
        )
        self._repos.csrs.add(row)
        with_key = key is not None
        details = {"subject": row.subject, "name": row.name, "source": source, "with_key": with_key}
        audit.record(self._repos.audit, self._actor, "csr.upload", "csr", row.id, details)
        return row

    def _refuse_pending_copy(self, common_name: str, pem: str) -> None:
        """The same request waiting twice would be signed twice. Once signed, it may come
        again: sending the same CSR for a renewal is common practice."""
        # Two uploads at once would both find none (as for certificate imports).
        self._repos.organizations.hold(self._repos.org_id)
        pending = self._repos.csrs.same_request(common_name[:MAX_NAME], pem, PENDING)
        if pending is not None:
            raise Conflict(f"this CSR is already pending (CSR {pending.id})")

    def attach_key(
        self, csr_id: int, key_pem: str, passphrase: str | None
    ) -> models.CertificateRequestRow:
        """Keep the request's private key (encrypted) so its certificate can carry it."""
        row = self.get(csr_id)
        if row.status == SIGNED:
            raise Conflict(f"CSR {csr_id} is already signed; its key can no longer be attached")
        if row.encrypted_private_key is not None:
            raise Conflict(f"CSR {csr_id} already has a private key")
        key = _read_key(key_pem, passphrase)
        if _spki(key.public_key()) != _spki(load_csr(row.csr_pem.encode()).public_key()):
            raise PolicyViolation("the private key does not match the CSR's public key")
        # Only onto a request still pending and keyless: one signed (or keyed) since it was
        # read would keep a key its certificate never got.
        if not self._repos.csrs.attach_key(row, self._issuance.keys.encrypt(key)):
            raise Conflict(f"CSR {csr_id} was signed or given a key meanwhile; reload it")
        audit.record(
            self._repos.audit, self._actor, "csr.attach_key", "csr", row.id, {"name": row.name}
        )
        return row

    def sign(
        self, csr_id: int, options: SignOptions
    ) -> tuple[models.CertificateRequestRow, models.Certificate]:
        row = self.get(csr_id)
        if not self._repos.csrs.claim_for_signing(row):
            raise Conflict(f"CSR {csr_id} is already signed")
        # The key as the claim found it: one attached after the row was read goes with the
        # certificate (and is cleared below) rather than staying on the signed request.
        self._repos.csrs.reread(row)
        key = self._attached_key(row)
        spec = NewCertificate(
            ca_id=options.ca_id,
            subject=None,
            san=[],
            template_id=options.template_id,
            validity_days=options.validity_days,
            csr_pem=row.csr_pem,
            csr_key=key,
            origin="csr",
        )
        cert = CertificateService(self._issuance, self._now).issue(spec)
        row.certificate_id, row.signed_at = cert.id, self._now
        # The key moved to the certificate: no second copy outlives the certificate's deletion.
        row.encrypted_private_key = None
        details = {"certificate_id": cert.id, "ca_id": options.ca_id, "serial": cert.serial_number}
        audit.record(self._repos.audit, self._actor, "csr.sign", "csr", row.id, details)
        return row, cert

    def bulk_sign(self, ids: Sequence[int], options: SignOptions) -> BulkResult:
        """Each request in its own savepoint: one that fails leaves the others signed. An
        unknown CA or template, or a CA that cannot sign, refuses the whole call instead."""
        self._check_signer(options)
        return self._each(ids, lambda csr_id: self.sign(csr_id, options))

    def delete(self, csr_id: int) -> None:
        """Remove a request (pending, or a signed one from the history); its certificate stays."""
        row = self.get(csr_id)
        self._repos.csrs.delete(row)
        details = {"subject": row.subject, "status": row.status}
        audit.record(self._repos.audit, self._actor, "csr.delete", "csr", row.id, details)

    def bulk_delete(self, ids: Sequence[int]) -> BulkResult:
        return self._each(ids, self.delete)

    def export(self, csr_id: int) -> Exported:
        row = self.get(csr_id)
        return Exported(row.csr_pem.encode(), PEM, f"{safe_name(row.name, f'csr-{row.id}')}.csr")

    def _each(self, ids: Sequence[int], action: Callable[[int], object]) -> BulkResult:
        return bulk.each(self._repos.session, ids, action)

    def _check_signer(self, options: SignOptions) -> None:
        ca = self._repos.cas.get(options.ca_id)
        if ca is None:
            raise NotFound(f"CA {options.ca_id} not found")
        self._issuance.issuer(ca)  # refuses a disabled CA or one without its key here
        template_id = options.template_id
        if template_id is not None and self._repos.templates.get(template_id) is None:
            raise NotFound(f"template {template_id} not found")

    def _attached_key(self, row: models.CertificateRequestRow) -> PrivateKey | None:
        if row.encrypted_private_key is None:
            return None
        return self._issuance.keys.decrypt(row.encrypted_private_key)


def _display_name(name: str | None, summary: csr_details.CsrSummary) -> str:
    text = (name or "").strip()
    if len(text) > MAX_NAME:
        raise InvalidInput(f"name must be at most {MAX_NAME} characters")
    if "\x00" in text:
        raise InvalidInput("name must not contain NUL characters")
    first_san = summary.sans[0].partition(":")[2] if summary.sans else ""
    return (text or summary.common_name or first_san or "CSR")[:MAX_NAME]


def _uploaded_key(data: bytes, key_data: bytes | None, password: str | None) -> PrivateKey | None:
    """The private key the upload holds (after its CSR) or `key_data`, which is always read;
    given in both places, the two must be the same key (as for certificate imports)."""
    secret = password.encode() if password else None
    key = load_private_key(data, secret) if b"PRIVATE KEY-----" in data else None
    if key_data is None:
        return key
    given = load_private_key(key_data, secret)
    if key is not None and _spki(given.public_key()) != _spki(key.public_key()):
        raise InvalidInput("private_key is not the key the upload itself holds")
    return given


def _read_key(key_pem: str, passphrase: str | None) -> PrivateKey:
    """A PEM private key; the passphrase is used only when the key is encrypted."""
    data = key_pem.strip().encode()
    if not data:
        raise InvalidInput("the private key is empty")
    password = passphrase.encode() if passphrase and b"ENCRYPTED" in data else None
    return load_private_key(data, password)


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
