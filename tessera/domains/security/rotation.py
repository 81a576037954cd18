"""KEK rotation: every stored key re-encrypted under a new KEK, in batches, resumable.

1. The request (start): the new KEK is put in front of the keyring file, the old keys stay
   behind it, and a `kek_rotations` row records the plan. From then on every token, old or
   new, is readable by any process that reads the file.
2. Grace: other processes notice the new file (they stat it before each encryption, and
   re-read it when a token does not open), so after a few seconds nobody writes under an
   old key any more.
3. Sweep (the background job, in whichever process claims the row): each key column, in id
   order, `batch` rows per transaction, each token rewritten with compare-and-set; the last
   id done is committed with the batch, so after a crash the sweep resumes there.
4. Verify: every token must open with the new key alone; stragglers are rotated again.
5. The TLS key file is re-encrypted, then the old KEKs are dropped from the file.

Until step 5 every key is readable with the file as it is, whatever step a crash stops.
"""

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tessera.config import Settings
from tessera.core.clock import Clock
from tessera.core.errors import Conflict, InvalidInput
from tessera.core.keystore import (
    KeyEncryptor,
    MasterPasswordError,
    check_kek,
    fingerprint,
    parse_keyring,
)
from tessera.domains.actor import Actor, system_actor
from tessera.domains.audit import record
from tessera.domains.security.kek import KekFile
from tessera.domains.security.tls import rewrap_tls_key
from tessera.storage.models_security import KekRotation
from tessera.storage.repositories.audit import AuditRepository
from tessera.storage.repositories.identity import OrganizationRepository
from tessera.storage.repositories.security import FERNET_PREFIX, KeyColumn, SecurityRepository

log = logging.getLogger("tessera.security.rotation")
JOB = "kek-rotation"
KEK_STATE = "kek"


def stale_after(settings: Settings) -> timedelta:
    # A claim not refreshed for this long belongs to a dead process.
    return timedelta(seconds=max(10.0, settings.kek_rotation_grace * 2 + 5))


def start(
    session: Session,
    keys: KeyEncryptor,
    source: KekFile,
    actor: Actor,
    new_key: str | None,
    moment: datetime,
) -> KekRotation:
    repo = SecurityRepository(session)
    if repo.running_rotation() is not None:
        raise Conflict("a key rotation is already running; see secrets-status")
    sealed = source.sealed()  # the file decides: protection may be newer than this process
    if sealed and source.password is None:
        raise Conflict(
            "the KEK is sealed with a master password this server was not started with; "
            "restart with TESSERA_MASTER_PASSWORD so every process can read the new key"
        )
    if sealed and not _opens(source):
        # Another process changed the master password since this one started (disable,
        # then enable encryption): a rotation here would seal the file with the old one.
        raise Conflict(
            "the KEK file is sealed with another master password than this server process "
            "holds: restart every process with the current TESSERA_MASTER_PASSWORD"
        )
    new = check_kek(new_key) if new_key else KeyEncryptor.new_kek()
    row = _running_row(repo, new, actor, moment)
    # Read only now: the row is the one running rotation (the unique index parts concurrent
    # starts), so no other start writes the file until this transaction ends, and the ring
    # read here holds every key written before.
    keys.refresh(force=True)
    ring = keys.ring
    if new in ring.keys:
        raise InvalidInput("new_key is already a key-encryption key of this server")
    row.old_fingerprints = [fingerprint(k) for k in ring.keys]
    # Written before the commit: if the commit fails the file merely holds one more key, and
    # every token stays readable.
    source.write(ring.with_primary(new), source.password if sealed else None)
    keys.refresh(force=True)
    details = {"rotation_id": row.id, "new_kek": row.new_fingerprint}
    record(
        AuditRepository(session, actor.org_id),
        actor,
        "security.rotate_secrets",
        "kek",
        row.id,
        details,
    )
    return row


def _opens(source: KekFile) -> bool:
    try:
        parse_keyring(source.path.read_bytes(), source.password)
    except MasterPasswordError:
        return False
    return True


def _running_row(
    repo: SecurityRepository, new: bytes, actor: Actor, moment: datetime
) -> KekRotation:
    try:
        return repo.add_rotation(
            KekRotation(
                status="running",
                new_fingerprint=fingerprint(new),
                old_fingerprints=[],
                progress={},
                rotated=0,
                requested_by=actor.username,
                started_at=moment,
            )
        )
    except IntegrityError as exc:  # another request started one after our check
        raise Conflict("a key rotation is already running; see secrets-status") from exc


