"""Per-process wiring of the audit log: the chain key (a file beside the KEK, never in the
database) and the after-commit hand-off of new rows to syslog."""

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from tessera.domains.audit.syslog import SyslogConfig, SyslogForwarder
from tessera.storage.repositories.audit import APPENDED_INFO, KEY_INFO, AuditSettingsRepository

log = logging.getLogger("tessera.audit")

KEY_FILE = "audit.key"
FORWARDER_INFO = "tessera_audit_forwarder"
SYSLOG_SETTING = "syslog"
RETENTION_SETTING = "retention"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def ensure_key(data_dir: Path) -> None:
    """Create the chain key once (32 random bytes, hex, mode 0600), like the KEK."""
    path = key_path(data_dir)
    if path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node or process made it first
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")


def read_key(data_dir: Path) -> bytes:
    text = key_path(data_dir).read_text().strip()
    key = bytes.fromhex(text)
    if len(key) < 32:
        raise RuntimeError(f"{key_path(data_dir)} must hold at least 32 bytes as hex")
    return key


def install(sessions: sessionmaker[Session], key: bytes) -> SyslogForwarder:
    """Give every session of this process the chain key, and forward committed rows."""

    def load_config() -> SyslogConfig:
        with sessions() as session:
            return SyslogConfig.from_stored(AuditSettingsRepository(session).get(SYSLOG_SETTING))

    forwarder = SyslogForwarder(load_config)
    sessions.configure(info={KEY_INFO: key, FORWARDER_INFO: forwarder})
    event.listen(sessions, "after_commit", _after_commit)
    event.listen(sessions, "after_rollback", _after_rollback)
    return forwarder


def _after_commit(session: Session) -> None:
    appended = session.info.pop(APPENDED_INFO, None)
    forwarder = session.info.get(FORWARDER_INFO)
    if not appended or forwarder is None:
        return
    try:
        forwarder.submit([event_of(row) for row in appended])
    except Exception:
        log.exception("could not queue audit events for syslog")


def _after_rollback(session: Session) -> None:
    session.info.pop(APPENDED_INFO, None)


def event_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A syslog event from an appended row (`AuditRepository.add_many`'s values by column)."""
    return {
        "id": row["id"],
        "seq": row["chain_seq"],
        "org_id": row["org_id"],
        "timestamp": row["timestamp"],
        "username": row["username"],
        "actor_type": row["actor_type"],
        "action": row["action"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "success": row["success"],
        "ip_address": row["ip_address"],
        "request_id": row["request_id"],
        "details": row["details"],
    }
