from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, case, delete, func, or_, select
from sqlalchemy.orm import Session

from tessera.storage.models import TrustedCertificate
from tessera.storage.repositories.certificate_search import like_pattern


@dataclass(frozen=True)
class TrustFilter:
    source: str | None = None
    purpose: str | None = None  # exactly
    search: str | None = None  # a substring of the name, common name or subject


class TrustStoreRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def _scoped(self) -> Select[TrustedCertificate]:
        return select(TrustedCertificate).where(TrustedCertificate.org_id == self._org_id)

    def add(self, row: TrustedCertificate) -> TrustedCertificate:
        row.org_id = self._org_id
        self._session.add(row)
        self._session.flush()
        return row

    def add_many(self, rows: Sequence[TrustedCertificate]) -> None:
        for row in rows:
            row.org_id = self._org_id
        self._session.add_all(rows)
        self._session.flush()

    def get(self, row_id: int) -> TrustedCertificate | None:
        return self._session.scalar(self._scoped().where(TrustedCertificate.id == row_id))

    def page(
        self, page: int, per_page: int, filters: TrustFilter = TrustFilter()
    ) -> tuple[Sequence[TrustedCertificate], int]:
        query = self._scoped()
        if filters.source:
            query = query.where(TrustedCertificate.source == filters.source)
        if filters.purpose:
            query = query.where(TrustedCertificate.purpose == filters.purpose)
        if filters.search:
            # Case-insensitive, every character literal, as the certificate search; SQLite's
            # lower() is Python's here (storage/db.py), so both backends fold alike.
            pattern = like_pattern(filters.search)
            query = query.where(
                or_(
                    *(
                        func.lower(column).like(pattern, escape="\\")
                        for column in (
                            TrustedCertificate.name,
                            TrustedCertificate.common_name,
                            TrustedCertificate.subject,
                        )
                    )
                )
            )
        counted = query.with_only_columns(TrustedCertificate.id).subquery()
        total = self._session.scalar(select(func.count()).select_from(counted)) or 0
        rows = self._session.scalars(
            query.order_by(TrustedCertificate.id).offset((page - 1) * per_page).limit(per_page)
        ).all()
        return rows, total

    def known_fingerprints(self, fingerprints: Iterable[str]) -> set[str]:
        """Which of these SHA-256 fingerprints the organization already trusts."""
        wanted = list(set(fingerprints))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # keep the IN list within driver limits
            chunk = wanted[start : start + 500]
            query = select(TrustedCertificate.fingerprint_sha256).where(
                TrustedCertificate.org_id == self._org_id,
                TrustedCertificate.fingerprint_sha256.in_(chunk),
            )
            found.update(self._session.scalars(query))
        return found

    def stats(self, now: datetime) -> dict[str, int]:
        """Counted by the database in one aggregate query; no row is loaded."""
        t = TrustedCertificate
        # Every entry is in exactly one of these three, so they add up to the total.
        expired = t.not_after <= now
        valid = and_(t.not_before <= now, t.not_after > now)
        not_yet_valid = and_(t.not_before > now, t.not_after > now)
        # A root is a CA: rows stored before is_root required it may be self-signed leaves.
        root = and_(t.is_ca.is_(True), t.is_root.is_(True))
        intermediate = and_(t.is_ca.is_(True), t.is_root.is_(False))
        query = select(
            func.count(),
            func.sum(case((root, 1), else_=0)),
            func.sum(case((intermediate, 1), else_=0)),
            func.sum(case((expired, 1), else_=0)),
            func.sum(case((valid, 1), else_=0)),
            func.sum(case((not_yet_valid, 1), else_=0)),
        ).where(t.org_id == self._org_id)
        total, roots, intermediates, n_expired, n_valid, n_future = self._session.execute(
            query
        ).one()
        return {
            "total": total or 0,
            "root_ca": roots or 0,
            "intermediate_ca": intermediates or 0,
            "expired": n_expired or 0,
            "valid": n_valid or 0,
            "not_yet_valid": n_future or 0,
        }

    def delete(self, row: TrustedCertificate) -> None:
        self._session.execute(
            delete(TrustedCertificate).where(
                TrustedCertificate.id == row.id, TrustedCertificate.org_id == self._org_id
            )
        )
