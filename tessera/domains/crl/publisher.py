"""Publishing a CA's CRLs: take a lease and CRL numbers, build and sign, store.

Publication owns its transactions, unlike request services: signing a CRL of a million
entries takes seconds, and holding a row lock (or SQLite's write lock) that long would stall
every revocation. So it runs in three steps:

1. claim, in a short transaction: one UPDATE ... RETURNING on the CA's `crl_state` row takes
   a lease and two numbers of the CA's CRL number sequence (the full CRL, then the delta);
2. build, outside any transaction: read the revoked certificates, encode, sign;
3. publish, in a short transaction: store both CRLs, record what they cover and release
   the lease, only if the lease is still ours (else the numbers are simply skipped).

Numbers therefore never repeat across processes, and a CRL never replaces a newer one.

A CRL covers an issuer group (domains/issuer_groups.py): the rows of an organization with one
name and one key, which a CRL (naming only its issuer and key identifier) cannot tell apart.
Whichever row a publication is asked for, it lists the revocations of every row, takes its
numbers and lease on the group's oldest row, is signed by a row holding the key, and is
stored under every row, whose distribution points therefore serve the same CRL.
"""

import gc
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tessera.core.clock import Clock
from tessera.core.errors import Conflict, NotFound, PolicyViolation
from tessera.core.formats import load_certificate
from tessera.core.keystore import KeyEncryptor
from tessera.domains import audit
from tessera.domains.actor import Actor, system_actor
from tessera.domains.crl.builder import CRLSpec, Entry, EntryLike, build_crl
from tessera.domains.issuance import PublicationBase
from tessera.domains.issuer_groups import group_of, groups, identity_digests, signing_order
from tessera.storage import models
from tessera.storage.models_crl import CRLState, PublishedCRL
from tessera.storage.repositories.audit import AuditRepository
from tessera.storage.repositories.cas import CARepository
from tessera.storage.repositories.crl import CRLRepository, EntryRow

log = logging.getLogger("tessera.crl")

Trigger = Literal["change", "schedule", "manual"]
LEASE = timedelta(minutes=2)  # a build that takes longer may be taken over by another process
# Delta CRLs list every change since their base, read back from the status-change log with
# this margin: a change stamped before the base was taken but committed after it is still
# listed (listing a change twice is harmless; missing one is not).
DELTA_SLACK = timedelta(minutes=10)
BUSY_WAIT = 30.0  # seconds a manual regeneration waits for a build in progress


@dataclass(frozen=True)
class CRLPolicy:
    validity: timedelta
    delta_validity: timedelta | None  # None: no delta CRLs
    debounce: timedelta

    @property
    def refresh_after(self) -> timedelta:
        """Scheduled regeneration comes when half of the shortest validity has passed."""
        shortest = min(self.validity, self.delta_validity or self.validity)
        return shortest / 2


@dataclass(frozen=True)
class Published:
    ca_id: int
    full: PublishedCRL
    delta: PublishedCRL | None


@dataclass(frozen=True)
class _Signed:
    """One signed CRL, stored as is under every row of the group."""

    kind: str
    crl_number: int
    base_number: int | None
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes

    def row(self, ca_id: int, org_id: int, created_at: datetime) -> PublishedCRL:
        return PublishedCRL(
            ca_id=ca_id,
            org_id=org_id,
            kind=self.kind,
            crl_number=self.crl_number,
            base_number=self.base_number,
            this_update=self.this_update,
            next_update=self.next_update,
            entries=self.entries,
            size=len(self.der),
            sha256=hashlib.sha256(self.der).hexdigest(),
            der=self.der,
            created_at=created_at,
        )


@dataclass(frozen=True)
class _Built:
    crls: list[_Signed]
    snapshot_at: datetime
    base_number: int | None
    base_at: datetime


@dataclass(frozen=True)
class _Claim:
    ca_id: int  # the row asked for
    org_id: int
    ca_ids: tuple[int, ...]  # its issuer group, oldest first: that one's sequence and lease
    signer_id: int
    owner: str
    full_number: int
    base_number: int | None
    base_at: datetime | None

    @property
    def holder(self) -> int:
        return self.ca_ids[0]


@dataclass(frozen=True)
class _Stateless:
    """Rows of the group to claim for that have no state row yet: (CA id, organization id)."""

    rows: list[tuple[int, int]]


