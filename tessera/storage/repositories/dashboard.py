"""Dashboard figures: counts and per-day groups computed by the database, never row by row."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from tessera.storage.models import (
    ORIGIN_IMPORT,
    AuditLog,
    Base,
    Certificate,
    CertificateAuthority,
    CertificateRequestRow,
    User,
)
from tessera.storage.models_acme import AcmeAccount
from tessera.storage.repositories.certificates import REVOKED, valid_between


class DashboardRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def inventory_counts(self) -> dict[str, int]:
        """CAs, CSRs and pending CSRs in one round trip (three scalar subqueries)."""
        csrs = CertificateRequestRow
        query = select(
            self._count(CertificateAuthority, CertificateAuthority.org_id == self._org_id),
            self._count(csrs, csrs.org_id == self._org_id),
            self._count(csrs, csrs.org_id == self._org_id, csrs.status == "pending"),
        )
        cas, total_csrs, pending = self._session.execute(query).one()
        return {"total_cas": cas, "total_csrs": total_csrs, "pending_csrs": pending}

    def overview_counts(self) -> tuple[int, int, int]:
        """CAs, ACME accounts and active users in one round trip. ACME accounts of every
        status count (deactivated and revoked ones too), as `total_accounts` in the ACME
        statistics does."""
        query = select(
            self._count(CertificateAuthority, CertificateAuthority.org_id == self._org_id),
            self._count(AcmeAccount, AcmeAccount.org_id == self._org_id),
            self._count(User, User.org_id == self._org_id, User.active.is_(True)),
        )
        cas, acme_accounts, users = self._session.execute(query).one()
        return cas, acme_accounts, users

    def _count(self, model: type[Base], *where: ColumnElement[bool]) -> ColumnElement[int]:
        return select(func.count()).select_from(model).where(*where).scalar_subquery()

    def expiring(self, now: datetime, until: datetime, limit: int) -> Sequence[Certificate]:
        """Unrevoked certificates still valid at `now` that end by `until`, soonest first."""
        query = (
            select(Certificate)
            .where(Certificate.org_id == self._org_id, valid_between(now, until))
            .order_by(Certificate.not_after, Certificate.id)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def recent_cas(self, limit: int) -> Sequence[CertificateAuthority]:
        query = (
            select(CertificateAuthority)
            .where(CertificateAuthority.org_id == self._org_id)
            .order_by(CertificateAuthority.created_at.desc(), CertificateAuthority.id.desc())
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def activity(self, limit: int, offset: int) -> Sequence[AuditLog]:
        query = (
            select(AuditLog)
            .where(AuditLog.org_id == self._org_id)
            .order_by(AuditLog.timestamp.desc(), AuditLog.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def issued_per_day(self, since: datetime) -> dict[str, int]:
        """Certificates issued here per UTC day from `since` on (date() is the same function on
        SQLite, where it reads the stored text, and PostgreSQL, where it casts a timestamp).
        An imported certificate was issued elsewhere, whenever: importing a hundred is no
        spike of issuance."""
        return self._per_day(Certificate.created_at, since, Certificate.origin != ORIGIN_IMPORT)

    def revoked_per_day(self, since: datetime) -> dict[str, int]:
        return self._per_day(Certificate.revoked_at, since, Certificate.status == REVOKED)

    def _per_day(
        self, column: InstrumentedAttribute[Any], since: datetime, *extra: ColumnElement[bool]
    ) -> dict[str, int]:
        day = func.date(column)
        query = (
            select(day, func.count())
            .where(Certificate.org_id == self._org_id, column >= since, *extra)
            .group_by(day)
        )
        return {str(d)[:10]: n for d, n in self._session.execute(query)}

    def database_ok(self) -> bool:
        """A round trip to the database (no savepoint: on SQLite that would take the write
        lock). A failure here fails the request's transaction anyway, so nothing is lost."""
        try:
            self._session.execute(select(1))
        except SQLAlchemyError:
            return False
        return True
