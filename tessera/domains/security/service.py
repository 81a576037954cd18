"""System → Security: encryption status, master password, key generation, rotation status.
Services never commit; each change writes its audit row in the caller's transaction."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tessera.config import Settings
from tessera.core.clock import wire_time
from tessera.core.errors import Conflict, InvalidInput
from tessera.core.keystore import (
    MIN_MASTER_PASSWORD,
    KeyEncryptor,
    MasterPasswordError,
    fingerprint,
    parse_keyring,
)
from tessera.domains.actor import Actor
from tessera.domains.audit import record
from tessera.domains.security.kek import KekFile
from tessera.domains.security.rotation import KEK_STATE
from tessera.storage.models_security import KekRotation
from tessera.storage.repositories.audit import AuditRepository
from tessera.storage.repositories.security import SecurityRepository


class WrongMasterPassword(InvalidInput):
    """Its audit row must survive the rollback: the endpoint commits before answering."""


# Anomaly rules: (name, audit action prefixes, success, grouped by, threshold in the window).
ANOMALY_RULES: tuple[tuple[str, tuple[str, ...], bool, str, int], ...] = (
    ("failed_logins_from_address", ("auth.login",), False, "ip", 5),
    ("failed_logins_for_user", ("auth.login",), False, "user", 5),
    ("failed_password_resets", ("auth.password_reset",), False, "ip", 5),
    ("private_key_exports", ("certificate.export_key",), True, "user", 20),
    ("failed_master_password", ("security.master_password",), False, "user", 1),
)


class SecurityService:
    def __init__(
        self,
        session: Session,
        keys: KeyEncryptor,
        source: KekFile,
        settings: Settings,
        actor: Actor,
    ) -> None:
        self._session = session
        self._repo = SecurityRepository(session)
        self._keys = keys
        self._source = source
        self._settings = settings
        self._actor = actor

    def _audit(
        self, action: str, details: dict[str, Any] | None = None, success: bool = True
    ) -> None:
        repo = AuditRepository(self._session, self._actor.org_id)
        resource = fingerprint(self._keys.ring.primary)
        record(repo, self._actor, action, "kek", resource, details, success=success)

    def encryption_status(self) -> dict[str, Any]:
        """Every stored key column, counted: the goal is `unencrypted == 0`."""
        columns = []
        encrypted = unencrypted = 0
        for key_column in self._repo.key_columns():
            counts = self._repo.key_counts(key_column)
            if key_column.holds_private_keys:
                encrypted += counts.encrypted
                unencrypted += counts.unencrypted
            columns.append(
                {
                    "table": key_column.table,
                    "column": key_column.column,
                    "private_keys": key_column.holds_private_keys,
                    "encrypted": counts.encrypted,
                    "unencrypted": counts.unencrypted,
                }
            )
        self._keys.refresh()
        ring = self._keys.ring
        sealed = self._source.sealed()
        return {
            "enabled": True,
            "version": self._version(),
            "algorithm": "Fernet (AES-128-CBC + HMAC-SHA256)",
            "kek_fingerprint": fingerprint(ring.primary),
            "master_password": sealed,
            "kdf": "argon2id" if sealed else None,
            "encrypted_keys": encrypted,
            "unencrypted_keys": unencrypted,
            "columns": columns,
        }

    def _version(self) -> int:
        state = self._repo.setting(KEK_STATE)
        return int(state.value.get("version", 1)) if state else 1

    def protect(self, password: str) -> dict[str, Any]:
        """Seal the KEK file with a master password (argon2id). The keys stay as they are:
        only the file that protects them changes."""
        if len(password) < MIN_MASTER_PASSWORD:
            raise InvalidInput(f"master_password needs at least {MIN_MASTER_PASSWORD} characters")
        self._no_rotation()
        self._keys.refresh(force=True)
        ring = self._keys.ring
        if ring.protected or self._source.sealed():
            raise Conflict("the key-encryption key is already protected by a master password")
        self._source.write(ring, password)
        self._keys.refresh(force=True)
        self._audit("security.master_password_enabled")
        return {
            "enabled": True,
            "master_password": True,
            "kdf": "argon2id",
            "restart": "start the server with TESSERA_MASTER_PASSWORD or "
            "TESSERA_MASTER_PASSWORD_FILE from now on",
        }

    def unprotect(self, password: str) -> dict[str, Any]:
        """Remove the master password. Keys stay encrypted with the KEK: encryption at rest
        cannot be turned off in Tessera."""
        self._no_rotation()
        if not self._source.sealed():
            raise Conflict("the key-encryption key has no master password")
        try:
            ring = parse_keyring(self._source.path.read_bytes(), password)
        except MasterPasswordError as exc:
            self._audit("security.master_password_disable_failed", success=False)
            raise WrongMasterPassword("wrong master password") from exc
        self._source.write(ring, None)
        self._keys.refresh(force=True)
        self._audit("security.master_password_disabled")
        return {
            "enabled": True,
            "master_password": False,
            "kdf": None,
            "message": "private keys remain encrypted with the key-encryption key",
        }

    def _no_rotation(self) -> None:
        if self._repo.running_rotation() is not None:
            raise Conflict("a key rotation is running; try again when it has finished")

    def generate_key(self) -> dict[str, Any]:
        """A fresh KEK for `rotate-secrets` (the caller may keep a copy); not stored."""
        key = KeyEncryptor.new_kek().decode()
        return {"key": key, "fingerprint": fingerprint(key.encode())}

    def secrets_status(self, now: datetime) -> dict[str, Any]:
        # The latest first: read the other way round, a rotation finishing between the two
        # reads showed as finished with no rotated_at (each PostgreSQL statement sees what
        # committed before it).
        latest = self._repo.latest_rotation()
        if latest is not None and latest.status == "finished":
            finished: KekRotation | None = latest
        else:
            finished = self._repo.latest_rotation("finished")
        rotated_at = finished.finished_at if finished else None
        base = rotated_at or self._first_seen()
        next_rotation = (
            base + timedelta(days=self._settings.secrets_rotation_days) if base else None
        )
        self._keys.refresh()
        return {
            "rotated_at": _plain(rotated_at),
            "next_rotation": _plain(next_rotation),
            "rotation_due": bool(next_rotation and next_rotation <= now),
            "kek_fingerprint": fingerprint(self._keys.ring.primary),
            "keys_in_ring": len(self._keys.ring.keys),
            "rotation": _rotation(latest) if latest else None,
        }

    def anomalies(self, now: datetime, hours: int) -> dict[str, Any]:
        """Bursts in the audit log that deserve a look: repeated failed logins from one
        address or against one account, password-reset failures, mass key exports, wrong
        master passwords. Thresholds are per window."""
        since = now - timedelta(hours=hours)
        found = []
        for name, prefixes, success, by, threshold in ANOMALY_RULES:
            bursts = self._repo.audit_bursts(
                self._actor.org_id, prefixes, success, by, since, threshold
            )
            for subject, count, first, last in bursts:
                found.append(
                    {
                        "type": name,
                        "subject": f"{by}:{subject}",
                        "count": count,
                        "threshold": threshold,
                        "first_seen": _plain(first),
                        "last_seen": _plain(last),
                        "severity": "high" if count >= threshold * 4 else "medium",
                    }
                )
        return {
            "window_hours": hours,
            "since": _plain(since),
            "anomalies": found,
            "total": len(found),
        }

    def _first_seen(self) -> datetime | None:
        stat = self._source.path.stat()
        from datetime import UTC

        return datetime.fromtimestamp(stat.st_mtime, UTC)


def _plain(moment: datetime | None) -> str | None:
    # UTC with a Z, as every date of the API (docs/native-api.md), though the seed's example
    # of secrets-status shows none: a time without a zone reads as local time in browsers.
    return wire_time(moment) if moment else None


def _rotation(row: KekRotation) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "new_kek_fingerprint": row.new_fingerprint,
        "rotated": row.rotated,
        "progress": row.progress,
        "requested_by": row.requested_by,
        "started_at": _plain(row.started_at),
        "finished_at": _plain(row.finished_at),
        "error": row.error,
    }
