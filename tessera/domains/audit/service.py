"""Audit use cases: reading the log, retention cleanup, integrity verification, settings."""

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tessera.core import audit_chain
from tessera.core.errors import Conflict, InvalidInput, NotFound
from tessera.domains.actor import Actor, system_actor
from tessera.domains.audit.recording import record
from tessera.domains.audit.syslog import SyslogConfig, parse_facility, send_test
from tessera.domains.audit.wiring import RETENTION_SETTING, SYSLOG_SETTING
from tessera.storage.models import AuditLog
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.audit import (
    AuditFilter,
    AuditRepository,
    AuditSettingsRepository,
    covered_values,
)

log = logging.getLogger("tessera.audit")

DEFAULT_RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 36_500
EXPORT_BATCH = 2000


@dataclass(frozen=True)
class Retention:
    retention_days: int = DEFAULT_RETENTION_DAYS
    auto_cleanup: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"retention_days": self.retention_days, "auto_cleanup": self.auto_cleanup}


def check_retention_days(days: int) -> int:
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise InvalidInput(f"retention_days must be between 1 and {MAX_RETENTION_DAYS}")
    return days


class AuditService:
    def __init__(self, repos: Repositories, actor: Actor, now: datetime) -> None:
        self._repos = repos
        self._audit: AuditRepository = repos.audit
        self._settings = AuditSettingsRepository(repos.session)
        self._actor = actor
        self._now = now

    # --- reading -----------------------------------------------------------------------

    def page(self, filters: AuditFilter, offset: int, limit: int) -> tuple[list[AuditLog], int]:
        rows = list(self._audit.page(filters, offset, limit))
        return rows, self._audit.count(filters)

    def ordered(
        self, filters: AuditFilter, order_by: str, descending: bool, offset: int, limit: int
    ) -> tuple[list[AuditLog], int]:
        rows = list(self._audit.ordered(filters, order_by, descending, offset, limit))
        return rows, self._audit.count(filters)

    def get(self, log_id: int) -> AuditLog:
        row = self._audit.get(log_id)
        if row is None:
            raise NotFound(f"audit log {log_id} not found")
        return row

    def stats(self, days: int) -> dict[str, Any]:
        found = self._audit.stats(self._now - timedelta(days=days))
        total, successes = found["total"], found["successes"]
        return {
            "total_logs": total,
            "success_count": successes,
            "failure_count": total - successes,
            "success_rate": round(100.0 * successes / total, 1) if total else 100.0,
            "top_actions": [{"action": a, "count": n} for a, n in found["top_actions"]],
            "top_users": [{"username": u, "count": n} for u, n in found["top_users"]],
            "recent_failures": found["recent_failures"],
            "days": days,
        }

    def actions(self) -> list[str]:
        return self._audit.actions()

    def note_export(self, kind: str, filters: AuditFilter, limit: int) -> None:
        """Exporting the audit log is itself audited (who took a copy, of what)."""
        given = {k: v for k, v in filters.__dict__.items() if v not in (None, False)}
        details = {"format": kind, "limit": limit, "filters": {k: str(v) for k, v in given.items()}}
        record(self._audit, self._actor, "audit.export", "audit_log", None, details)

    # --- integrity -----------------------------------------------------------------------

    def verify(self, start_id: int | None = None, end_id: int | None = None) -> dict[str, Any]:
        key = self._audit.chain_key()
        state = self._audit.chain_state()
        head = state.head
        findings: list[audit_chain.Finding] = []
        if head is not None and head.key_id and head.key_id != audit_chain.key_id(key):
            message = (
                "the chain was written with another key than DATA_DIR/audit.key "
                f"(key id {head.key_id}, this server has {audit_chain.key_id(key)})"
            )
            findings.append(audit_chain.Finding("key", message))
            return _verdict(findings, 0, head, None)
        start, checkpoint_id = self._start(state, findings)
        whole = start_id is None and end_id is None
        last_seq = head.last_seq if head is not None else 0
        verifier = audit_chain.Verifier(key, start, whole_chain=whole, head_seq=last_seq)
        for row in self._audit.chain_rows(start.start_seq, start_id, end_id):
            values = row._mapping
            verifier.feed(
                audit_chain.ChainRow(
                    values["id"],
                    values["chain_seq"],
                    values["chain_prev_id"],
                    values["chain_prev_mac"],
                    values["chain_mac"],
                    covered_values(values),
                )
            )
        last_id = head.last_id if head is not None else None
        last_mac = head.last_mac if head is not None else audit_chain.GENESIS_MAC
        findings.extend(verifier.finish(last_seq, last_id, last_mac))
        legacy = head.legacy_max_id if head is not None else None
        outside = self._audit.unchained(start.start_seq, start_id, end_id, legacy)
        findings.extend(audit_chain.describe_outside(r[0], r[1], start.start_seq) for r in outside)
        return _verdict(findings, verifier.checked + len(outside), head, checkpoint_id, start)

    def _start(
        self, state: Any, findings: list[audit_chain.Finding]
    ) -> tuple[audit_chain.Checkpoint, int | None]:
        """The newest genuine checkpoint (forged ones are findings), else the chain's start."""
        key = self._audit.chain_key()
        for row in state.checkpoints:
            checkpoint = audit_chain.Checkpoint(
                row.chain_id, row.start_seq, row.prev_id, row.prev_mac, row.deleted, row.created_at
            )
            if row.chain_id == self._repos.org_id and checkpoint.is_genuine(key, row.mac):
                return checkpoint, row.id
            message = f"checkpoint {row.id} is not genuine: its MAC does not match"
            findings.append(audit_chain.Finding("checkpoint", message))
        return audit_chain.GENESIS, None

    # --- retention -----------------------------------------------------------------------

    def cleanup(self, retention_days: int | None) -> dict[str, Any]:
        """Delete rows older than the retention from the start of the chain, leaving a
        signed checkpoint. Refuses (409) when the rows to delete do not verify: cleaning up
        must not erase the evidence of tampering."""
        days = check_retention_days(retention_days or self.retention().retention_days)
        cutoff = self._now - timedelta(days=days)
        key = self._audit.chain_key()
        head = self._audit.lock_head()
        if head is None:
            return {"deleted": 0, "retention_days": days, "cutoff": cutoff}
        state = self._audit.chain_state()
        findings: list[audit_chain.Finding] = []
        start, _ = self._start(state, findings)
        first_kept = self._audit.first_seq_since(start.start_seq, cutoff) or head.last_seq + 1
        if first_kept <= start.start_seq:
            return {"deleted": 0, "retention_days": days, "cutoff": cutoff}
        self._check_segment(key, start, first_kept, findings)
        previous = self._audit.at_seq(first_kept - 1)
        if previous is None:
            raise Conflict("the audit chain is damaged before the cutoff; run verify first")
        deleted = self._audit.delete_before(start.start_seq, first_kept)
        checkpoint = audit_chain.Checkpoint(
            self._repos.org_id, first_kept, previous.id, previous.chain_mac, deleted, self._now
        )
        stored = self._audit.add_checkpoint(checkpoint, key)
        details = {"retention_days": days, "deleted": deleted, "checkpoint_id": stored.id}
        record(self._audit, self._actor, "audit.cleanup", "audit_log", None, details)
        return {
            "deleted": deleted,
            "retention_days": days,
            "cutoff": cutoff,
            "checkpoint": {"id": stored.id, "start_seq": first_kept, "prev_id": previous.id},
        }

    def _check_segment(
        self,
        key: bytes,
        start: audit_chain.Checkpoint,
        first_kept: int,
        findings: list[audit_chain.Finding],
    ) -> None:
        verifier = audit_chain.Verifier(key, start)
        for row in self._audit.chain_rows(start.start_seq):
            values = row._mapping
            if values["chain_seq"] > first_kept:
                break
            verifier.feed(
                audit_chain.ChainRow(
                    values["id"],
                    values["chain_seq"],
                    values["chain_prev_id"],
                    values["chain_prev_mac"],
                    values["chain_mac"],
                    covered_values(values),
                )
            )
        verifier.flush()
        findings.extend(verifier.findings)
        if findings:
            listed = "; ".join(f.message for f in findings[:5])
            raise Conflict(f"the audit rows to delete do not verify ({listed}); nothing deleted")

    # --- settings ------------------------------------------------------------------------

    def retention(self) -> Retention:
        stored = self._settings.get(RETENTION_SETTING) or {}
        return Retention(
            int(stored.get("retention_days", DEFAULT_RETENTION_DAYS)),
            bool(stored.get("auto_cleanup", False)),
        )

    def set_retention(self, retention_days: int | None, auto_cleanup: bool | None) -> Retention:
        current = self.retention()
        updated = Retention(
            check_retention_days(retention_days or current.retention_days),
            current.auto_cleanup if auto_cleanup is None else auto_cleanup,
        )
        self._settings.put(RETENTION_SETTING, updated.as_dict(), self._actor.username)
        record(
            self._audit, self._actor, "audit.retention_update", "settings", None, updated.as_dict()
        )
        return updated

    def syslog(self) -> SyslogConfig:
        return SyslogConfig.from_stored(self._settings.get(SYSLOG_SETTING))

    def set_syslog(self, changes: dict[str, Any]) -> SyslogConfig:
        """`changes` holds the fields given; null removes one, so it takes its default (as
        in a JSON merge patch, RFC 7396): no host or hostname, port 514, udp, audit..."""
        merged = self.syslog().as_dict()
        for key, value in changes.items():
            stored = "facility_code" if key == "facility" else key
            if value is None:
                merged.pop(stored, None)
            else:
                merged[stored] = parse_facility(value) if key == "facility" else value
        if merged.get("protocol", "udp") not in ("udp", "tcp"):
            raise InvalidInput("protocol must be udp or tcp")
        if merged.get("enabled") and not merged.get("host"):
            raise InvalidInput("a host is required to enable syslog forwarding")
        config = SyslogConfig.from_stored(merged)
        self._settings.put(SYSLOG_SETTING, config.as_dict(), self._actor.username)
        record(self._audit, self._actor, "audit.syslog_update", "settings", None, config.as_dict())
        return config

    def test_syslog(self) -> str:
        return send_test(self.syslog())


