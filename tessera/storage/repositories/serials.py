from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tessera.storage.models import IssuedSerial


class SerialRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def reserve(self, serial_hex: str) -> bool:
        try:
            with self._session.begin_nested():
                self._session.add(IssuedSerial(serial_number=serial_hex))
        except IntegrityError:
            return False
        return True
