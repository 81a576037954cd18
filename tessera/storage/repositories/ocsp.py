"""Queries of the OCSP responder. Relying parties are anonymous and CAs of every organization
are served, so lookups start from a CA (which fixes the organization) rather than a tenant."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate, CertificateAuthority
from tessera.storage.models_crl import RetainedCRLEntry
from tessera.storage.models_ocsp import COUNTERS, OCSPCounter, OCSPSigner


@dataclass(frozen=True)
class StoredStatus:
    serial_number: str
    status: str  # active | revoked
    revoked_at: datetime | None
    reason: str | None


class OCSPRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def all_cas(self) -> Sequence[CertificateAuthority]:
        """Every CA, keyless ones too: a CA without its key here may share its name and key
        with one that has it (a re-issued root), and then what it issued is answered for."""
        return self._session.scalars(
            select(CertificateAuthority).order_by(CertificateAuthority.id)
        ).all()

    def ca(self, ca_id: int) -> CertificateAuthority | None:
        return self._session.get(CertificateAuthority, ca_id)

    def statuses(
        self, org_id: int, ca_ids: Sequence[int], serials: Iterable[str]
    ) -> dict[str, StoredStatus]:
        """The stored status of each serial issued by one of the CAs, the rows of one issuer
        (absent: unknown). Subordinate CA certificates count too: they are certificates the CA
        issued."""
        wanted = sorted(set(serials))
        if not wanted:
            return {}
        certs = select(
            Certificate.serial_number,
            Certificate.status,
            Certificate.revoked_at,
            Certificate.revocation_reason,
        ).where(
            Certificate.org_id == org_id,
            Certificate.ca_id.in_(ca_ids),
            Certificate.serial_number.in_(wanted),
        )
        found: dict[str, StoredStatus] = {}
        for serial, status, revoked_at, reason in self._session.execute(certs):
            # The same serial under two rows of one issuer is one certificate to relying
            # parties: revoked if either says so.
            if serial not in found or status == "revoked":
                found[serial] = StoredStatus(serial, status, revoked_at, reason)
        missing = [serial for serial in wanted if serial not in found]
        if missing:
            found.update(self._subordinates(org_id, ca_ids, missing))
        missing = [serial for serial in missing if serial not in found]
        if missing:
            found.update(self._retained(ca_ids, missing))
        return found

    def _subordinates(
        self, org_id: int, ca_ids: Sequence[int], serials: list[str]
    ) -> dict[str, StoredStatus]:
        sub = CertificateAuthority
        query = select(sub.serial_number, sub.revoked_at, sub.revocation_reason).where(
            sub.org_id == org_id,
            sub.parent_id.in_(ca_ids),
            sub.serial_number.in_(serials),
        )
        found = {}
        for serial, revoked_at, reason in self._session.execute(query):
            status = "active" if revoked_at is None else "revoked"
            found[serial] = StoredStatus(serial, status, revoked_at, reason)
        return found

    def _retained(self, ca_ids: Sequence[int], serials: list[str]) -> dict[str, StoredStatus]:
        """A revoked certificate deleted from the inventory stays revoked until it expires:
        the CRL keeps its entry (crl_retained_entries), and so does OCSP."""
        kept = select(
            RetainedCRLEntry.serial_number, RetainedCRLEntry.revoked_at, RetainedCRLEntry.reason
        ).where(RetainedCRLEntry.ca_id.in_(ca_ids), RetainedCRLEntry.serial_number.in_(serials))
        return {
            serial: StoredStatus(serial, "revoked", revoked_at, reason)
            for serial, revoked_at, reason in self._session.execute(kept)
        }

    def current_signer(self, ca_id: int) -> tuple[OCSPSigner, Certificate] | None:
        query = (
            select(OCSPSigner, Certificate)
            .join(Certificate, Certificate.id == OCSPSigner.certificate_id)
            .where(OCSPSigner.ca_id == ca_id)
            .order_by(OCSPSigner.generation.desc())
            .limit(1)
        )
        row = self._session.execute(query).first()
        return (row[0], row[1]) if row else None

    def signer_certificates(self, ca_id: int) -> Sequence[Certificate]:
        """The CA's own responder certificates, every generation: the server issued them for
        itself, when relying parties first asked about the CA."""
        query = (
            select(Certificate)
            .join(OCSPSigner, OCSPSigner.certificate_id == Certificate.id)
            .where(OCSPSigner.ca_id == ca_id)
            .order_by(Certificate.id)
        )
        return self._session.scalars(query).all()

    def latest_generation(self, ca_id: int) -> int:
        query = select(func.max(OCSPSigner.generation)).where(OCSPSigner.ca_id == ca_id)
        return self._session.scalar(query) or 0

    def add_signer(self, signer: OCSPSigner) -> None:
        self._session.add(signer)
        self._session.flush()  # the unique (ca_id, generation) decides a rollover race here

    def add_counts(self, deltas: Mapping[str, int]) -> None:
        for name, delta in deltas.items():
            if delta and name in COUNTERS:
                self._session.execute(
                    update(OCSPCounter)
                    .where(OCSPCounter.name == name)
                    .values(value=OCSPCounter.value + delta)
                )

    def counts(self) -> dict[str, int]:
        rows = self._session.execute(select(OCSPCounter.name, OCSPCounter.value))
        return {name: int(value) for name, value in rows}
