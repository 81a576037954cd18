from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tessera.storage.models import Certificate, CompromisedKey
from tessera.storage.repositories.certificate_search import CertificateSearchRepository
from tessera.storage.repositories.rows import insert_rows, update_if
from tessera.storage.repositories.tally import TallyRepository

EXPIRING_WINDOW = timedelta(days=30)
# The stored status is one of two values; "expired" and "expiring" are derived from not_after.
# Filters compare with equality so that the (org_id, status, ...) indexes serve them.
ISSUED = "active"
REVOKED = "revoked"
# What a deletion must know of the row as it went (whether to retain its CRL entry).
_DELETED_STATE = (
    Certificate.ca_id,
    Certificate.status,
    Certificate.revoked_at,
    Certificate.revocation_reason,
    Certificate.invalidity_date,
)


@dataclass(frozen=True)
class CertificateFilter:
    status: str | None = None  # active | expired | revoked | expiring
    ca_id: int | None = None
    search: str | None = None


_REPORT_KEY = {
    postgres: (postgresql.insert if postgres else sqlite.insert)(
        CompromisedKey
    ).on_conflict_do_nothing(index_elements=["org_id", "spki_sha256"])
    for postgres in (False, True)
}

# Asked on every issuance: a prebuilt Core statement on the session's connection costs a
# fraction of `Session.get`'s ORM load (11 % of an issuance's GIL time under bench/issue.py).
_KEY_COMPROMISED = (
    select(CompromisedKey.spki_sha256)
    .where(
        CompromisedKey.org_id == bindparam("org_id"),
        CompromisedKey.spki_sha256 == bindparam("spki_sha256"),
    )
    .limit(1)
)


class CertificateRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id
        self._tally = TallyRepository(session, org_id)
        self._search = CertificateSearchRepository(session, org_id)

    def _scoped(self) -> Select[Certificate]:
        return select(Certificate).where(Certificate.org_id == self._org_id)

    def add(self, cert: Certificate) -> Certificate:
        self.add_many([cert])
        return cert

    def add_many(self, certs: Sequence[Certificate]) -> None:
        """Core INSERTs, one for all of them: this runs on every issuance, and a batch of
        issuances writes its certificates together (see rows.insert_rows)."""
        for cert in certs:
            cert.org_id = self._org_id
        insert_rows(self._session, certs)

    def get(self, cert_id: int) -> Certificate | None:
        return self._session.scalar(self._scoped().where(Certificate.id == cert_id))

    def unlinked_issued_by(self, issuer: str) -> Sequence[Certificate]:
        """Certificates filed under no CA whose issuer is named `issuer`."""
        query = self._scoped().where(Certificate.ca_id.is_(None), Certificate.issuer == issuer)
        return self._session.scalars(query).all()

    def many(self, ids: Sequence[int]) -> Sequence[Certificate]:
        return self._session.scalars(self._scoped().where(Certificate.id.in_(ids))).all()

    def many_newest_first(self, ids: Sequence[int]) -> Sequence[Certificate]:
        query = self._scoped().where(Certificate.id.in_(ids)).order_by(Certificate.id.desc())
        return self._session.scalars(query).all() if ids else []

    def page(
        self, filters: CertificateFilter, now: datetime, page: int, per_page: int
    ) -> tuple[Sequence[Certificate], int]:
        """Newest first. The page's ids are picked from an index (or the search copy) alone,
        skipping `offset` entries without reading rows; then only those rows are loaded."""
        matching = self._matching_ids(filters, now)
        # The ids are fetched first: inside an IN, a planner without statistics yet (a new
        # table) may run the LIMIT subquery again for every certificate row it walks.
        ids = self._session.scalars(matching.offset((page - 1) * per_page).limit(per_page)).all()
        return self.many_newest_first(ids), self._total(filters, now, matching)

    def _matching_ids(self, filters: CertificateFilter, now: datetime) -> Select[int]:
        if filters.search and filters == CertificateFilter(search=filters.search):
            return self._search.ids(filters.search)  # the narrow copy alone, no certificate row
        matching = self._filtered(filters, now).with_only_columns(Certificate.id)
        if filters == CertificateFilter(status="expiring"):
            # The expiring window is a short range of not_after: read it whole and sort it,
            # rather than walk every unrevoked row in id order looking for it. PostgreSQL's
            # statistics tell it so (it inlines this CTE); SQLite keeps none, so it is told.
            window = matching.cte("expiring_ids").prefix_with("MATERIALIZED", dialect="sqlite")
            matching = select(window.c.id)
        return matching.order_by(matching.selected_columns[0].desc())

    def _total(self, filters: CertificateFilter, now: datetime, matching: Select[int]) -> int:
        """The exact number of matches. Without a search term it comes from the tally
        (bucket sums, not row counts); a search counts its matches."""
        if not filters.search:
            until = now + EXPIRING_WINDOW
            return self._tally.count(now, until, filters.status, filters.ca_id)
        counted = select(func.count()).select_from(matching.order_by(None).subquery())
        return self._session.scalar(counted) or 0

    def _filtered(self, filters: CertificateFilter, now: datetime) -> Select[Certificate]:
        query = self._scoped()
        if filters.ca_id is not None:
            query = query.where(Certificate.ca_id == filters.ca_id)
        if filters.status:
            query = query.where(_status_clause(filters.status, now))
        if filters.search:
            query = query.where(Certificate.id.in_(self._search.ids(filters.search).order_by(None)))
        return query

    def stats(self, now: datetime) -> dict[str, int]:
        figures = self._tally.stats(now, now + EXPIRING_WINDOW)
        return {
            "total": figures["total"],
            "active": figures["valid"],
            "expired": figures["total"] - figures["revoked"] - figures["valid"],
            "revoked": figures["revoked"],
            "expiring": figures["expiring"],
        }

    def total(self) -> int:
        return self.stats(datetime.now(UTC))["total"]

    def all(self, ca_id: int | None = None) -> Sequence[Certificate]:
        query = self._scoped()
        if ca_id is not None:
            query = query.where(Certificate.ca_id == ca_id)
        return self._session.scalars(query.order_by(Certificate.id)).all()

    def delete(self, cert: Certificate) -> bool:
        """Delete the row, and take into `cert` its status as deleted (on PostgreSQL the
        committed row, after waiting for a change in progress): False when it was gone."""
        deleted = self._session.execute(
            delete(Certificate)
            .where(Certificate.id == cert.id, Certificate.org_id == self._org_id)
            .returning(*_DELETED_STATE)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if deleted is None:
            return False
        for column, value in zip(_DELETED_STATE, deleted, strict=True):
            set_committed_value(cert, column.key, value)
        return True

    def by_fingerprint(self, fingerprint_sha256: str) -> Certificate | None:
        """The certificate with this SHA-256 fingerprint (lower-case hex, no colons)."""
        query = self._scoped().where(Certificate.fingerprint_sha256 == fingerprint_sha256.lower())
        return self._session.scalar(query.order_by(Certificate.id).limit(1))

    def with_key_type(self, algorithm: str, size: int) -> Iterator[tuple[int, str, bool]]:
        """(id, PEM, whether its key is stored) of the certificates whose key is of this type,
        newest first, read in batches: a key alone can be matched only by comparing public
        keys (no column holds the certificate's SPKI), and the type narrows the rows read."""
        query = (
            select(
                Certificate.id,
                Certificate.certificate_pem,
                Certificate.encrypted_private_key.is_not(None),
            )
            .where(
                Certificate.org_id == self._org_id,
                Certificate.key_algorithm == algorithm,
                Certificate.key_size == size,
            )
            .order_by(Certificate.id.desc())
            .execution_options(yield_per=500)
        )
        yield from self._session.execute(query).tuples()

    # keys revoked as compromised (keyCompromise)
    def report_compromised_key(self, spki_sha256: str, certificate_id: int) -> None:
        """Idempotent: the key's first report stays (two revocations may race to report)."""
        postgres = self._session.get_bind().dialect.name == "postgresql"
        values = {"org_id": self._org_id, "spki_sha256": spki_sha256}
        self._session.execute(_REPORT_KEY[postgres].values(**values, certificate_id=certificate_id))

    def change_status(self, cert: Certificate, **values: Any) -> bool:
        """Revoke, hold or release (`values`) in one statement, only if the certificate's
        status and reason are still as this unit of work read them: of two requests changing
        it at once (a release racing a permanent revocation), one wins and the other is told,
        instead of the later silently undoing the earlier."""
        reason = Certificate.revocation_reason
        return update_if(
            self._session,
            cert,
            [
                Certificate.org_id == self._org_id,
                Certificate.status == cert.status,
                reason.is_(None)
                if cert.revocation_reason is None
                else reason == cert.revocation_reason,
            ],
            **values,
        )

    def key_compromised(self, spki_sha256: str) -> bool:
        params = {"org_id": self._org_id, "spki_sha256": spki_sha256}
        return self._session.connection().execute(_KEY_COMPROMISED, params).first() is not None


def _status_clause(status: str, now: datetime) -> ColumnElement[bool]:
    if status == "revoked":
        return Certificate.status == REVOKED
    issued = Certificate.status == ISSUED
    if status == "expired":
        return and_(issued, Certificate.not_after <= now)
    if status == "expiring":
        return valid_between(now, now + EXPIRING_WINDOW)
    return and_(issued, Certificate.not_after > now)


def valid_between(now: datetime, until: datetime) -> ColumnElement[bool]:
    """Not revoked, valid at `now`, and ending by `until`."""
    return and_(
        Certificate.status == ISSUED, Certificate.not_after > now, Certificate.not_after <= until
    )
