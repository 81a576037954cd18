"""ACME server storage: the only code that queries the acme_* tables."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tessera.storage.models import Certificate
from tessera.storage.models_acme import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeEabKey,
    AcmeNonce,
    AcmeOrder,
    AcmeRenewalMark,
    AcmeSettings,
)


class AcmeNonceRepository:
    """Nonces are not per organization: one directory, one nonce space."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, value: str, expires_at: datetime) -> None:
        self._session.add(AcmeNonce(value=value, expires_at=expires_at))

    def consume(self, value: str, now: datetime) -> bool:
        """Single use across every server process: the DELETE that returns the row wins."""
        found = self._session.execute(_SPEND_NONCE, {"value": value, "now": now})
        return found.first() is not None

    def purge(self, now: datetime) -> int:
        result = self._session.execute(delete(AcmeNonce).where(AcmeNonce.expires_at <= now))
        return int(getattr(result, "rowcount", 0) or 0)


# Built once (SQLAlchemy then skips building the statement and its cache key): every ACME
# request reads the settings, spends a nonce and loads its account, order or authorization.
_SETTINGS = select(*AcmeSettings.__table__.columns).where(
    AcmeSettings.org_id == bindparam("org_id")
)
_NONCE_TABLE, _CHALLENGE_TABLE = (
    cast(Table, AcmeNonce.__table__),
    cast(Table, AcmeChallenge.__table__),
)
_NONCES, _CHALLENGES = _NONCE_TABLE.c, _CHALLENGE_TABLE.c
# Plain Core DML (no ORM session synchronisation): no nonce or claimed challenge is loaded in
# the session when these run.
_SPEND_NONCE = (
    delete(_NONCE_TABLE)
    .where(_NONCES.value == bindparam("value"), _NONCES.expires_at > bindparam("now"))
    .returning(_NONCES.value)
)
_ACCOUNT = select(AcmeAccount).where(
    AcmeAccount.id == bindparam("id"), AcmeAccount.org_id == bindparam("org_id")
)
_ORDER = select(AcmeOrder).where(
    AcmeOrder.id == bindparam("id"), AcmeOrder.org_id == bindparam("org_id")
)
_AUTHORIZATION = select(AcmeAuthorization).where(
    AcmeAuthorization.id == bindparam("id"), AcmeAuthorization.org_id == bindparam("org_id")
)
_ORDER_AUTHORIZATIONS = (
    select(AcmeAuthorization)
    .where(
        AcmeAuthorization.org_id == bindparam("org_id"),
        AcmeAuthorization.order_id == bindparam("id"),
    )
    .order_by(AcmeAuthorization.id)
)
_CHALLENGE_WITH_AUTHORIZATION = select(AcmeChallenge, AcmeAuthorization).join(
    AcmeAuthorization, AcmeAuthorization.id == AcmeChallenge.authz_id
)
_CHALLENGE_IN_ORG = _CHALLENGE_WITH_AUTHORIZATION.where(
    AcmeChallenge.id == bindparam("id"), AcmeAuthorization.org_id == bindparam("org_id")
)
_CHALLENGE_ANY_ORG = _CHALLENGE_WITH_AUTHORIZATION.where(AcmeChallenge.id == bindparam("id"))
_ORDER_FOR_CERTIFICATE = select(AcmeOrder).where(
    AcmeOrder.certificate_id == bindparam("id"), AcmeOrder.org_id == bindparam("org_id")
)
# The validation job's reads and its compare-and-set claim, run after every challenge answer.
_DUE_CHALLENGES = (
    select(AcmeChallenge.id, AcmeChallenge.next_attempt_at)
    .where(AcmeChallenge.status == "processing", AcmeChallenge.next_attempt_at <= bindparam("now"))
    .order_by(AcmeChallenge.next_attempt_at)
    .limit(bindparam("limit"))
)
_CLAIM_CHALLENGE = (
    update(_CHALLENGE_TABLE)
    .where(
        _CHALLENGES.id == bindparam("claim_id"),
        _CHALLENGES.status == "processing",
        _CHALLENGES.next_attempt_at == bindparam("claim_seen"),
    )
    .values(next_attempt_at=bindparam("claim_until"), attempts=_CHALLENGES.attempts + 1)
)
_AUTHORIZATION_CHALLENGES = (
    select(AcmeChallenge)
    .where(AcmeChallenge.authz_id == bindparam("id"))
    .order_by(AcmeChallenge.id)
)
_ORDERS = cast(Table, AcmeOrder.__table__)
_ORDER_ROW = (
    _ORDERS.c.id == bindparam("b_id"),
    _ORDERS.c.org_id == bindparam("b_org"),
)
# Executed with the new values as parameters named after their columns: those are the SET.
_CLAIM_ORDER = update(_ORDERS).where(
    *_ORDER_ROW,
    _ORDERS.c.awaiting_approval == bindparam("b_awaiting"),
    _ORDERS.c.certificate_id.is_(None),
    _ORDERS.c.status.in_(bindparam("b_statuses", expanding=True)),
)
_SET_ORDER_CERTIFICATE = update(_ORDERS).where(*_ORDER_ROW)


class AcmeRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id
        self._read_settings: AcmeSettings | None = None

    # settings
    def settings(self, for_update: bool = False) -> AcmeSettings:
        """The stored settings, or the defaults. Reads never insert (two processes reading
        at once would race on the primary key); the first update stores the row.

        Without `for_update` the row is read once per unit of work with one Core statement
        into an object the session does not track (changing it changes nothing); after a
        `for_update`, reads return the tracked row."""
        if not for_update:
            if self._read_settings is None:
                params = {"org_id": self._org_id}
                found = self._session.connection().execute(_SETTINGS, params).first()
                self._read_settings = AcmeSettings(**found._mapping) if found else self._defaults()
            return self._read_settings
        row = self._session.get(AcmeSettings, self._org_id)
        if row is None:
            row = self._defaults()
            self._session.add(row)
            self._session.flush()
        self._read_settings = row
        return row

    def _defaults(self) -> AcmeSettings:
        return AcmeSettings(
            org_id=self._org_id,
            enabled=True,
            validity_days=90,
            require_approval=False,
            require_eab=False,
            caa_check_ca_ids=[],
            caa_identities=[],
            profiles={},
        )

    def flush(self) -> None:
        self._session.flush()

    # accounts
    def add_account(self, account: AcmeAccount) -> AcmeAccount | None:
        """None when its key has an account already: registered by a request that committed
        after this one looked (the unique thumbprint refuses the second row)."""
        account.org_id = self._org_id
        try:
            with self._session.begin_nested():
                self._session.add(account)
        except IntegrityError:
            return None
        return account

    def change_key(self, account: AcmeAccount, thumbprint: str, jwk: dict[str, Any]) -> bool:
        """False (and the account unchanged) when another account has the key: given to it
        by a request that committed after this one looked (the unique thumbprint refuses)."""
        try:
            with self._session.begin_nested():
                account.thumbprint, account.jwk = thumbprint, jwk
                self._session.flush()
        except IntegrityError:
            return False
        return True

    def account(self, account_id: int) -> AcmeAccount | None:
        return self._session.scalar(_ACCOUNT, {"id": account_id, "org_id": self._org_id})

    def account_by_thumbprint(self, thumbprint: str) -> AcmeAccount | None:
        return self._session.scalar(
            select(AcmeAccount).where(
                AcmeAccount.thumbprint == thumbprint, AcmeAccount.org_id == self._org_id
            )
        )

    def is_account_key(self, thumbprint: str) -> bool:
        """Whether any account, of any organization and in any status, has this key: account
        keys are unique across the server (the unique thumbprint)."""
        found = self._session.scalar(
            select(AcmeAccount.id).where(AcmeAccount.thumbprint == thumbprint).limit(1)
        )
        return found is not None

    def accounts(self, page: int, per_page: int) -> tuple[Sequence[AcmeAccount], int]:
        query = select(AcmeAccount).where(AcmeAccount.org_id == self._org_id)
        return self._page(query.order_by(AcmeAccount.id.desc()), page, per_page)

    def order_counts(self, account_ids: Sequence[int]) -> dict[int, int]:
        query = (
            select(AcmeOrder.account_id, func.count())
            .where(AcmeOrder.org_id == self._org_id, AcmeOrder.account_id.in_(account_ids))
            .group_by(AcmeOrder.account_id)
        )
        return {int(a): int(n) for a, n in self._session.execute(query).all()}

    # external account binding keys
    def add_eab(self, key: AcmeEabKey) -> AcmeEabKey:
        key.org_id = self._org_id
        self._session.add(key)
        self._session.flush()
        return key

    def eab(self, key_id: int) -> AcmeEabKey | None:
        return self._session.scalar(
            select(AcmeEabKey).where(AcmeEabKey.id == key_id, AcmeEabKey.org_id == self._org_id)
        )

    def eab_by_kid(self, kid: str) -> AcmeEabKey | None:
        return self._session.scalar(
            select(AcmeEabKey).where(AcmeEabKey.kid == kid, AcmeEabKey.org_id == self._org_id)
        )

    def eab_keys(self) -> Sequence[AcmeEabKey]:
        query = select(AcmeEabKey).where(AcmeEabKey.org_id == self._org_id)
        return self._session.scalars(query.order_by(AcmeEabKey.id.desc())).all()

    def bind_eab(self, key: AcmeEabKey, account_id: int) -> bool:
        """Bind an unused key in one statement, so two accounts can never share one."""
        result = self._session.execute(
            update(AcmeEabKey)
            .where(
                AcmeEabKey.id == key.id,
                AcmeEabKey.account_id.is_(None),
                AcmeEabKey.revoked_at.is_(None),
            )
            .values(account_id=account_id)
        )
        return bool(getattr(result, "rowcount", 0))

    # orders
    def add_order(self, order: AcmeOrder) -> AcmeOrder | None:
        """The order, written; None when it replaces a certificate that a live order written
        meanwhile already replaces (the partial unique index of migration 0016)."""
        order.org_id = self._org_id
        if order.replaces is None:
            self._session.add(order)
            self._session.flush()
            return order
        try:
            with self._session.begin_nested():
                self._session.add(order)
        except IntegrityError:
            return None
        return order

    def order(self, order_id: int) -> AcmeOrder | None:
        return self._session.scalar(_ORDER, {"id": order_id, "org_id": self._org_id})

    def order_for_certificate(self, certificate_id: int) -> AcmeOrder | None:
        params = {"id": certificate_id, "org_id": self._org_id}
        return self._session.scalar(_ORDER_FOR_CERTIFICATE, params)

    def account_order_ids(
        self, account_id: int, now: datetime, limit: int, before: int | None = None
    ) -> Sequence[int]:
        """The account's orders but the invalid ones (RFC 8555 7.1.2.1), newest first; with
        `before`, those older than that order (the next page). An order past its expiry that
        was never issued is invalid (7.1.6) whether or not the cleanup job has marked it."""
        query = select(AcmeOrder.id).where(
            AcmeOrder.org_id == self._org_id,
            AcmeOrder.account_id == account_id,
            AcmeOrder.status != "invalid",
            or_(AcmeOrder.status == "valid", AcmeOrder.expires_at > now),
        )
        if before is not None:
            query = query.where(AcmeOrder.id < before)
        return self._session.scalars(query.order_by(AcmeOrder.id.desc()).limit(limit)).all()

    def cancel_pending(self, account_id: int) -> None:
        """What a deactivated account had under way stops (RFC 8555 7.3.6): its orders not
        yet issued become invalid, an approval it waits for included, and its pending
        authorizations are deactivated."""
        self._session.execute(
            update(AcmeOrder)
            .where(
                AcmeOrder.org_id == self._org_id,
                AcmeOrder.account_id == account_id,
                AcmeOrder.status.in_(("pending", "ready", "processing")),
                AcmeOrder.certificate_id.is_(None),
            )
            .values(status="invalid", awaiting_approval=False)
            .execution_options(synchronize_session=False)
        )
        self._session.execute(
            update(AcmeAuthorization)
            .where(
                AcmeAuthorization.org_id == self._org_id,
                AcmeAuthorization.account_id == account_id,
                AcmeAuthorization.status == "pending",
            )
            .values(status="deactivated")
            .execution_options(synchronize_session=False)
        )

    def orders(
        self, page: int, per_page: int, status: str | None, account_id: int | None
    ) -> tuple[Sequence[AcmeOrder], int]:
        query = select(AcmeOrder).where(AcmeOrder.org_id == self._org_id)
        if status:
            query = query.where(AcmeOrder.status == status)
        if account_id is not None:
            query = query.where(AcmeOrder.account_id == account_id)
        return self._page(query.order_by(AcmeOrder.id.desc()), page, per_page)

    def claim_order(self, order: AcmeOrder, expected: Sequence[str], **values: Any) -> bool:
        """Move the order on (`values`) in one statement, only if its stored status is one of
        `expected` and it has no certificate and the approval state this unit of work saw:
        of two requests finalizing it at once, or two administrators deciding it, exactly
        one wins, and an order made invalid meanwhile (its account deactivated, an
        authorization lost, expired) is not moved on. `expected` names every status the
        order may be stored with: a pending order whose authorizations are all valid is
        ready when read, stored as pending or as ready. A prebuilt Core statement (every
        finalize claims): an ORM UPDATE, and the flush before it, cost more than the SQL."""
        guard = {
            "b_id": order.id,
            "b_org": self._org_id,
            "b_awaiting": order.awaiting_approval,
            "b_statuses": list(expected),
        }
        result = self._session.connection().execute(_CLAIM_ORDER, {**guard, **values})
        if not result.rowcount:
            return False
        _committed(order, values)
        return True

    def set_order_certificate(self, order: AcmeOrder, certificate_id: int) -> None:
        """The certificate of an order this unit of work has claimed."""
        values = {"certificate_id": certificate_id}
        params = {"b_id": order.id, "b_org": self._org_id, **values}
        self._session.connection().execute(_SET_ORDER_CERTIFICATE, params)
        _committed(order, values)

    def replaced(self, certid: str) -> AcmeOrder | None:
        """An order that already replaces this certificate (ARI `replaces`)."""
        return self._session.scalar(
            select(AcmeOrder).where(
                AcmeOrder.org_id == self._org_id,
                AcmeOrder.replaces == certid,
                AcmeOrder.status != "invalid",
            )
        )

    # authorizations and challenges
    def add_authorizations(self, authzs: list[AcmeAuthorization]) -> list[AcmeAuthorization]:
        for authz in authzs:
            authz.org_id = self._org_id
        self._session.add_all(authzs)
        self._session.flush()
        return authzs

    def authorization(self, authz_id: int) -> AcmeAuthorization | None:
        return self._session.scalar(_AUTHORIZATION, {"id": authz_id, "org_id": self._org_id})

    def order_authorizations(self, order_id: int) -> Sequence[AcmeAuthorization]:
        params = {"id": order_id, "org_id": self._org_id}
        return self._session.scalars(_ORDER_AUTHORIZATIONS, params).all()

    def authorized_identifiers(
        self, account_id: int, values: Sequence[str], now: datetime
    ) -> set[tuple[str, str, bool]]:
        """(type, value, wildcard) of the account's valid, unexpired authorizations for these
        values (an authorization names a wildcard by its base domain)."""
        if not values:
            return set()
        rows = self._session.execute(
            select(
                AcmeAuthorization.identifier_type,
                AcmeAuthorization.identifier_value,
                AcmeAuthorization.wildcard,
            ).where(
                AcmeAuthorization.org_id == self._org_id,
                AcmeAuthorization.account_id == account_id,
                AcmeAuthorization.status == "valid",
                AcmeAuthorization.expires_at > now,
                AcmeAuthorization.identifier_value.in_(sorted(set(values))),
            )
        )
        return {(kind, value, bool(wildcard)) for kind, value, wildcard in rows}

    def add_challenges(self, challenges: list[AcmeChallenge]) -> None:
        self._session.add_all(challenges)
        self._session.flush()

    def challenge(self, challenge_id: int) -> tuple[AcmeChallenge, AcmeAuthorization] | None:
        params = {"id": challenge_id, "org_id": self._org_id}
        row = self._session.execute(_CHALLENGE_IN_ORG, params).first()
        return (row[0], row[1]) if row else None

    def authorization_challenges(self, authz_id: int) -> Sequence[AcmeChallenge]:
        return self._session.scalars(_AUTHORIZATION_CHALLENGES, {"id": authz_id}).all()

    # early renewal (ARI)
    def renewal_mark(self, certificate_id: int) -> AcmeRenewalMark | None:
        return self._session.scalar(
            select(AcmeRenewalMark).where(
                AcmeRenewalMark.certificate_id == certificate_id,
                AcmeRenewalMark.org_id == self._org_id,
            )
        )

    def add_renewal_mark(self, mark: AcmeRenewalMark) -> None:
        mark.org_id = self._org_id
        self._session.add(mark)
        self._session.flush()

    def certificate_by_serial(self, serial_hex: str, ca_ids: Sequence[int]) -> Certificate | None:
        """The certificate with this serial issued by one of these CAs (those sharing a key,
        `CARepository.ids_by_subject_key_id`: serials are random, so at most one matches)."""
        return self._session.scalar(
            select(Certificate)
            .where(
                Certificate.org_id == self._org_id,
                Certificate.serial_number == serial_hex,
                Certificate.ca_id.in_(ca_ids),
            )
            .limit(1)
        )

    def certificate_by_fingerprint(self, fingerprint: str) -> Certificate | None:
        return self._session.scalar(
            select(Certificate).where(
                Certificate.org_id == self._org_id, Certificate.fingerprint_sha256 == fingerprint
            )
        )

    # statistics
    def stats(self) -> dict[str, dict[str, int]]:
        accounts = self._session.execute(
            select(AcmeAccount.status, func.count())
            .where(AcmeAccount.org_id == self._org_id)
            .group_by(AcmeAccount.status)
        ).all()
        orders = self._session.execute(
            select(AcmeOrder.status, func.count())
            .where(AcmeOrder.org_id == self._org_id)
            .group_by(AcmeOrder.status)
        ).all()
        return {
            "accounts": {str(s): int(n) for s, n in accounts},
            "orders": {str(s): int(n) for s, n in orders},
        }

    def _page(self, query: Select[Any], page: int, per_page: int) -> tuple[Sequence[Any], int]:
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self._session.scalars(query.offset((page - 1) * per_page).limit(per_page)).all()
        return rows, int(total)


