from typing import Any

from sqlalchemy.orm import Session

from tessera.storage.models import AuditLog
from tessera.storage.repositories.rows import insert_row


class AuditRepository:
    """Appends audit rows; each row carries the organization of the actor it describes."""

    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def add(self, **fields: Any) -> AuditLog:
        fields.setdefault("org_id", self._org_id)
        row = AuditLog(**fields)
        insert_row(self._session, row)
        return row
