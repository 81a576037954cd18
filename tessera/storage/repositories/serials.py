from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tessera.storage.models import IssuedSerial


class SerialRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def reserve(self, serial_hex: str) -> bool:
        """Claim a serial in one statement: a clash inserts nothing and returns no row, so no
        savepoint is needed (both SQLite 3.35+ and PostgreSQL speak ON CONFLICT)."""
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(IssuedSerial)
            .values(serial_number=serial_hex, reserved_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["serial_number"])
            .returning(IssuedSerial.serial_number)
        )
        return self._session.execute(statement).first() is not None
