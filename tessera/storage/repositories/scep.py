"""SCEP profiles, challenge passwords and enrollment requests, scoped to one organization."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate, CertificateAuthority
from tessera.storage.models_scep import ScepChallenge, ScepProfile, ScepRequest
from tessera.storage.repositories.certificates import REVOKED
from tessera.storage.repositories.rows import insert_row

PENDING, ISSUED, REJECTED = "pending", "issued", "rejected"
STATIC, DYNAMIC = "static", "dynamic"


@dataclass(frozen=True)
class ResponderIdentity:
    """What a current responder is made of, read with the profile: the CA and RA rows by id
    and serial (an id alone may be reused after a delete on SQLite), and whether the CA may
    sign. Certificates and keys never change under an id and serial, so the responder built
    from them can be kept for as long as this identity is what the profile reads."""

    ca_id: int
    ca_serial: str
    ca_usable: bool  # active, and its key is held here
    use_ra: bool
    ra_id: int | None
    ra_serial: str | None
    # Not revoked: a revoked RA must stop answering at once, not when its cached responder
    # would next be rebuilt (the renewal job replaces it).
    ra_active: bool


@dataclass(frozen=True)
class ProfileView:
    """A SCEP profile as the protocol reads it on every request (it satisfies the domain's
    `ProfileSettings`)."""

    id: int
    slug: str
    enabled: bool
    ca_id: int | None
    next_ca_id: int | None
    template_id: int | None
    auto_approve: bool
    challenge_type: str
    queue_without_challenge: bool
    use_ra: bool
    ra_certificate_id: int | None
    next_ra_certificate_id: int | None
    responder_identity: ResponderIdentity | None  # None when the profile has no CA


# The profile's own columns, in the view's field order (the responder identity is joined).
_PROFILE_FIELDS = tuple(f.name for f in fields(ProfileView) if f.name != "responder_identity")
# Built once from the tables (plain Core, no ORM entity loading) and run on the session's
# connection: every SCEP request reads its profile with what identifies its responder, and
# every enrollment its challenge and any earlier request of its transaction (usually none).
_P, _CA = ScepProfile.__table__.c, CertificateAuthority.__table__.c
_RA_TABLE = Certificate.__table__.alias("ra")
_RA = _RA_TABLE.c
_VIEW_BY_SLUG = (
    select(
        *(_P[name] for name in _PROFILE_FIELDS),
        _CA.serial_number,
        _CA.is_active,
        _CA.encrypted_private_key.is_not(None),
        _RA.serial_number,
        _RA.status,
    )
    .select_from(
        ScepProfile.__table__.outerjoin(
            CertificateAuthority.__table__,
            (_CA.id == _P.ca_id) & (_CA.org_id == _P.org_id),
        ).outerjoin(_RA_TABLE, (_RA.id == _P.ra_certificate_id) & (_RA.org_id == _P.org_id))
    )
    .where(_P.org_id == bindparam("org_id"), _P.slug == bindparam("slug"))
)
_CH, _RQ = ScepChallenge.__table__.c, ScepRequest.__table__.c
_STATIC_DIGEST = (
    select(_CH.digest)
    .where(_CH.org_id == bindparam("org_id"), _CH.ca_id == bindparam("ca_id"), _CH.kind == STATIC)
    .order_by(_CH.id.desc())
    .limit(1)
)
# A transactionID holds one request, or a few when its requester renews under it (clients
# derive it from their key) or asks for another subject; bounded all the same.
MAX_TRANSACTION_REQUESTS = 50
_TRANSACTION_REQUEST_IDS = (
    select(_RQ.id)
    .where(
        _RQ.org_id == bindparam("org_id"),
        _RQ.profile_id == bindparam("profile_id"),
        _RQ.transaction_id == bindparam("transaction_id"),
    )
    .order_by(_RQ.id.desc())
    .limit(MAX_TRANSACTION_REQUESTS)
)

# A key's requests still queued in a profile: on every PKCSReq, and usually none.
_PENDING_KEY_REQUEST_IDS = (
    select(_RQ.id)
    .where(
        _RQ.org_id == bindparam("org_id"),
        _RQ.status == PENDING,
        _RQ.profile_id == bindparam("profile_id"),
        _RQ.key_digest == bindparam("key_digest"),
    )
    .order_by(_RQ.id.desc())
    .limit(MAX_TRANSACTION_REQUESTS)
)


class ScepRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    # Profiles
    def _profiles(self) -> Select[ScepProfile]:
        return select(ScepProfile).where(ScepProfile.org_id == self._org_id)

    def profile(self, slug: str) -> ScepProfile | None:
        return self._session.scalar(self._profiles().where(ScepProfile.slug == slug))

    def profile_view(self, slug: str) -> ProfileView | None:
        """The profile without the ORM (one Core statement), for the protocol's hot path."""
        params = {"org_id": self._org_id, "slug": slug}
        row = self._session.connection().execute(_VIEW_BY_SLUG, params).first()
        if row is None:
            return None
        fields = dict(zip(_PROFILE_FIELDS, row[: len(_PROFILE_FIELDS)], strict=True))
        ca_serial, ca_active, ca_has_key, ra_serial, ra_status = row[len(_PROFILE_FIELDS) :]
        identity = None
        if fields["ca_id"] is not None and ca_serial is not None:
            identity = ResponderIdentity(
                fields["ca_id"],
                ca_serial,
                bool(ca_active and ca_has_key),
                bool(fields["use_ra"]),
                fields["ra_certificate_id"],
                ra_serial,
                not fields["use_ra"] or ra_status != REVOKED,  # the RA id outlives use_ra
            )
        return ProfileView(**fields, responder_identity=identity)

    def profile_by_id(self, profile_id: int) -> ScepProfile | None:
        return self._session.scalar(self._profiles().where(ScepProfile.id == profile_id))

    def profiles(self) -> Sequence[ScepProfile]:
        return self._session.scalars(self._profiles().order_by(ScepProfile.id)).all()

    def add_profile(self, profile: ScepProfile) -> ScepProfile:
        profile.org_id = self._org_id
        self._session.add(profile)
        self._session.flush()
        return profile

    def delete_profile(self, profile: ScepProfile) -> None:
        self._session.delete(profile)
        self._session.flush()

    def claim_profile(self, profile: ScepProfile, now: datetime) -> bool:
        """Touch the row only if its RA certificates are still the ones we read: the
        processes renewing at once serialize on the row and all but one see no match."""
        result = self._session.execute(
            update(ScepProfile)
            .where(
                ScepProfile.id == profile.id,
                ScepProfile.ra_certificate_id.is_not_distinct_from(profile.ra_certificate_id),
                ScepProfile.next_ra_certificate_id.is_not_distinct_from(
                    profile.next_ra_certificate_id
                ),
            )
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    # Challenges
    def _challenges(self, ca_id: int, kind: str) -> Select[ScepChallenge]:
        return select(ScepChallenge).where(
            ScepChallenge.org_id == self._org_id,
            ScepChallenge.ca_id == ca_id,
            ScepChallenge.kind == kind,
        )

    def static_challenge(self, ca_id: int) -> ScepChallenge | None:
        return self._session.scalar(
            self._challenges(ca_id, STATIC).order_by(ScepChallenge.id.desc()).limit(1)
        )

    def static_challenge_digest(self, ca_id: int) -> str | None:
        params = {"org_id": self._org_id, "ca_id": ca_id}
        found = self._session.connection().execute(_STATIC_DIGEST, params)
        return found.scalar()

    def add_challenge(self, challenge: ScepChallenge) -> ScepChallenge:
        challenge.org_id = self._org_id
        self._session.add(challenge)
        self._session.flush()
        return challenge

    def drop_static_challenges(self, ca_id: int) -> None:
        for row in self._session.scalars(self._challenges(ca_id, STATIC)).all():
            self._session.delete(row)
        self._session.flush()

    def dynamic_challenge(self, ca_id: int, digest: str) -> ScepChallenge | None:
        return self._session.scalar(
            self._challenges(ca_id, DYNAMIC).where(ScepChallenge.digest == digest)
        )

    def consume_challenge(self, challenge: ScepChallenge, now: datetime) -> bool:
        """Mark a dynamic challenge used, atomically: of two requests racing with the same
        challenge, exactly one sees True."""
        result = self._session.execute(
            update(ScepChallenge)
            .where(ScepChallenge.id == challenge.id, ScepChallenge.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def expire_dynamic_challenges(self, ca_id: int, now: datetime) -> int:
        result = self._session.execute(
            update(ScepChallenge)
            .where(
                ScepChallenge.org_id == self._org_id,
                ScepChallenge.ca_id == ca_id,
                ScepChallenge.kind == DYNAMIC,
                ScepChallenge.used_at.is_(None),
            )
            .values(expires_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))

    def open_dynamic_challenges(self, ca_id: int, now: datetime) -> int:
        query = self._challenges(ca_id, DYNAMIC).where(
            ScepChallenge.used_at.is_(None), ScepChallenge.expires_at > now
        )
        return self._session.scalar(select(func.count()).select_from(query.subquery())) or 0

    # Requests
    def _requests(self) -> Select[ScepRequest]:
        return select(ScepRequest).where(ScepRequest.org_id == self._org_id)

    def add_request(self, row: ScepRequest) -> ScepRequest:
        """One INSERT ... RETURNING (see rows.insert_row): this runs on every enrollment."""
        row.org_id = self._org_id
        insert_row(self._session, row)
        return row

    def request(self, request_id: int) -> ScepRequest | None:
        return self._session.scalar(self._requests().where(ScepRequest.id == request_id))

    def transaction_requests(self, profile_id: int, transaction_id: str) -> list[ScepRequest]:
        """The profile's requests under a transactionID, newest first: one Core statement
        for their ids (on every enrollment, and usually none), then the rows."""
        params = {
            "org_id": self._org_id,
            "profile_id": profile_id,
            "transaction_id": transaction_id,
        }
        return self._rows(_TRANSACTION_REQUEST_IDS, params)

    def hold_transaction(self, profile_id: int, transaction_id: str) -> None:
        """Hold a transaction of the profile until the unit of work ends, so that looking for
        an earlier request under it and issuing run one at a time across processes: two
        copies of one request sent at once would otherwise both find none and both issue.
        On PostgreSQL an advisory lock on this transaction alone; on SQLite, whose writers
        are serialised anyway, the database's write lock, taken now by a first write that
        changes nothing (as `OrganizationRepository.hold` does)."""
        if self._session.get_bind().dialect.name == "postgresql":
            key = _transaction_lock_key(self._org_id, profile_id, transaction_id)
            self._session.execute(select(func.pg_advisory_xact_lock(key)))
            return
        self._session.execute(
            update(ScepProfile)
            .where(ScepProfile.id == profile_id)
            .values(updated_at=ScepProfile.updated_at)
            .execution_options(synchronize_session=False)
        )

    def pending_for_key(self, profile_id: int, key_digest: str) -> list[ScepRequest]:
        """The profile's queued requests for a public key (the CSR's), newest first."""
        params = {"org_id": self._org_id, "profile_id": profile_id, "key_digest": key_digest}
        return self._rows(_PENDING_KEY_REQUEST_IDS, params)

    def _rows(self, ids_query: Select[tuple[int]], params: dict[str, object]) -> list[ScepRequest]:
        """One Core statement for the ids (usually none), then the rows, newest first."""
        ids = self._session.connection().execute(ids_query, params).scalars().all()
        if not ids:
            return []
        query = self._requests().where(ScepRequest.id.in_(ids)).order_by(ScepRequest.id.desc())
        return list(self._session.scalars(query).all())

    def requests(
        self, status: str | None, page: int, per_page: int
    ) -> tuple[Sequence[ScepRequest], int]:
        query = self._requests()
        if status is not None:
            query = query.where(ScepRequest.status == status)
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self._session.scalars(
            query.order_by(ScepRequest.id.desc()).offset((page - 1) * per_page).limit(per_page)
        ).all()
        return rows, total

    def mark_rejection_answered(self, row: ScepRequest, now: datetime) -> None:
        """Record that a client was given the request's rejection; flushed at once, so that
        the protocol's early commit (`commit_before_answering`) sees a write to commit."""
        row.rejection_answered_at = now
        self._session.flush()

    def reload_request(self, row: ScepRequest) -> None:
        """Read the row again: another transaction changed it since it was loaded."""
        self._session.refresh(row)

    def claim_pending(self, row: ScepRequest, status: str, now: datetime, by: str) -> bool:
        """Move a pending request to its decision, atomically, so two admins (or an admin and
        a retry) never decide it twice."""
        result = self._session.execute(
            update(ScepRequest)
            .where(ScepRequest.id == row.id, ScepRequest.status == PENDING)
            .values(status=status, decided_at=now, decided_by=by)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        row.status, row.decided_at, row.decided_by = status, now, by
        return True

    def counts(self) -> dict[str, int]:
        rows = self._session.execute(
            select(ScepRequest.status, func.count())
            .where(ScepRequest.org_id == self._org_id)
            .group_by(ScepRequest.status)
        ).all()
        return {str(status): int(count) for status, count in rows}

    def counts_by_type(self) -> dict[str, int]:
        rows = self._session.execute(
            select(ScepRequest.message_type, func.count())
            .where(ScepRequest.org_id == self._org_id, ScepRequest.status == ISSUED)
            .group_by(ScepRequest.message_type)
        ).all()
        return {str(kind): int(count) for kind, count in rows}

    # Certificates, as GetCert and GetCRL name them
    def certificate_by_serial(self, serial_hex: str, ca_ids: Sequence[int]) -> Certificate | None:
        return self._session.scalar(
            select(Certificate)
            .where(
                Certificate.org_id == self._org_id,
                Certificate.serial_number == serial_hex,
                Certificate.ca_id.in_(ca_ids),
            )
            .limit(1)
        )


def _transaction_lock_key(org_id: int, profile_id: int, transaction_id: str) -> int:
    """A signed 64-bit advisory lock key for one transaction of one profile; a collision
    only makes two transactions wait for each other."""
    name = f"scep-transaction:{org_id}:{profile_id}:{transaction_id}".encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


def all_profile_slugs(session: Session) -> list[tuple[int, str]]:
    """(org id, slug) of every enabled profile: the RA renewal job serves all organizations."""
    rows = session.execute(
        select(ScepProfile.org_id, ScepProfile.slug).where(ScepProfile.enabled.is_(True))
    ).all()
    return [(int(org_id), str(slug)) for org_id, slug in rows]