class Rotator:
    """The background job's side: claims a running rotation and carries it to the end."""

    def __init__(
        self, sessions: Any, keys: KeyEncryptor, source: KekFile, settings: Settings, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._source = source
        self._settings = settings
        self._clock = clock

    def run(self) -> None:
        row = self._claim()
        if row is None:
            return
        try:
            self._carry_out(row)
        except Exception as exc:
            # Left "running": the next turn (here or in another process) resumes it. Nothing
            # is lost, since the file still holds every key.
            log.exception("key rotation %s stopped; it will resume", row.id)
            self._note_error(row.id, f"{type(exc).__name__}: {exc}")

    def _claim(self) -> KekRotation | None:
        with self._sessions() as session:
            repo = SecurityRepository(session)
            row = repo.running_rotation()
            if row is None:
                return None
            now = self._clock()
            if not repo.claim_rotation(row.id, now, now - stale_after(self._settings)):
                session.rollback()
                return None
            session.commit()
            return row

    def _carry_out(self, row: KekRotation) -> None:
        wait = (row.started_at + timedelta(seconds=self._settings.kek_rotation_grace)) - (
            self._clock()
        )
        if wait.total_seconds() > 0:
            time.sleep(wait.total_seconds())
        self._keys.refresh(force=True)
        if fingerprint(self._keys.ring.primary) != row.new_fingerprint:
            self._finish(row.id, "failed", "the KEK file no longer has this rotation's key first")
            return
        with self._sessions() as session:
            columns = [
                c for c in SecurityRepository(session).key_columns() if c.encrypted_by_convention
            ]
        for key_column in columns:
            self._sweep(row.id, key_column)
        for key_column in columns:
            self._verify(key_column)
        tls_key = self._settings.tls_dir / "server.key"
        if tls_key.exists() and not rewrap_tls_key(tls_key, self._keys.ring):
            log.warning("the TLS key file opens with no KEK; a new one is issued at next start")
        sealed = self._source.sealed()
        if sealed and self._source.password is None:
            raise RuntimeError("the KEK file is sealed and this process has no master password")
        self._source.write(
            self._keys.ring.only_primary(), self._source.password if sealed else None
        )
        self._keys.refresh(force=True)
        self._finish(row.id, "finished", None)

    def _sweep(self, rotation_id: int, key_column: KeyColumn) -> None:
        batch = self._settings.kek_rotation_batch
        while True:
            with self._sessions() as session:
                repo = SecurityRepository(session)
                row = repo.rotation(rotation_id)
                if row is None or row.status != "running":
                    raise RuntimeError("the rotation was taken over or ended elsewhere")
                last = int(row.progress.get(key_column.name, 0))
                found = repo.key_batch(key_column, last, batch)
                if not found:
                    return
                done = sum(self._rotate_one(repo, key_column, i, v) for i, v in found)
                row.progress = {**row.progress, key_column.name: found[-1][0]}
                row.rotated += done
                row.heartbeat_at = self._clock()
                session.commit()

    def _verify(self, key_column: KeyColumn) -> None:
        """Tokens written under an old key after the sweep passed their row (a slow request
        in a process that had not seen the new file yet) are rotated now."""
        last = 0
        while True:
            with self._sessions() as session:
                repo = SecurityRepository(session)
                found = repo.key_batch(key_column, last, self._settings.kek_rotation_batch)
                if not found:
                    return
                for row_id, value in found:
                    if not self._keys.under_primary(value):
                        self._rotate_one(repo, key_column, row_id, value)
                last = found[-1][0]
                session.commit()

    def _rotate_one(
        self, repo: SecurityRepository, key_column: KeyColumn, row_id: int, value: str | None
    ) -> int:
        for _ in range(5):
            if value is None:
                return 0
            new = self._reencrypt(key_column, row_id, value)
            if new is None:
                return 0
            if repo.swap_key(key_column, row_id, value, new):
                return 1
            value = repo.key_value(key_column, row_id)  # changed meanwhile: read it again
        raise RuntimeError(f"{key_column.name} row {row_id} keeps changing; retrying later")

    def _reencrypt(self, key_column: KeyColumn, row_id: int, value: str) -> str | None:
        if value.startswith(FERNET_PREFIX):
            if not self._keys.readable(value):
                # Already unreadable before this rotation (another data directory's key?):
                # left as it is, and reported by encryption-status.
                log.error("%s row %s does not open with any KEK", key_column.name, row_id)
                return None
            return self._keys.rotate(value)
        if key_column.holds_private_keys and value.lstrip().startswith("-----BEGIN"):
            # A key some path stored in the clear: sealed now, which is what it should be.
            key = serialization.load_pem_private_key(value.encode(), password=None)
            return self._keys.encrypt(key)  # type: ignore[arg-type]
        return None

    def _note_error(self, rotation_id: int, message: str) -> None:
        with self._sessions() as session:
            row = SecurityRepository(session).rotation(rotation_id)
            if row is not None:
                row.error = message[:2000]
                row.heartbeat_at = None  # let any process resume it on its next turn
                session.commit()

    def _finish(self, rotation_id: int, status: str, error: str | None) -> None:
        with self._sessions() as session:
            repo = SecurityRepository(session)
            row = repo.rotation(rotation_id)
            if row is None:
                return
            now = self._clock()
            row.status, row.error, row.finished_at = status, error, now
            if status == "finished":
                state = repo.setting(KEK_STATE)
                version = int(state.value.get("version", 1)) + 1 if state else 2
                repo.put_setting(
                    KEK_STATE, {"version": version, "rotated_at": now.isoformat()}, now
                )
            org = OrganizationRepository(session).default()
            if org is not None:
                details = {"rotation_id": row.id, "rotated": row.rotated, "error": error}
                record(
                    AuditRepository(session, org.id),
                    system_actor(org.id),
                    f"security.rotate_secrets_{status}",
                    "kek",
                    row.id,
                    details,
                    success=status == "finished",
                )
            session.commit()
