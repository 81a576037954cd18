"""Long-lived objects one server process shares between requests."""

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tessera.config import Settings
from tessera.core.authority import Authority
from tessera.core.clock import Clock, utc_now
from tessera.core.keystore import KeyEncryptor
from tessera.domains.issuance import PublicationBase
from tessera.jobs import Jobs
from tessera.storage.db import make_engine, session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: KeyEncryptor
    authority: Authority
    publication: PublicationBase
    clock: Clock = utc_now
    jobs: Jobs = field(default_factory=Jobs)
    started_at: float = field(default_factory=time.time)


def read_kek(settings: Settings) -> bytes:
    return settings.kek_path.read_bytes().strip()


def build_runtime(settings: Settings, clock: Clock = utc_now) -> Runtime:
    engine = make_engine(settings.db_url)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        keys=KeyEncryptor([read_kek(settings)]),
        authority=Authority(clock=clock),
        publication=PublicationBase(settings.http_base),
        clock=clock,
    )