def _verdict(
    findings: list[audit_chain.Finding],
    checked: int,
    head: Any,
    checkpoint_id: int | None,
    start: audit_chain.Checkpoint | None = None,
) -> dict[str, Any]:
    return {
        "valid": not findings,
        "checked": checked,
        "errors": [f.as_dict() for f in findings],
        "chain": {
            "start_seq": start.start_seq if start is not None else None,
            "last_seq": head.last_seq if head is not None else 0,
            "last_id": head.last_id if head is not None else None,
            "checkpoint_id": checkpoint_id,
        },
    }


def export_batches(
    sessions: sessionmaker[Session], org_id: int, filters: AuditFilter, limit: int
) -> Iterator[list[AuditLog]]:
    """Rows for a streamed export, read after the request's unit of work has ended."""
    with sessions() as session:
        yield from AuditRepository(session, org_id).newest_batches(filters, limit, EXPORT_BATCH)


def run_retention(sessions: sessionmaker[Session], now: datetime) -> int:
    """The daily automatic cleanup (when enabled): one process per day claims it, each
    organization's chain is cleaned in its own transaction."""
    with sessions.begin() as session:
        settings = AuditSettingsRepository(session)
        stored = settings.get(RETENTION_SETTING) or {}
        if not stored.get("auto_cleanup"):
            return 0
        if not settings.claim("retention_last_run", now - timedelta(hours=23), now):
            return 0
        chains = settings.organizations_with_chains()
    deleted = 0
    for org_id in chains:
        try:
            with sessions.begin() as session:
                service = AuditService(Repositories(session, org_id), system_actor(org_id), now)
                deleted += int(service.cleanup(None)["deleted"])
        except Conflict as exc:  # a damaged chain is kept as evidence; the others go on
            log.warning("audit retention skipped organization %s: %s", org_id, exc.message)
    return deleted


def retention_job(
    sessions: sessionmaker[Session], clock: Callable[[], datetime]
) -> Callable[[], None]:
    """The hourly job that runs the daily automatic cleanup when it is due."""

    def run() -> None:
        run_retention(sessions, clock())

    return run
