"""Background work of the ACME server: validating challenges the clients said are ready, and
expiring orders, authorizations and nonces.

Every server process runs these jobs. A challenge is claimed with a compare-and-set on its
next_attempt_at (a lease), so exactly one process validates each attempt; a process that dies
mid-validation leaves a lease that runs out, and another process retries."""

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from tessera.domains import audit
from tessera.domains.acme.validation import ValidationConfig, check_caa, key_authorization, validate
from tessera.domains.actor import system_actor
from tessera.protocols.acme.problems import AcmeProblem
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.acme import AcmeNonceRepository, AcmeWorkRepository

log = logging.getLogger("tessera.acme")
LEASE = timedelta(seconds=60)
BATCH = 32
PARALLEL = 8
VALIDATE_JOB = "acme-validate"
CLEANUP_JOB = "acme-cleanup"


@dataclass(frozen=True)
class Attempt:
    challenge_id: int
    org_id: int
    kind: str
    id_type: str
    name: str
    wildcard: bool
    key_auth: str
    caa_identities: list[str] | None  # None: CAA is not checked for the issuing CA


class AcmeWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        config: ValidationConfig,
        default_caa_identity: str,
        always_valid: bool = False,
    ) -> None:
        self._sessions, self._clock, self._config = sessions, clock, config
        self._default_caa = default_caa_identity
        self._always_valid = always_valid
        if always_valid:
            log.warning(
                "TESSERA_ACME_INSECURE_ALWAYS_VALID is set: ACME challenges are NOT checked"
            )

    def validate_due(self) -> None:
        now = self._clock()
        with self._sessions() as session:
            due = AcmeWorkRepository(session).due_challenges(now, BATCH)
        attempts = [a for a in (self._claim(cid, seen, now) for cid, seen in due) if a]
        if not attempts:
            return
        if len(attempts) == 1:  # the usual case after a kick: no pool of threads to start
            results = [self._check(attempts[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(PARALLEL, len(attempts))) as pool:
                results = list(pool.map(self._check, attempts))
        for attempt, problem in zip(attempts, results, strict=True):
            self._record(attempt, problem)

    def _claim(self, challenge_id: int, seen: datetime, now: datetime) -> Attempt | None:
        with self._sessions() as session:
            work = AcmeWorkRepository(session)
            if not work.claim_challenge(challenge_id, seen, now + LEASE):
                return None
            found = work.challenge(challenge_id)
            if found is None:
                return None
            challenge, authz = found
            repos = Repositories(session, authz.org_id)
            account = repos.acme.account(authz.account_id)
            settings = repos.acme.settings()
            session.commit()
            if account is None:
                return None
            caa = None
            if settings.issuing_ca_id in (settings.caa_check_ca_ids or []):
                caa = list(settings.caa_identities or []) or [self._default_caa]
            return Attempt(
                challenge.id,
                authz.org_id,
                challenge.type,
                authz.identifier_type,
                authz.identifier_value,
                authz.wildcard,
                key_authorization(challenge.token, account.thumbprint),
                caa,
            )

    def _check(self, attempt: Attempt) -> AcmeProblem | None:
        if self._always_valid:
            return None  # benchmark setting (TESSERA_ACME_INSECURE_ALWAYS_VALID), logged at start
        try:
            validate(attempt.kind, attempt.id_type, attempt.name, attempt.key_auth, self._config)
            if attempt.caa_identities is not None and attempt.id_type == "dns":
                check_caa(attempt.name, attempt.wildcard, attempt.caa_identities, self._config)
        except AcmeProblem as problem:
            return problem
        except Exception as exc:  # noqa: BLE001 - a peer's odd answer must not kill the job
            log.warning("ACME validation of challenge %s failed: %r", attempt.challenge_id, exc)
            return AcmeProblem("connection", f"validation failed: {type(exc).__name__}")
        return None

    def _record(self, attempt: Attempt, problem: AcmeProblem | None) -> None:
        now = self._clock()
        with self._sessions() as session:
            repos = Repositories(session, attempt.org_id)
            found = repos.acme.challenge(attempt.challenge_id)
            if found is None or found[0].status != "processing":
                return
            challenge, authz = found
            challenge.next_attempt_at = None
            if problem is None:
                challenge.status, challenge.validated_at = "valid", now
                if authz.status == "pending":
                    authz.status = "valid"
            else:
                document = problem.document()
                document["status"] = 400 if problem.status < 500 else problem.status
                challenge.status, challenge.error = "invalid", document
                if authz.status == "pending":
                    authz.status = "invalid"
            order = repos.acme.order(authz.order_id)
            if order is not None and order.status == "pending":
                statuses = {a.status for a in repos.acme.order_authorizations(order.id)}
                if "invalid" in statuses:
                    order.status = "invalid"
                elif statuses == {"valid"}:
                    order.status = "ready"
            actor = system_actor(attempt.org_id)
            details = {"type": attempt.kind, "identifier": attempt.name, "valid": problem is None}
            audit.record(
                repos.audit,
                actor,
                "acme.challenge.validate",
                "acme_challenge",
                challenge.id,
                details,
            )
            session.commit()

    def cleanup(self) -> None:
        now = self._clock()
        with self._sessions() as session:
            AcmeNonceRepository(session).purge(now)
            expired = AcmeWorkRepository(session).expire(now)
            session.commit()
        if expired:
            log.info("ACME: %d orders and authorizations expired", expired)
