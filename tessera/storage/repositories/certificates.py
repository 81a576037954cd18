from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, or_, select
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate

EXPIRING_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class CertificateFilter:
    status: str | None = None  # active | expired | revoked | expiring
    ca_id: int | None = None
    search: str | None = None


class CertificateRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def _scoped(self) -> Select[Certificate]:
        return select(Certificate).where(Certificate.org_id == self._org_id)

    def add(self, cert: Certificate) -> Certificate:
        cert.org_id = self._org_id
        self._session.add(cert)
        self._session.flush()
        return cert

    def get(self, cert_id: int) -> Certificate | None:
        return self._session.scalar(self._scoped().where(Certificate.id == cert_id))

    def many(self, ids: Sequence[int]) -> Sequence[Certificate]:
        return self._session.scalars(self._scoped().where(Certificate.id.in_(ids))).all()

    def page(
        self, filters: CertificateFilter, now: datetime, page: int, per_page: int
    ) -> tuple[Sequence[Certificate], int]:
        query = self._filtered(filters, now)
        total = self._session.scalar(
            select(func.count()).select_from(query.with_only_columns(Certificate.id).subquery())
        )
        rows = self._session.scalars(
            query.order_by(Certificate.id.desc()).offset((page - 1) * per_page).limit(per_page)
        ).all()
        return rows, total or 0

    def _filtered(self, filters: CertificateFilter, now: datetime) -> Select[Certificate]:
        query = self._scoped()
        if filters.ca_id is not None:
            query = query.where(Certificate.ca_id == filters.ca_id)
        if filters.status:
            query = query.where(_status_clause(filters.status, now))
        if filters.search:
            pattern = f"%{_escape_like(filters.search.lower())}%"
            query = query.where(
                or_(
                    func.lower(Certificate.common_name).like(pattern, escape="\\"),
                    func.lower(Certificate.san_text).like(pattern, escape="\\"),
                )
            )
        return query

    def stats(self, now: datetime) -> dict[str, int]:
        revoked = Certificate.status == "revoked"
        expired = and_(~revoked, Certificate.not_after <= now)
        expiring = and_(
            ~revoked, Certificate.not_after > now, Certificate.not_after <= now + EXPIRING_WINDOW
        )
        query = select(
            func.count(),
            func.sum(case((revoked, 1), else_=0)),
            func.sum(case((expired, 1), else_=0)),
            func.sum(case((expiring, 1), else_=0)),
        ).where(Certificate.org_id == self._org_id)
        total, n_revoked, n_expired, n_expiring = self._session.execute(query).one()
        total = total or 0
        n_revoked, n_expired = n_revoked or 0, n_expired or 0
        return {
            "total": total,
            "active": total - n_revoked - n_expired,
            "expired": n_expired,
            "revoked": n_revoked,
            "expiring": n_expiring or 0,
        }

    def all(self, ca_id: int | None = None) -> Sequence[Certificate]:
        query = self._scoped()
        if ca_id is not None:
            query = query.where(Certificate.ca_id == ca_id)
        return self._session.scalars(query.order_by(Certificate.id)).all()

    def delete(self, cert: Certificate) -> None:
        self._session.execute(
            delete(Certificate).where(Certificate.id == cert.id, Certificate.org_id == self._org_id)
        )


def _status_clause(status: str, now: datetime) -> ColumnElement[bool]:
    revoked = Certificate.status == "revoked"
    if status == "revoked":
        return revoked
    if status == "expired":
        return and_(~revoked, Certificate.not_after <= now)
    if status == "expiring":
        return and_(
            ~revoked, Certificate.not_after > now, Certificate.not_after <= now + EXPIRING_WINDOW
        )
    return and_(~revoked, Certificate.not_after > now)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
