from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Select, Table, bindparam, delete, func, inspect, select, update
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate, CertificateAuthority

# Built once: every issuance loads its CA, and building the statement and its cache key each
# time cost as much as running it.
_BY_ID = select(CertificateAuthority).where(
    CertificateAuthority.org_id == bindparam("org_id"), CertificateAuthority.id == bindparam("id")
)
_HELD = "tessera_cas_held"


def let_go_of_cas(session: Session) -> None:
    """At the end of a transaction (a session event): the next one reads its CAs again."""
    session.info.pop(_HELD, None)


# Every issuance holds its CA (`hold_signer`): prebuilt Core statements, as an ORM UPDATE
# built per call costs more than the SQL.
_CA_TABLE = cast(Table, CertificateAuthority.__table__)
_HOLD_SIGNER = (
    update(_CA_TABLE)
    .where(_CA_TABLE.c.id == bindparam("h_id"), _CA_TABLE.c.org_id == bindparam("h_org"))
    .values(created_at=_CA_TABLE.c.created_at)
)
_HOLD_ACTIVE_SIGNER = _HOLD_SIGNER.where(
    _CA_TABLE.c.is_active.is_(True), _CA_TABLE.c.revoked_at.is_(None)
)
# PostgreSQL: FOR SHARE, which a revocation's UPDATE waits for, as does an issuance's hold of
# that CA as a signer (`issuance._hold_signers` takes both kinds in one pass in id order);
# SQLite renders no locking clause, its write lock is held by then.
_HOLD_UNREVOKED = (
    select(_CA_TABLE.c.id)
    .where(
        _CA_TABLE.c.id.in_(bindparam("h_ids", expanding=True)),
        _CA_TABLE.c.org_id == bindparam("h_org"),
        _CA_TABLE.c.revoked_at.is_(None),
    )
    .with_for_update(read=True)
)


class CARepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def _scoped(self) -> Select[CertificateAuthority]:
        return select(CertificateAuthority).where(CertificateAuthority.org_id == self._org_id)

    def add(self, ca: CertificateAuthority) -> CertificateAuthority:
        ca.org_id = self._org_id
        self._session.add(ca)
        self._session.flush()
        return ca

    def get(self, ca_id: int) -> CertificateAuthority | None:
        """A CA this unit of work has loaded already is taken from the session instead of
        queried again (a batch of issuances looks its CA up once per issuance); the session
        would hand back that same object, unrefreshed, from the query anyway. The session
        holds what it loaded only weakly, so the CA is kept in its info until the transaction
        ends (`let_go_of_cas`): else it is gone as soon as the first issuance lets go of it."""
        loaded = self._session.identity_map.get(Session.identity_key(CertificateAuthority, ca_id))
        if loaded is not None and inspect(loaded).dict.get("org_id") == self._org_id:
            return cast(CertificateAuthority, loaded)
        ca = self._session.scalar(_BY_ID, {"org_id": self._org_id, "id": ca_id})
        if ca is not None:
            self._session.info.setdefault(_HELD, {})[ca_id] = ca
        return ca

    def by_refid(self, refid: str) -> CertificateAuthority | None:
        return self._session.scalar(self._scoped().where(CertificateAuthority.refid == refid))

    def by_subject_key_id(self, ski: str) -> CertificateAuthority | None:
        return self._session.scalar(
            self._scoped().where(CertificateAuthority.subject_key_id == ski).limit(1)
        )

    def ids_by_subject_key_id(self, ski: str) -> Sequence[int]:
        """Every CA with this key identifier: a CA certificate re-issued for the same key (a
        renewed root) is a CA of its own, and certificates of either name it as issuer."""
        query = select(CertificateAuthority.id).where(
            CertificateAuthority.org_id == self._org_id, CertificateAuthority.subject_key_id == ski
        )
        return self._session.scalars(query).all()

    def unlinked_issued_by(self, issuer: str) -> Sequence[CertificateAuthority]:
        """CAs filed under no parent whose issuer is named `issuer` (self-issued ones aside)."""
        query = self._scoped().where(
            CertificateAuthority.parent_id.is_(None),
            CertificateAuthority.issuer == issuer,
            CertificateAuthority.subject != issuer,
        )
        return self._session.scalars(query).all()

    def with_subject(self, subject: str) -> Sequence[CertificateAuthority]:
        return self._session.scalars(
            self._scoped().where(CertificateAuthority.subject == subject)
        ).all()

    def page(
        self, page: int, per_page: int, include_internal: bool = True
    ) -> tuple[Sequence[CertificateAuthority], int]:
        query = self._scoped()
        if not include_internal:
            query = query.where(CertificateAuthority.internal.is_(False))
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self._session.scalars(
            query.order_by(CertificateAuthority.id).offset((page - 1) * per_page).limit(per_page)
        ).all()
        return rows, total

    def all(self) -> Sequence[CertificateAuthority]:
        return self._session.scalars(self._scoped().order_by(CertificateAuthority.id)).all()

    def many(self, ids: Sequence[int]) -> Sequence[CertificateAuthority]:
        return self._session.scalars(self._scoped().where(CertificateAuthority.id.in_(ids))).all()

    def children_count(self, ca_id: int) -> int:
        query = select(func.count()).where(
            CertificateAuthority.org_id == self._org_id, CertificateAuthority.parent_id == ca_id
        )
        return self._session.scalar(query) or 0

    def certificate_counts(self, ca_ids: Sequence[int] | None) -> dict[int, int]:
        """Certificates per CA: of the given CAs, or with None of every CA of the organization
        (one grouped read of the (org_id, ca_id) index, no list of ids however many CAs)."""
        query = select(Certificate.ca_id, func.count()).where(Certificate.org_id == self._org_id)
        if ca_ids is not None:
            query = query.where(Certificate.ca_id.in_(ca_ids))
        query = query.group_by(Certificate.ca_id)
        return {ca_id: count for ca_id, count in self._session.execute(query) if ca_id}

    def revoke(self, ca: CertificateAuthority, at: datetime, reason: str) -> bool:
        """Revoke (and disable) the CA unless it was revoked, or deleted, since it was read:
        a compare-and-set, so two revocations, or a revocation and a deletion, cannot both
        act on what they read. False when it did not."""
        changed = self._session.execute(
            update(CertificateAuthority)
            .where(
                CertificateAuthority.id == ca.id,
                CertificateAuthority.org_id == self._org_id,
                CertificateAuthority.revoked_at.is_(None),
            )
            .values(revoked_at=at, revocation_reason=reason, is_active=False)
            .execution_options(synchronize_session=False)
        )
        if getattr(changed, "rowcount", 0) != 1:
            return False
        self._session.refresh(ca)
        return True

    def hold_signer(self, ca_id: int, active: bool) -> bool:
        """Hold the CA's row until the transaction ends, if it is still there (and, with
        `active`, still enabled and unrevoked); False if not. A no-op UPDATE: on SQLite the
        database's write lock, on PostgreSQL the row lock a disabling or deletion waits for
        (after which this one sees what they committed)."""
        statement = _HOLD_ACTIVE_SIGNER if active else _HOLD_SIGNER
        held = self._session.connection().execute(statement, {"h_id": ca_id, "h_org": self._org_id})
        return held.rowcount == 1

    def hold_unrevoked(self, ca_ids: Sequence[int]) -> set[int]:
        """Those of these CAs still there and unrevoked, read from the database (not the
        session, which keeps what it loaded before) and held until the transaction ends: a
        revocation either waits for the caller or is seen by it."""
        params = {"h_ids": list(ca_ids), "h_org": self._org_id}
        return set(self._session.connection().execute(_HOLD_UNREVOKED, params).scalars())

    def reread_for_change(self, ca: CertificateAuthority) -> None:
        """Read the CA again, held until the transaction ends (PostgreSQL: FOR UPDATE; on
        SQLite the caller has written already, so it holds the database's write lock)."""
        query = (
            self._scoped()
            .where(CertificateAuthority.id == ca.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        self._session.execute(query)

    def hold_named(self, subject: str) -> list[int]:
        """Hold the organization's CA rows with this subject (an issuer group is among them)
        until the transaction ends, and return their ids: two deletions in one group then run
        one after the other, and the second reads the rows the first left. PostgreSQL: FOR
        NO KEY UPDATE, in id order (no deadlock between two holders; what only references the
        rows, as an issuance or a stored CRL does, is not held up). SQLite reads outside any
        transaction until the first write, whose write lock serialises writers: an UPDATE
        that changes nothing takes it first."""
        ca = CertificateAuthority
        named = (ca.org_id == self._org_id, ca.subject == subject)
        if self._session.get_bind().dialect.name == "sqlite":
            self._session.execute(
                update(ca)
                .where(*named)
                .values(subject=ca.subject)
                .execution_options(synchronize_session=False)
            )
            return list(self._session.scalars(select(ca.id).where(*named)))
        held = select(ca.id).where(*named).order_by(ca.id).with_for_update(key_share=True)
        return list(self._session.scalars(held))

    def delete(self, ca: CertificateAuthority) -> None:
        self._session.execute(
            delete(CertificateAuthority).where(
                CertificateAuthority.id == ca.id, CertificateAuthority.org_id == self._org_id
            )
        )


def find_public_ca(session: Session, reference: str) -> CertificateAuthority | None:
    """CA certificates are public: relying parties fetch them by id or refid, without a tenant."""
    if reference.isascii() and reference.isdigit():
        ca_id = int(reference)
        if not 0 < ca_id < 2**31:
            return None
        return session.scalar(select(CertificateAuthority).where(CertificateAuthority.id == ca_id))
    return session.scalar(
        select(CertificateAuthority).where(CertificateAuthority.refid == reference)
    )