class AcmeWorkRepository:
    """What the background jobs read and claim, across organizations."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def due_challenges(self, now: datetime, limit: int) -> Sequence[tuple[int, datetime]]:
        rows = self._session.execute(_DUE_CHALLENGES, {"now": now, "limit": limit}).all()
        return [(int(i), t) for i, t in rows if t is not None]

    def claim_challenge(self, challenge_id: int, seen: datetime, lease_until: datetime) -> bool:
        """Compare-and-set on next_attempt_at: exactly one process wins each attempt."""
        params = {"claim_id": challenge_id, "claim_seen": seen, "claim_until": lease_until}
        result = self._session.execute(_CLAIM_CHALLENGE, params)
        return bool(getattr(result, "rowcount", 0))

    def challenge(self, challenge_id: int) -> tuple[AcmeChallenge, AcmeAuthorization] | None:
        row = self._session.execute(_CHALLENGE_ANY_ORG, {"id": challenge_id}).first()
        return (row[0], row[1]) if row else None

    def expire(self, now: datetime) -> int:
        """Orders past their expiry that never completed (those waiting for an approval
        too) become invalid, and authorizations past theirs, pending or valid, expired
        (RFC 8555 7.1.6); pending challenges stop with them."""
        awaiting = and_(AcmeOrder.status == "processing", AcmeOrder.awaiting_approval.is_(True))
        orders = self._session.execute(
            update(AcmeOrder)
            .where(
                or_(AcmeOrder.status.in_(("pending", "ready")), awaiting),
                AcmeOrder.expires_at <= now,
            )
            .values(status="invalid", awaiting_approval=False)
        )
        authzs = self._session.execute(
            update(AcmeAuthorization)
            .where(
                AcmeAuthorization.status.in_(("pending", "valid")),
                AcmeAuthorization.expires_at <= now,
            )
            .values(status="expired")
        )
        return int(getattr(orders, "rowcount", 0) or 0) + int(getattr(authzs, "rowcount", 0) or 0)


def _committed(row: Any, values: dict[str, Any]) -> None:
    """The object holds what the statement wrote, as committed values (nothing to flush)."""
    for name, value in values.items():
        set_committed_value(row, name, value)
