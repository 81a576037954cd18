"""Exact certificate counts read from the tally (migration 0011) instead of counting rows.

A count is the sum of the organization's buckets (folded tally + pending deltas) plus, for
the filters that cut through a day ("valid now", "expiring within 30 days"), an exact range
count of that one day's certificates, which the (org_id, status, not_after) index answers.
"""

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import (
    CTE,
    ColumnElement,
    Subquery,
    delete,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate
from tessera.storage.models_tally import CertificateTally, CertificateTallyDelta

ISSUED, REVOKED = "active", "revoked"
ALL_CAS = -1  # the folded organization-wide buckets (deltas carry only their CA)
FOLD_BATCH = 100_000
_FOLD_LOCK = 0x7E55_7A11  # PostgreSQL advisory lock: one folder at a time


class TallyRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def stats(self, now: datetime, until: datetime, ca_id: int | None = None) -> dict[str, int]:
        """total, revoked, valid (issued, not expired) and expiring (valid, ending by
        `until`), exact, in one statement of primary-key range sums."""
        today, last_day = now.date(), until.date()
        if last_day <= today:
            raise ValueError("the expiring window must end after today")
        tomorrow = _day_start(today + timedelta(days=1))
        query = select(
            self._sum(ca_id),
            self._sum(ca_id, REVOKED),
            self._sum(ca_id, ISSUED, after=today),
            self._sum(ca_id, ISSUED, after=today, before=last_day),
            self._exact(ca_id, Certificate.not_after > now, Certificate.not_after < tomorrow),
            self._exact(
                ca_id,
                Certificate.not_after >= _day_start(last_day),
                Certificate.not_after <= until,
            ),
        )
        total, revoked, after_today, expiring_middle, rest_of_today, last_day_part = (
            self._session.execute(query).one()
        )
        return {
            "total": int(total),
            "revoked": int(revoked),
            "valid": int(after_today) + rest_of_today,
            "expiring": int(expiring_middle) + rest_of_today + last_day_part,
        }

    def count(self, now: datetime, until: datetime, status: str | None, ca_id: int | None) -> int:
        figures = self.stats(now, until, ca_id)
        if status is None:
            return figures["total"]
        if status == "expired":
            return figures["total"] - figures["revoked"] - figures["valid"]
        return figures[{"active": "valid"}.get(status, status)]

    def _sum(
        self,
        ca_id: int | None,
        status: str | None = None,
        after: date | None = None,
        before: date | None = None,
    ) -> ColumnElement[int]:
        """Folded buckets (the organization-wide ones, ca_key ALL_CAS, unless a CA is asked
        for: one primary-key range either way) plus the pending deltas."""
        parts = []
        for model in (CertificateTally, CertificateTallyDelta):
            where = [model.org_id == self._org_id]
            if model is CertificateTally or ca_id is not None:
                where.append(model.ca_key == (ALL_CAS if ca_id is None else ca_id))
            if status is not None:
                where.append(model.status == status)
            if after is not None:
                where.append(model.expiry_day > after)
            if before is not None:
                where.append(model.expiry_day < before)
            total = select(func.sum(model.n)).where(*where).scalar_subquery()
            parts.append(func.coalesce(total, 0))
        return parts[0] + parts[1]

    def _exact(self, ca_id: int | None, *bounds: ColumnElement[bool]) -> ColumnElement[int]:
        """Issued certificates whose not_after lies within `bounds` (part of one day)."""
        query = select(func.count()).where(
            Certificate.org_id == self._org_id, Certificate.status == ISSUED, *bounds
        )
        if ca_id is not None:
            query = query.where(Certificate.ca_id == ca_id)
        return query.scalar_subquery()


class TallyFolder:
    """Moves pending deltas into the tally; run by a background job in every process."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def fold(self) -> None:
        """Fold up to FOLD_BATCH pending deltas into the tally."""
        if self._session.get_bind().dialect.name == "postgresql":
            self._fold_postgresql()
        else:
            self._fold_sqlite()

    def _fold_postgresql(self) -> None:
        # Two folders could upsert the same buckets in different orders and deadlock.
        if not self._session.scalar(select(func.pg_try_advisory_xact_lock(_FOLD_LOCK))):
            return
        delta = CertificateTallyDelta
        # DELETE ... RETURNING folds exactly the deltas it removes: a delta whose transaction
        # commits meanwhile is neither removed nor counted, and waits for the next fold.
        oldest = select(delta.id).order_by(delta.id).limit(FOLD_BATCH).scalar_subquery()
        moved = (
            delete(delta)
            .where(delta.id.in_(oldest))
            .returning(delta.org_id, delta.ca_key, delta.status, delta.expiry_day, delta.n)
            .cte("moved")
        )
        self._session.execute(_upsert(postgresql.insert(CertificateTally), moved))

    def _fold_sqlite(self) -> None:
        # SQLite has one writer at a time, so the insert and the delete see the same rows.
        delta = CertificateTallyDelta
        upto = self._session.scalar(
            select(delta.id).order_by(delta.id).offset(FOLD_BATCH - 1).limit(1)
        ) or self._session.scalar(select(func.max(delta.id)))
        if upto is None:
            return
        pending = select(delta).where(delta.id <= upto).subquery()
        self._session.execute(_upsert(sqlite.insert(CertificateTally), pending))
        self._session.execute(delete(delta).where(delta.id <= upto))


def _upsert(
    insert: postgresql.Insert | sqlite.Insert, deltas: Subquery | CTE
) -> postgresql.Insert | sqlite.Insert:
    """Add the deltas, summed per CA bucket and per organization-wide bucket, to the tally
    (in key order, so concurrent upserts lock buckets in one order)."""
    day = [deltas.c.status, deltas.c.expiry_day]
    per_ca = select(deltas.c.org_id, deltas.c.ca_key, *day, func.sum(deltas.c.n).label("n"))
    per_ca = per_ca.group_by(deltas.c.org_id, deltas.c.ca_key, *day)
    everywhere = select(deltas.c.org_id, literal(ALL_CAS), *day, func.sum(deltas.c.n))
    everywhere = everywhere.group_by(deltas.c.org_id, *day)
    both = union_all(per_ca, everywhere).subquery("summed")
    key = [both.c.org_id, both.c.ca_key, both.c.status, both.c.expiry_day]
    # `WHERE true`: SQLite needs it to parse INSERT ... SELECT ... ON CONFLICT.
    summed = select(*key, both.c.n).where(true()).order_by(*key)
    statement = insert.from_select(["org_id", "ca_key", "status", "expiry_day", "n"], summed)
    return statement.on_conflict_do_update(
        index_elements=["org_id", "ca_key", "status", "expiry_day"],
        set_={"n": CertificateTally.n + statement.excluded.n},
    )


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
