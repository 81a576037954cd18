"""Long-lived objects one server process shares between requests."""

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tessera.config import Settings
from tessera.core.authority import Authority, random_serial
from tessera.core.clock import Clock, utc_now
from tessera.core.keystore import KeyEncryptor
from tessera.domains.audit import wiring as audit_wiring
from tessera.domains.audit.syslog import SyslogForwarder
from tessera.domains.identity.keycache import ApiKeyCache
from tessera.domains.issuance import PublicationBase
from tessera.domains.security.kek import kek_file
from tessera.jobs import Jobs
from tessera.storage.db import make_engine, session_factory
from tessera.storage.nonce_file import NonceFile
from tessera.storage.repositories.serials import SerialPool


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: KeyEncryptor
    authority: Authority
    publication: PublicationBase
    serials: SerialPool
    clock: Clock = utc_now
    jobs: Jobs = field(default_factory=Jobs)
    started_at: float = field(default_factory=time.time)
    api_keys: ApiKeyCache = field(default_factory=ApiKeyCache)
    audit_syslog: SyslogForwarder | None = None  # this process's syslog forwarder (audit)
    acme_nonces: NonceFile | None = None  # SQLite: ACME nonces beside the database


def read_kek(settings: Settings) -> bytes:
    """The primary KEK (unsealed with the master password when the file is protected)."""
    return kek_file(settings).load().primary


def load_keys(settings: Settings) -> KeyEncryptor:
    # The file is the source: the encryptor re-reads it when another process rotated it.
    source = kek_file(settings)
    return KeyEncryptor(source.load(), source)


def build_runtime(settings: Settings, clock: Clock = utc_now) -> Runtime:
    engine = make_engine(settings.db_url, background_checkpoints=True)  # see app.py
    sessions = session_factory(engine)
    # Audit: every session gets the chain key; committed rows go to syslog (docs/audit.md).
    audit_wiring.ensure_key(settings.data_dir)
    syslog = audit_wiring.install(sessions, audit_wiring.read_key(settings.data_dir))
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        audit_syslog=syslog,
        keys=load_keys(settings),
        authority=Authority(clock=clock),
        publication=PublicationBase(settings.http_base, settings.crl_delta_enabled),
        serials=SerialPool(sessions, random_serial),
        clock=clock,
        acme_nonces=_nonce_file(engine),
    )


def _nonce_file(engine: Engine) -> NonceFile | None:
    """On SQLite, ACME nonces are spent outside the database's write lock (nonce_file.py)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return NonceFile(f"{database}.acme-nonces")
