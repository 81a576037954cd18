"""The background job that keeps the certificate tally folded (see storage/repositories/tally)."""

from sqlalchemy.orm import Session, sessionmaker

from tessera.storage.repositories.tally import TallyFolder

FOLD_SECONDS = 2.0


def fold_certificate_tally(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        TallyFolder(session).fold()
        session.commit()
