"""The log of certificate status changes that revocation publishers (CRL, OCSP) follow."""

from collections.abc import Sequence

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate, CertificateAuthority, StatusChange

# Built once: the OCSP responder of every process reads from here five times a second.
_AFTER = (
    select(StatusChange.id, StatusChange.ca_id, StatusChange.serial_number)
    .where(StatusChange.id > bindparam("last_id"))
    .order_by(StatusChange.id)
    .limit(bindparam("limit"))
)


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

    def record_ca(self, ca: CertificateAuthority) -> None:
        """A subordinate CA's certificate revoked: a change of its issuer's statuses. CAs are
        no inventory rows, so no certificate id (0) goes with it."""
        self._session.add(
            StatusChange(
                org_id=ca.org_id,
                ca_id=ca.parent_id,
                certificate_id=0,
                serial_number=ca.serial_number,
            )
        )

    def after(self, last_id: int, limit: int = 1000) -> Sequence[Row[int, int | None, str]]:
        """(id, ca_id, serial_number) of the changes after `last_id`, oldest first."""
        params = {"last_id": last_id, "limit": limit}
        # On the Connection: a Core read needs none of the session's ORM execution steps.
        return self._session.connection().execute(_AFTER, params).all()

    def latest_id(self) -> int:
        return self._session.scalar(select(func.max(StatusChange.id))) or 0
