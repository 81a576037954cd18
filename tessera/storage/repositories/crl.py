"""CRL state, published CRLs and retained entries; the reads a CRL is built from.

Publication serves every organization's CAs, so most of this is not scoped by organization;
what the management API lists is (`summaries`). A CRL covers an issuer group (the rows of one
name and key, domains/issuer_groups.py): its reads take the ids of every row of the group."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from tessera.storage.models import Certificate, CertificateAuthority, StatusChange
from tessera.storage.models_crl import (
    CRLState,
    IssuerCRLNumber,
    PublishedCRL,
    RetainedCRLEntry,
)
from tessera.storage.repositories.status_changes import StatusChangeRepository

# (serial hex, revocation date, reason, invalidity date), the dates in epoch seconds, as the
# CRL builder takes them
EntryRow = tuple[str, int, str | None, int | None]
KEEP_PUBLISHED = 3  # per CA and kind; older CRLs are deleted when a new one is stored


def _keeping_forced_due(values: dict[str, object]) -> dict[str, object]:
    """A publication's next due time, unless the row was made due while it was being built
    (after its snapshot: `hand_over` does, when a row of the group is deleted): what made it
    due may be missing from these CRLs, so the next run must not wait for the schedule."""
    snapshot, built, due = values.get("snapshot_at"), values.get("built_at"), values.get("due_at")
    if snapshot is None or built is None or due is None:
        return values
    forced = and_(CRLState.due_at > snapshot, CRLState.due_at <= built)
    scheduled = literal(due, CRLState.due_at.type)
    return {**values, "due_at": case((forced, CRLState.due_at), else_=scheduled)}


class CRLRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # State and leases ------------------------------------------------------------------

    def ensure_state(self, ca_id: int, org_id: int) -> None:
        """Insert the CA's state row unless another process just did. Every row of an issuer
        group has one: the group's sequence and lease are its oldest row's, the others
        mirror what was published (`mirror`), which the schedule and the API read per row."""
        values = {"ca_id": ca_id, "org_id": org_id, "last_number": 0}
        if self._session.get_bind().dialect.name == "postgresql":
            pg = postgresql.insert(CRLState).values(values)
            self._session.execute(pg.on_conflict_do_nothing(index_elements=["ca_id"]))
        else:
            lite = sqlite.insert(CRLState).values(values)
            self._session.execute(lite.on_conflict_do_nothing(index_elements=["ca_id"]))

    def without_state(self, ca_ids: Sequence[int]) -> set[int]:
        """Those of the CAs that have no state row yet."""
        query = select(CRLState.ca_id).where(CRLState.ca_id.in_(ca_ids))
        return set(ca_ids) - set(self._session.scalars(query))

    def state(self, ca_id: int) -> CRLState | None:
        return self._session.scalar(
            select(CRLState)
            .where(CRLState.ca_id == ca_id)
            .execution_options(populate_existing=True)
        )

    def highest_number(self, ca_ids: Sequence[int]) -> int:
        """The highest CRL number any of the rows has published or mirrored."""
        query = select(func.max(CRLState.last_number)).where(CRLState.ca_id.in_(ca_ids))
        return int(self._session.scalar(query) or 0)

    def issuer_number(self, org_id: int, identity: tuple[str, str]) -> int:
        """The highest CRL number taken for the issuer (`identity_digests`), whichever of
        its CA rows, deleted since or not, took it."""
        query = select(IssuerCRLNumber.last_number).where(
            IssuerCRLNumber.org_id == org_id,
            IssuerCRLNumber.name_sha256 == identity[0],
            IssuerCRLNumber.spki_sha256 == identity[1],
        )
        return int(self._session.scalar(query) or 0)

    def raise_issuer_number(self, org_id: int, identity: tuple[str, str], number: int) -> None:
        """Record `number` as taken for the issuer unless a higher one is. Called in the
        claim's transaction, after its UPDATE holds the group's state row: the number row is
        always the last lock a claim takes, and a deletion takes none, so no cycle."""
        values = {
            "org_id": org_id,
            "name_sha256": identity[0],
            "spki_sha256": identity[1],
            "last_number": number,
        }
        keys = ["org_id", "name_sha256", "spki_sha256"]
        dialect = postgresql if self._session.get_bind().dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(IssuerCRLNumber).values(values)
        current = IssuerCRLNumber.last_number
        higher = case(
            (current < upsert.excluded.last_number, upsert.excluded.last_number), else_=current
        )
        self._session.execute(
            upsert.on_conflict_do_update(index_elements=keys, set_={"last_number": higher})
        )

    def claim(
        self,
        ca_id: int,
        owner: str,
        now: datetime,
        lease_until: datetime,
        conditions: Sequence[ColumnElement[bool]] = (),
        floor: int = 0,
    ) -> tuple[int, int | None, datetime | None] | None:
        """Take the lease and two CRL numbers (full, then delta) in one UPDATE ... RETURNING;
        None when another process holds the lease or a condition says there is nothing to do.
        The numbers follow `floor` too (the highest of the issuer group: its oldest row may be
        new to the sequence, the old one deleted). Returns (last number taken, base number,
        base time)."""
        # the row's own value, as the UPDATE finds it, and never less: numbers only increase
        start = case((CRLState.last_number < floor, floor), else_=CRLState.last_number)
        statement = (
            update(CRLState)
            .where(
                CRLState.ca_id == ca_id,
                or_(CRLState.lease_until.is_(None), CRLState.lease_until < now),
                *conditions,
            )
            .values(last_number=start + 2, lease_owner=owner, lease_until=lease_until)
            .returning(CRLState.last_number, CRLState.base_number, CRLState.base_at)
            .execution_options(synchronize_session=False)
        )
        row = self._session.execute(statement).first()
        return (int(row[0]), row[1], row[2]) if row else None

    def finish(self, ca_id: int, owner: str, values: dict[str, object]) -> bool:
        """Release the lease and record what was published; False when the lease was lost
        (expired and taken over), in which case the caller must not publish."""
        statement = (
            update(CRLState)
            .where(CRLState.ca_id == ca_id, CRLState.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, **_keeping_forced_due(values))
            .execution_options(synchronize_session=False)
        )
        return bool(self._session.execute(statement).rowcount)  # type: ignore[attr-defined]

    def mirror(self, ca_ids: Sequence[int], last_number: int, values: dict[str, object]) -> None:
        """Record on the other rows of an issuer group what its oldest row published (never
        the lease): their distribution points serve the same CRLs."""
        if not ca_ids:
            return
        highest = case(
            (CRLState.last_number < last_number, last_number), else_=CRLState.last_number
        )
        self._session.execute(
            update(CRLState)
            .where(CRLState.ca_id.in_(ca_ids))
            .values(last_number=highest, **_keeping_forced_due(values))
            .execution_options(synchronize_session=False)
        )

    def any_due(self, ca_ids: Sequence[int], now: datetime) -> ColumnElement[bool]:
        """A claim condition: a scheduled CRL is due for one of the rows (a row new to the
        group has never had one)."""
        other = aliased(CRLState)
        return (
            select(other.ca_id)
            .where(other.ca_id.in_(ca_ids), or_(other.due_at.is_(None), other.due_at <= now))
            .exists()
        )

    def refuse(self, ca_id: int, reason: str) -> None:
        """Record why the CA gets no CRL (it is in no issuer group that can sign)."""
        self._session.execute(
            update(CRLState)
            .where(CRLState.ca_id == ca_id)
            .values(last_error=reason)
            .execution_options(synchronize_session=False)
        )

    def present(self, ca_ids: Sequence[int]) -> list[int]:
        """Those of the CAs that still exist, in the order given."""
        query = select(CertificateAuthority.id).where(CertificateAuthority.id.in_(ca_ids))
        found = set(self._session.scalars(query))
        return [ca_id for ca_id in ca_ids if ca_id in found]

    def add_published(self, crl: PublishedCRL) -> None:
        self._session.add(crl)
        self._session.flush()

    def prune(self, ca_id: int, kind: str, keep: int = KEEP_PUBLISHED) -> None:
        kept = (
            select(PublishedCRL.id)
            .where(PublishedCRL.ca_id == ca_id, PublishedCRL.kind == kind)
            .order_by(PublishedCRL.crl_number.desc())
            .limit(keep)
        )
        old = select(PublishedCRL.id).where(
            PublishedCRL.ca_id == ca_id, PublishedCRL.kind == kind, PublishedCRL.id.not_in(kept)
        )
        ids = list(self._session.scalars(old))
        if ids:
            self._session.execute(delete(PublishedCRL).where(PublishedCRL.id.in_(ids)))

    # What a CRL is built from ---------------------------------------------------------

    def signing_ca(self, ca_id: int) -> CertificateAuthority | None:
        return self._session.get(CertificateAuthority, ca_id, populate_existing=True)

    def revoked_entries(self, ca_ids: Sequence[int], at: datetime) -> Sequence[EntryRow]:
        """Every revoked, unexpired certificate of the CAs (the rows of one issuer group),
        including retained entries of deleted ones and their revoked subordinate CAs. Columns
        only, and the dates as epoch seconds computed by the database: there may be a million
        rows, and parsing a million datetimes is slow. (The invalidity date is NULL for
        almost every row, and the CRL index holds it, so it costs nothing.)"""
        revoked_at = func.coalesce(Certificate.revoked_at, Certificate.created_at)
        live = select(
            Certificate.serial_number,
            self._epoch(revoked_at),
            Certificate.revocation_reason,
            self._epoch(Certificate.invalidity_date),
        ).where(
            Certificate.ca_id.in_(ca_ids),
            # a literal, not a parameter: the planner must see it matches the partial index
            Certificate.status == literal_column("'revoked'"),
            Certificate.not_after > at,
        )
        retained = select(
            RetainedCRLEntry.serial_number,
            self._epoch(RetainedCRLEntry.revoked_at),
            RetainedCRLEntry.reason,
            self._epoch(RetainedCRLEntry.invalidity_date),
        ).where(RetainedCRLEntry.ca_id.in_(ca_ids), RetainedCRLEntry.not_after > at)
        sub = CertificateAuthority
        subordinates = select(
            sub.serial_number,
            self._epoch(sub.revoked_at),
            sub.revocation_reason,
            cast(null(), Integer),  # no invalidity date
        ).where(sub.parent_id.in_(ca_ids), sub.revoked_at.is_not(None), sub.not_after > at)
        # Core rows (no ORM) through the session's connection: the cheapest way per row
        connection = self._session.connection()
        rows = list(connection.execute(live).all())
        rows.extend(connection.execute(retained).all())
        rows.extend(connection.execute(subordinates).all())
        return rows  # Rows unpack like (serial, epoch, reason, epoch or None) tuples

    def _epoch(self, moment: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ColumnElement[int]:
        """Seconds since the epoch of a stored (naive UTC) timestamp; NULL stays NULL."""
        if self._session.get_bind().dialect.name == "postgresql":
            return cast(func.floor(func.extract("epoch", moment)), BigInteger)
        return cast(func.strftime("%s", moment), Integer)

    def changed_serials(
        self, ca_ids: Sequence[int], since: datetime
    ) -> Sequence[tuple[str, datetime, bool]]:
        """Serials of the CAs whose status changed since `since` (revoked, released from
        hold, or deleted), and whether their certificate is still in the inventory."""
        query = (
            select(
                StatusChange.serial_number,
                StatusChange.changed_at,
                Certificate.id.is_not(None),
            )
            .outerjoin(Certificate, Certificate.id == StatusChange.certificate_id)
            .where(StatusChange.ca_id.in_(ca_ids), StatusChange.changed_at >= since)
            .order_by(StatusChange.changed_at)
        )
        return list(self._session.execute(query))

    # Following the status-change log ---------------------------------------------------

    def changes_after(self, last_id: int, limit: int) -> Sequence[tuple[int, int | None]]:
        after = StatusChangeRepository(self._session).after(last_id, limit)
        return [(change_id, ca_id) for change_id, ca_id, _ in after]

    def changes_in(self, ids: Sequence[int]) -> Sequence[tuple[int, int | None]]:
        query = select(StatusChange.id, StatusChange.ca_id).where(StatusChange.id.in_(ids))
        return list(self._session.execute(query))

    def latest_change_id(self) -> int:
        return StatusChangeRepository(self._session).latest_id()

    def cas_changed_since(self, since: datetime) -> Sequence[int]:
        query = (
            select(StatusChange.ca_id)
            .where(StatusChange.changed_at >= since, StatusChange.ca_id.is_not(None))
            .distinct()
        )
        return [ca_id for ca_id in self._session.scalars(query) if ca_id is not None]

    def cas_needing_crl(self, now: datetime) -> Sequence[int]:
        """CAs that can sign CRLs (disabled ones too: they still have certificates to revoke)
        and whose CRL is due, or that have never had one; and CAs that cannot sign but share
        their name with one that can, and have had no CRL yet: perhaps a new row of an issuer
        group, which must serve the group's CRLs. The publisher decides; one that is not
        (another key) is given its reason as `last_error`, and is not offered again."""
        ca = CertificateAuthority
        signs = and_(ca.encrypted_private_key.is_not(None), ca.not_after > now)
        due = or_(
            CRLState.ca_id.is_(None),
            CRLState.due_at.is_(None),
            CRLState.due_at <= now,  # also set, a minute ahead, after a failure
        )
        sibling = aliased(CertificateAuthority)
        named_like_a_signer = (
            select(sibling.id)
            .where(
                sibling.org_id == ca.org_id,
                sibling.subject == ca.subject,
                sibling.encrypted_private_key.is_not(None),
                sibling.not_after > now,
            )
            .exists()
        )
        never_published = or_(
            CRLState.ca_id.is_(None), and_(CRLState.due_at.is_(None), CRLState.last_error.is_(None))
        )
        unoffered = and_(~signs, never_published, named_like_a_signer)
        query = (
            select(ca.id)
            .outerjoin(CRLState, CRLState.ca_id == ca.id)
            .where(or_(and_(signs, due), unoffered))
        )
        return list(self._session.scalars(query))

    def due_for_delta_setting(self, deltas: bool, now: datetime) -> None:
        """Make the CRLs of every CA whose newest publication disagrees with the delta setting
        (a delta CRL stored while they are off, none while they are on) due now. Idempotent
        across processes: once republished, a CA no longer matches."""
        has = {
            kind: exists().where(PublishedCRL.ca_id == CRLState.ca_id, PublishedCRL.kind == kind)
            for kind in ("full", "delta")
        }
        stale = and_(has["full"], ~has["delta"]) if deltas else has["delta"]
        self._session.execute(
            update(CRLState)
            .where(stale)
            .values(due_at=now)
            .execution_options(synchronize_session=False)
        )

    # Serving and management ------------------------------------------------------------

    def latest(self, ca_id: int, kind: str) -> tuple[int, int, str] | None:
        """(row id, CRL number, SHA-256) of the newest stored CRL of that kind."""
        query = (
            select(PublishedCRL.id, PublishedCRL.crl_number, PublishedCRL.sha256)
            .where(PublishedCRL.ca_id == ca_id, PublishedCRL.kind == kind)
            .order_by(PublishedCRL.crl_number.desc())
            .limit(1)
        )
        row = self._session.execute(query).first()
        return (row[0], row[1], row[2]) if row else None

    def published(self, crl_id: int) -> PublishedCRL | None:
        return self._session.get(PublishedCRL, crl_id)

    def summaries(self, org_id: int, ca_ids: Sequence[int]) -> dict[tuple[int, str], PublishedCRL]:
        """The newest full and delta CRL of each CA, without their DER."""
        newest = (
            select(
                PublishedCRL.ca_id,
                PublishedCRL.kind,
                func.max(PublishedCRL.crl_number).label("number"),
            )
            .where(PublishedCRL.org_id == org_id, PublishedCRL.ca_id.in_(ca_ids))
            .group_by(PublishedCRL.ca_id, PublishedCRL.kind)
            .subquery()
        )
        columns = [c for c in PublishedCRL.__table__.columns if c.name != "der"]
        query = select(*columns).join(
            newest,
            and_(
                PublishedCRL.ca_id == newest.c.ca_id,
                PublishedCRL.kind == newest.c.kind,
                PublishedCRL.crl_number == newest.c.number,
            ),
        )
        found: dict[tuple[int, str], PublishedCRL] = {}
        for row in self._session.execute(query).mappings():
            crl = PublishedCRL(**dict(row))
            found[(crl.ca_id, crl.kind)] = crl
        return found

    def states(self, ca_ids: Sequence[int]) -> dict[int, CRLState]:
        rows = self._session.scalars(select(CRLState).where(CRLState.ca_id.in_(ca_ids)))
        return {row.ca_id: row for row in rows}

    # Deleting a revoked certificate ----------------------------------------------------

    def retain(self, cert: Certificate, now: datetime) -> None:
        """Keep the CRL entry of a revoked certificate that is being deleted."""
        if cert.ca_id is None or cert.status != "revoked":
            return
        entry = {
            "ca_id": cert.ca_id,
            "org_id": cert.org_id,
            "certificate_id": cert.id,
            "serial_number": cert.serial_number,
            "revoked_at": cert.revoked_at or now,
            "reason": cert.revocation_reason,
            "invalidity_date": cert.invalidity_date,
        }
        self._keep(entry, cert.not_after, now)

    def retain_ca(self, ca: CertificateAuthority, now: datetime) -> None:
        """Keep the CRL entry of a revoked subordinate CA that is being deleted."""
        if ca.parent_id is None or ca.revoked_at is None:
            return
        entry = {
            "ca_id": ca.parent_id,
            "org_id": ca.org_id,
            "certificate_id": 0,  # a CA is no inventory row
            "serial_number": ca.serial_number,
            "revoked_at": ca.revoked_at,
            "reason": ca.revocation_reason,
            "invalidity_date": None,
        }
        self._keep(entry, ca.not_after, now)

    def hold_states(self, org_id: int, subject: str) -> None:
        """Hold the CRL state rows of the organization's CAs with this subject until the
        transaction ends (PostgreSQL: FOR UPDATE, in id order, so the group's oldest first, as
        a publication takes them), before a deletion holds their CA rows: a publication
        updates the states and then stores CRLs referencing the CA rows, and a deletion that
        held the CA rows first and then reached the states (its updates, the cascade) would
        deadlock with it."""
        ca = CertificateAuthority
        named = select(ca.id).where(ca.org_id == org_id, ca.subject == subject)
        states = (
            select(CRLState.ca_id)
            .where(CRLState.ca_id.in_(named))
            .order_by(CRLState.ca_id)
            .with_for_update(of=CRLState)
        )
        self._session.execute(states)

    def hand_over(self, ca_id: int, heirs: Sequence[int], now: datetime) -> None:
        """File under the first of `heirs`, the rows of `ca_id`'s issuer group that stay, what
        the group publishes and is filed under `ca_id`, which is being deleted: its kept
        entries (which would go with its row) and its status changes (which delta CRLs read
        per row). The group's CRLs are made due: a change under `ca_id` that the followers
        saw but had not published yet is dropped with its row, and must not wait for the
        next scheduled CRL."""
        for table in (RetainedCRLEntry, StatusChange):
            self._session.execute(
                update(table)
                .where(table.ca_id == ca_id)
                .values(ca_id=heirs[0])
                .execution_options(synchronize_session=False)
            )
        self._session.execute(
            update(CRLState)
            .where(CRLState.ca_id.in_(heirs))
            .values(due_at=now)
            .execution_options(synchronize_session=False)
        )

    def _keep(self, entry: dict[str, object], not_after: datetime, now: datetime) -> None:
        if not_after > now:  # an expired certificate leaves CRLs anyway (RFC 5280 3.3)
            values = {**entry, "not_after": not_after, "deleted_at": now}
            self._session.execute(insert(RetainedCRLEntry).values(**values))
