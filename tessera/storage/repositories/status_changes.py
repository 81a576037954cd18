"""The log of certificate status changes that revocation publishers (CRL, OCSP) follow."""

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate, StatusChange


class StatusChangeRepository:
    """Not scoped by organization: publishers serve every organization's CAs."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def record(self, cert: Certificate) -> None:
        self._session.add(
            StatusChange(
                org_id=cert.org_id,
                ca_id=cert.ca_id,
                certificate_id=cert.id,
                serial_number=cert.serial_number,
            )
        )

    def after(self, last_id: int, limit: int = 1000) -> Sequence[StatusChange]:
        query = (
            select(StatusChange)
            .where(StatusChange.id > last_id)
            .order_by(StatusChange.id)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def latest_id(self) -> int:
        return self._session.scalar(select(func.max(StatusChange.id))) or 0
