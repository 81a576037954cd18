"""The background job of every server process: follow the status-change log and publish.

Each tick (about once a second) it reads the status changes written since the last tick,
notes which CAs they touched and when it saw them, and asks the publisher for new CRLs of
those CAs; it also publishes CRLs that are due (half their validity has passed) and the
first CRL of a CA that has none. Every process does the same: the publisher's lease and its
"only if not yet covered" conditions, checked in the database, make one of them do the work.

A change stays pending here until the CA's published CRLs read the revocation state after
the change was seen (`crl_state.snapshot_at`), whoever published them, so a process that lost
the race, or was debounced, keeps asking until the change is covered.

PostgreSQL hands out ids before commit, so a change with a lower id can become visible after
a higher one: ids skipped by the cursor are re-read for a while (`GAP_WAIT`).
"""

import logging
import time
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from tessera.core.clock import Clock
from tessera.domains.crl.publisher import DELTA_SLACK, CRLPublisher, can_publish
from tessera.storage.repositories.cas import CARepository
from tessera.storage.repositories.crl import CRLRepository

log = logging.getLogger("tessera.crl")

JOB_NAME = "crl"
POLL_SECONDS = 1.0
BATCH = 5000
GAP_WAIT = 60.0  # seconds an id skipped by the cursor may still appear
MAX_GAPS = 10_000


class CRLFollower:
    def __init__(
        self, sessions: sessionmaker[Session], publisher: CRLPublisher, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._clock = clock
        self._cursor: int | None = None
        self._gaps: dict[int, float] = {}
        self._pending: dict[int, datetime] = {}  # CA id -> when a change of it was seen

    def tick(self) -> None:
        if self._cursor is None:
            # Delta CRLs turned off (or on) since the last start: republish what disagrees.
            with self._sessions.begin() as session:
                deltas = self._publisher.deltas
                CRLRepository(session).due_for_delta_setting(deltas, self._clock())
        with self._sessions() as session:
            repo = CRLRepository(session)
            if self._cursor is None:
                self._start(repo)
            else:
                self._read_changes(repo)
            due = repo.cas_needing_crl(self._clock())
        for ca_id, seen_at in list(self._pending.items()):
            self._attempt(ca_id, "change", seen_at)
            self._settle(ca_id, seen_at)
        for ca_id in due:
            if ca_id not in self._pending:
                self._attempt(ca_id, "schedule", None)

    def _start(self, repo: CRLRepository) -> None:
        """Changes made while no process was following (or just before this one started)
        are found by time: every CA changed recently is checked once."""
        now = self._clock()
        self._cursor = repo.latest_change_id()
        for ca_id in repo.cas_changed_since(now - DELTA_SLACK):
            self._pending[ca_id] = now

    def _read_changes(self, repo: CRLRepository) -> None:
        assert self._cursor is not None
        rows = list(repo.changes_after(self._cursor, BATCH))
        if self._gaps:
            rows.extend(repo.changes_in(list(self._gaps)))
        seen_at = self._clock()
        for change_id, ca_id in rows:
            self._gaps.pop(change_id, None)
            if ca_id is not None:
                self._pending[ca_id] = seen_at
        self._advance([change_id for change_id, _ in rows if change_id > self._cursor])

    def _advance(self, new_ids: list[int]) -> None:
        assert self._cursor is not None
        now = time.monotonic()
        if new_ids:
            present = set(new_ids)
            top = max(new_ids)
            for missing in range(self._cursor + 1, top):
                if missing not in present and len(self._gaps) < MAX_GAPS:
                    self._gaps[missing] = now
            self._cursor = top
        for gap, since in list(self._gaps.items()):
            if now - since > GAP_WAIT:
                del self._gaps[gap]

    def _attempt(self, ca_id: int, trigger: str, seen_at: datetime | None) -> None:
        try:
            if trigger == "change":
                self._publisher.publish(ca_id, "change", observed_at=seen_at)
            else:
                self._publisher.publish(ca_id, "schedule")
        except Exception:
            # One CA's failure (a key that cannot be decrypted, a database hiccup) must not
            # stop the others; the publisher recorded it and schedules a retry.
            log.exception("publishing the CRL of CA %s failed", ca_id)

    def _settle(self, ca_id: int, seen_at: datetime) -> None:
        """Forget the change once some process's CRL covers it, or the CA cannot have one
        (neither it nor another row of its issuer group can sign)."""
        with self._sessions() as session:
            repo = CRLRepository(session)
            state = repo.state(ca_id)
            ca = repo.signing_ca(ca_id)
            publishable = ca is not None and can_publish(
                CARepository(session, ca.org_id), ca, self._clock()
            )
        snapshot = state.snapshot_at if state is not None else None
        covered = snapshot is not None and snapshot >= seen_at
        # A newer change seen meanwhile keeps the CA pending (its time differs).
        if not publishable or (covered and self._pending.get(ca_id) == seen_at):
            self._pending.pop(ca_id, None)
