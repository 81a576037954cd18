"""Global search: a few matches per kind of resource, each query scoped to the organization."""

from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from tessera.storage.models import Certificate, CertificateAuthority, CertificateRequestRow, User
from tessera.storage.repositories.certificate_search import (
    CertificateSearchRepository,
    like_pattern,
)
from tessera.storage.repositories.certificates import CertificateRepository


class SearchRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def certificates(
        self, term: str, limit: int, serial: str | None = None
    ) -> Sequence[Certificate]:
        """Common name or SAN contains the term (the inventory's own substring index), or the
        serial number is `serial` (indexed): the serial's kept when more than `limit` match."""
        ids: list[int] = []
        if serial is not None:
            same_serial = (
                select(Certificate.id)
                .where(Certificate.org_id == self._org_id, Certificate.serial_number == serial)
                .order_by(Certificate.id.desc())
                .limit(limit)
            )
            ids += self._session.scalars(same_serial).all()
        newest = CertificateSearchRepository(self._session, self._org_id).ids(term).limit(limit)
        ids += self._session.scalars(newest).all()  # first: see CertificateRepository.page
        ids = list(dict.fromkeys(ids))[:limit]
        return CertificateRepository(self._session, self._org_id).many_newest_first(ids)

    def cas(
        self, term: str, limit: int, serial: str | None = None
    ) -> Sequence[CertificateAuthority]:
        matches = _any_contains(term, CertificateAuthority.name, CertificateAuthority.common_name)
        if serial is not None:
            matches = or_(matches, CertificateAuthority.serial_number == serial)
        query = (
            select(CertificateAuthority)
            .where(CertificateAuthority.org_id == self._org_id, matches)
            .order_by(CertificateAuthority.id.desc())
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def csrs(self, term: str, limit: int) -> Sequence[CertificateRequestRow]:
        query = (
            select(CertificateRequestRow)
            .where(
                CertificateRequestRow.org_id == self._org_id,
                _any_contains(term, CertificateRequestRow.name, CertificateRequestRow.common_name),
            )
            .order_by(CertificateRequestRow.id.desc())
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def users(self, term: str, limit: int) -> Sequence[User]:
        query = (
            select(User)
            .where(
                User.org_id == self._org_id,
                _any_contains(term, User.username, User.email, User.full_name),
            )
            .order_by(User.username)
            .limit(limit)
        )
        return self._session.scalars(query).all()


def _any_contains(
    term: str, *columns: InstrumentedAttribute[str] | InstrumentedAttribute[str | None]
) -> ColumnElement[bool]:
    """Case-insensitive substring match on any of the columns; LIKE wildcards in the term are
    matched literally. These tables stay small (hundreds of rows), so a scan is fine."""
    pattern = like_pattern(term)
    return or_(*(func.lower(c).like(pattern, escape="\\") for c in columns))