class CRLPublisher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        keys: KeyEncryptor,
        publication: PublicationBase,
        policy: CRLPolicy,
        clock: Clock,
        on_publish: Callable[[int], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._publication = publication
        self._policy = policy
        self._clock = clock
        self._on_publish = on_publish

    @property
    def deltas(self) -> bool:
        return self._policy.delta_validity is not None

    def publish(
        self,
        ca_id: int,
        trigger: Trigger,
        observed_at: datetime | None = None,
        actor: Actor | None = None,
    ) -> Published | None:
        """Publish new CRLs for the CA if the trigger still calls for it; None when there is
        nothing to do (already covered, debounced, another process is building, or the CA
        cannot sign)."""
        claim = self._claim(ca_id, trigger, observed_at)
        if claim is None:
            return None
        try:
            with _collector_paused():
                built = self._build(claim, trigger)
            return self._store(claim, built, trigger, actor)
        except Exception as exc:
            # Whatever went wrong, the lease goes back and the error is kept for the API;
            # the next scheduled run retries a minute later.
            self._fail(claim, exc)
            raise

    def regenerate(self, ca_id: int, actor: Actor) -> Published:
        """The management API's regeneration: now, waiting for a build in progress."""
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            published = self.publish(ca_id, "manual", actor=actor)
            if published is not None:
                return published
            if time.monotonic() > deadline:
                raise Conflict(f"a CRL of CA {ca_id} is being built by another process")
            time.sleep(0.2)

    # Step 1 -----------------------------------------------------------------------------

    def _claim(self, ca_id: int, trigger: Trigger, observed_at: datetime | None) -> _Claim | None:
        """A row of the group with no state yet (new to it, or its first CRL) gets one in a
        transaction of its own first: an insert holds its CA row (the foreign key) to the
        end of its transaction, and a claim holding it while it waits for a state row that
        a deletion in the group holds, as the deletion waits to delete that CA, deadlocks."""
        claimed = self._try_claim(ca_id, trigger, observed_at)
        if isinstance(claimed, _Stateless):
            self._add_states(claimed.rows)
            claimed = self._try_claim(ca_id, trigger, observed_at)
        return None if isinstance(claimed, _Stateless) else claimed

    def _add_states(self, rows: Sequence[tuple[int, int]]) -> None:
        try:
            with self._sessions.begin() as session:
                repo = CRLRepository(session)
                for ca_id, org_id in rows:
                    repo.ensure_state(ca_id, org_id)
        except IntegrityError:
            pass  # a row deleted meanwhile: the claim reads the group again

    def _try_claim(
        self, ca_id: int, trigger: Trigger, observed_at: datetime | None
    ) -> _Claim | _Stateless | None:
        now = self._clock()
        with self._sessions.begin() as session:
            repo = CRLRepository(session)
            ca = repo.signing_ca(ca_id)
            if ca is None:
                if trigger == "manual":
                    raise NotFound(f"CA {ca_id} not found")
                return None
            group = group_of(CARepository(session, ca.org_id), ca)
            signers = signing_order(group, now, lambda row: can_sign(row, now))
            if not signers:
                _refuse(repo, ca, trigger, now)
                return None
            ids = tuple(row.id for row in group)
            stateless = repo.without_state(ids)
            if stateless:
                return _Stateless([(row.id, row.org_id) for row in group if row.id in stateless])
            owner = uuid.uuid4().hex
            conditions = self._conditions(trigger, now, observed_at, repo.any_due(ids, now))
            # Above every number of the group's rows, and of rows of it deleted since (the
            # issuer's number): a re-imported CA goes on where its issuer's CRLs stopped.
            identity = identity_digests(group[0])
            floor = max(repo.highest_number(ids), repo.issuer_number(ca.org_id, identity))
            taken = repo.claim(ids[0], owner, now, now + LEASE, conditions, floor)
            if taken is None:
                return None
            last, base_number, base_at = taken
            repo.raise_issuer_number(ca.org_id, identity, last)
            signer = signers[0].id
            return _Claim(ca.id, ca.org_id, ids, signer, owner, last - 1, base_number, base_at)

    def _conditions(
        self,
        trigger: Trigger,
        now: datetime,
        observed_at: datetime | None,
        due: ColumnElement[bool],
    ) -> Sequence[ColumnElement[bool]]:
        if trigger == "change":
            # Only if the newest CRL read the state before this change was seen, and not
            # more often than the debounce allows: a burst makes one CRL.
            return [
                or_(CRLState.snapshot_at.is_(None), CRLState.snapshot_at < observed_at),
                or_(CRLState.built_at.is_(None), CRLState.built_at <= now - self._policy.debounce),
                # after a failure, retry when the failure scheduled it, not every second
                or_(CRLState.last_error.is_(None), CRLState.due_at <= now),
            ]
        if trigger == "schedule":
            return [due]
        return []

    # Step 2 -----------------------------------------------------------------------------

    def _build(self, claim: _Claim, trigger: Trigger) -> _Built:
        snapshot = self._clock()
        with self._sessions() as session:
            repo = CRLRepository(session)
            signer = repo.signing_ca(claim.signer_id)
            if signer is None or signer.encrypted_private_key is None:
                raise NotFound(f"CA {claim.signer_id} is gone")
            rows = repo.revoked_entries(claim.ca_ids, snapshot)
            rebase = trigger != "change" or claim.base_number is None or claim.base_at is None
            base_number = claim.full_number if rebase else claim.base_number
            base_at = snapshot if rebase or claim.base_at is None else claim.base_at
            delta_on = self.deltas
            since = base_at - DELTA_SLACK
            changed = repo.changed_serials(claim.ca_ids, since) if delta_on else []
            issuer = load_certificate(signer.certificate_pem.encode())
            key = self._keys.decrypt(signer.encrypted_private_key)
            urls = self._publication.for_ca(signer)
        this_update = snapshot.replace(microsecond=0)
        spec = CRLSpec(
            issuer=issuer,
            key=key,
            number=claim.full_number,
            this_update=this_update,
            next_update=this_update + self._policy.validity,
            freshest_url=urls.delta_crl if delta_on else None,
            ca_issuers_url=urls.ca_issuers,
        )
        by_serial = {row[0]: row for row in rows}
        built = [_signed("full", spec, by_serial.values(), None)]
        if self._policy.delta_validity is not None and base_number is not None:
            delta_spec = CRLSpec(
                issuer=issuer,
                key=key,
                number=claim.full_number + 1,
                this_update=this_update,
                next_update=this_update + self._policy.delta_validity,
                delta_base=base_number,
                ca_issuers_url=urls.ca_issuers,
            )
            changes = [(serial, at) for serial, at, _ in changed]
            gone = {serial for serial, _, in_inventory in changed if not in_inventory}
            entries = delta_entries(by_serial, changes, gone)
            built.append(_signed("delta", delta_spec, entries, base_number))
        return _Built(built, snapshot, base_number, base_at)

    # Step 3 -----------------------------------------------------------------------------

    def _store(
        self, claim: _Claim, result: _Built, trigger: Trigger, actor: Actor | None
    ) -> Published | None:
        built = result.crls
        values: dict[str, object] = {
            "snapshot_at": result.snapshot_at,
            "built_at": self._clock(),
            "due_at": built[0].this_update + self._policy.refresh_after,
            "base_number": result.base_number,
            "base_at": result.base_at,
            "last_error": None,
        }
        with self._sessions.begin() as session:
            repo = CRLRepository(session)
            if not repo.finish(claim.holder, claim.owner, values):
                log.warning("CRL lease of CA %s was taken over; discarding", claim.holder)
                return None
            # A row of the group deleted since the claim has nowhere to store them (and its
            # entries were handed to a row that stays, so these CRLs still list them).
            rows = repo.present(claim.ca_ids)
            repo.mirror(rows[1:], claim.full_number + 1, values)
            stored = {ca_id: self._add(repo, claim, ca_id, built) for ca_id in rows}
            self._audit(session, claim, built, trigger, actor)
        for ca_id in claim.ca_ids:
            if self._on_publish is not None:
                self._on_publish(ca_id)
        if claim.ca_id not in stored:
            return None
        mine = stored[claim.ca_id]
        return Published(claim.ca_id, mine[0], mine[1] if len(mine) > 1 else None)

    def _add(
        self, repo: CRLRepository, claim: _Claim, ca_id: int, built: list[_Signed]
    ) -> list[PublishedCRL]:
        """Store the CRLs under one row of the group, pruning its older ones."""
        rows = [signed.row(ca_id, claim.org_id, self._clock()) for signed in built]
        for crl in rows:
            repo.add_published(crl)
            repo.prune(ca_id, crl.kind)
        if not self.deltas:
            # Deltas were turned off: the newest full CRL no longer points to them.
            repo.prune(ca_id, "delta", keep=0)
        return rows

    def _audit(
        self,
        session: Session,
        claim: _Claim,
        built: list[_Signed],
        trigger: Trigger,
        actor: Actor | None,
    ) -> None:
        who = actor or system_actor(claim.org_id)
        action = "crl.regenerate" if trigger == "manual" else "crl.publish"
        details: dict[str, object] = {
            "crl_number": built[0].crl_number,
            "delta_crl_number": built[1].crl_number if len(built) > 1 else None,
            "entries": built[0].entries,
            "trigger": trigger,
        }
        if len(claim.ca_ids) > 1:
            details["issuer_group"] = list(claim.ca_ids)  # the rows that serve these CRLs
        repository = AuditRepository(session, claim.org_id)
        audit.record(repository, who, action, "ca", claim.ca_id, details)

    def _fail(self, claim: _Claim, exc: Exception) -> None:
        retry = self._clock() + timedelta(minutes=1)
        failed = {"last_error": f"{type(exc).__name__}: {exc}"[:500], "due_at": retry}
        with self._sessions.begin() as session:
            repo = CRLRepository(session)
            if repo.finish(claim.holder, claim.owner, failed):
                repo.mirror(claim.ca_ids[1:], 0, failed)


def delta_entries(
    current: dict[str, EntryRow],
    changes: Sequence[tuple[str, datetime]],
    gone: Set[str] = frozenset(),
) -> list[EntryLike]:
    """The entries of a delta CRL: each certificate whose status changed since the base, as
    it stands now; one that is no longer revoked (a released hold) is listed with
    removeFromCRL (RFC 5280 5.2.4 and 5.3.1). A certificate deleted from the inventory
    (`gone`) whose only change is that deletion was never revoked here: it is on no CRL,
    and is left out rather than listed by the thousand when an inventory is tidied."""
    changed = Counter(serial for serial, _ in changes)
    listed: dict[str, EntryLike] = {}
    for serial, changed_at in changes:  # oldest first: the last change of a serial wins
        row = current.get(serial)
        if row is not None:
            listed[serial] = row
        elif serial not in gone or changed[serial] > 1:
            listed[serial] = Entry(serial, changed_at, "removeFromCRL")
    return list(listed.values())


def _signed(
    kind: str, spec: CRLSpec, entries: Iterable[EntryLike], base_number: int | None
) -> _Signed:
    listed = list(entries)
    der = build_crl(spec, listed)
    return _Signed(
        kind, spec.number, base_number, spec.this_update, spec.next_update, len(listed), der
    )


def _refuse(
    repo: CRLRepository, ca: models.CertificateAuthority, trigger: Trigger, now: datetime
) -> None:
    """No CA of `ca`'s issuer group can sign. Asked by hand: say why. Offered by the schedule
    (named like a CA that can sign, but with another key): keep why, and it is not offered
    again (`cas_needing_crl`)."""
    if trigger == "manual":
        raise PolicyViolation(cannot_sign_reason(ca, now))
    if trigger == "schedule":
        repo.ensure_state(ca.id, ca.org_id)
        repo.refuse(ca.id, cannot_sign_reason(ca, now))


def can_sign(ca: models.CertificateAuthority, now: datetime) -> bool:
    """Whether the CA can sign CRLs. Disabling a CA stops issuance, not revocation: the
    certificates it issued stay valid and may still be revoked, so their CRLs keep coming
    before nextUpdate (RFC 5280 5.1.2.5)."""
    return ca.encrypted_private_key is not None and ca.not_after > now


def can_publish(cas: CARepository, ca: models.CertificateAuthority, now: datetime) -> bool:
    """Whether the CA's CRLs can be signed: by itself, or by another row of its issuer group
    (the same key; a CA imported without its key may be a re-issued root of one with it)."""
    return can_sign(ca, now) or any(can_sign(row, now) for row in group_of(cas, ca))


def publishable(cas: Iterable[models.CertificateAuthority], now: datetime) -> set[int]:
    """The ids of the CAs whose CRLs can be signed (`can_publish`), from the rows alone."""
    return {
        ca.id for group in groups(cas) if any(can_sign(row, now) for row in group) for ca in group
    }


def cannot_sign_reason(ca: models.CertificateAuthority, now: datetime) -> str:
    if ca.encrypted_private_key is None:
        return f"CA {ca.id} has no private key here and cannot sign CRLs"
    return f"CA {ca.id} has expired"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A large CRL holds millions of short-lived row tuples and strings, none in a reference
    cycle, and each pass of the cyclic garbage collector walks them again: pausing it while
    they exist cut building a 1,000,000-entry CRL from 9.9 s to 7.5 s (bench/crl.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
