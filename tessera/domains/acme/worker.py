"""Background work of the ACME server: validating challenges the clients said are ready, and
expiring orders, authorizations and nonces.

Every server process runs these jobs. A challenge a client says is ready is claimed, in that
request's own transaction, for the process that took the request (a lease in next_attempt_at),
and handed to that process's job in memory; a challenge whose lease ran out (its process died,
or a retry is due) is claimed by any process's job with a compare-and-set on next_attempt_at.
Either way exactly one process validates each attempt, and each claim counts one in
`attempts`.

An attempt that fails in a way that may pass later (RETRIED_PROBLEMS: the site not up yet, a
DNS record not yet published or served, a wrong answer from a server being reconfigured)
leaves the challenge `processing`, with that problem as its `error` (RFC 8555 8.2: the server
"MUST add an entry to the "error" field in the challenge after each failed validation
query"), and due again after the retry delay, when any process's job claims it as above. The
ATTEMPTS-th failure, or one that would fail again (a CAA refusal), makes it invalid.

An outcome is recorded only for the claim that made the attempt: each attempt carries the
`attempts` value of its claim, and should the challenge have been claimed again since (the
lease ran out while a slow validation went on, and another process took attempt n+1), the
late outcome is dropped, as is one for a challenge no longer processing."""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tessera.domains import audit
from tessera.domains.acme.identifiers import identifier_of
from tessera.domains.acme.validation import (
    ValidationConfig,
    caa_identities,
    check_caa,
    key_authorization,
    validate,
)
from tessera.domains.actor import system_actor
from tessera.protocols.acme.problems import AcmeProblem, authorization_failed
from tessera.storage.models_acme import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeSettings
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.acme import AcmeNonceRepository, AcmeWorkRepository

log = logging.getLogger("tessera.acme")
LEASE = timedelta(seconds=60)
ATTEMPTS = 3  # validation attempts at a challenge, the first included
RETRY_DELAY = timedelta(seconds=5)  # the default of TESSERA_ACME_RETRY_SECONDS
RETRIED_PROBLEMS = frozenset({"connection", "dns", "incorrectResponse", "tls"})
BATCH = 32
PARALLEL = 8
VALIDATE_JOB = "acme-validate"
CLEANUP_JOB = "acme-cleanup"


@dataclass(frozen=True)
class Attempt:
    challenge_id: int
    org_id: int
    order_id: int
    kind: str
    id_type: str
    name: str
    wildcard: bool
    key_auth: str
    caa_identities: list[str] | None  # None: CAA is not checked for the issuing CA; []: no
    # identity of ours, so any `issue` record set refuses
    number: int  # `attempts` after the claim that made this attempt (a request's claim: 1)


class AcmeWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        config: ValidationConfig,
        server_host: str,
        always_valid: bool = False,
        retry_delay: timedelta = RETRY_DELAY,
    ) -> None:
        self._sessions, self._clock, self._config = sessions, clock, config
        self._retry_delay = retry_delay
        self._server_host = server_host  # of the public URL: the default CAA identity
        self._always_valid = always_valid
        self._handed: list[Attempt] = []  # challenges claimed by this process's requests
        self._handed_lock = threading.Lock()

    def hand_over(self, attempt: "Attempt") -> None:
        """A challenge this process's request claimed (and committed): validate it next. The
        request built the attempt from the rows it had loaded (`attempt_for`), so the job
        reads nothing before validating it."""
        with self._handed_lock:
            self._handed.append(attempt)

    def validate_due(self) -> None:
        """Validate the challenges handed over and those whose lease ran out, then record
        every outcome in one write transaction: a burst of challenges waits behind one turn
        of the database's write lock, not two per challenge (clients poll meanwhile, and
        each poll costs more than the validation itself)."""
        attempts = self._handed_attempts() + self._claim_due(self._clock())
        if not attempts:
            return
        if len(attempts) == 1:  # the usual case after a kick: no pool of threads to start
            results = [self._check(attempts[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(PARALLEL, len(attempts))) as pool:
                results = list(pool.map(self._check, attempts))
        self._record(list(zip(attempts, results, strict=True)))

    def _handed_attempts(self) -> list[Attempt]:
        with self._handed_lock:
            handed, self._handed = self._handed, []
        return handed

    def _claim_due(self, now: datetime) -> list[Attempt]:
        with self._sessions() as session:
            work = AcmeWorkRepository(session)
            due = work.due_challenges(now, BATCH)
            if not due:
                return []
            claimed = [cid for cid, seen in due if work.claim_challenge(cid, seen, now + LEASE)]
            attempts = [a for a in (self._attempt(session, cid) for cid in claimed) if a]
            session.commit()
        return attempts

    def _attempt(self, session: Session, challenge_id: int) -> Attempt | None:
        found = AcmeWorkRepository(session).challenge(challenge_id)
        if found is None or found[0].status != "processing":
            return None
        challenge, authz = found
        repos = Repositories(session, authz.org_id)
        account = repos.acme.account(authz.account_id)
        if account is None:
            return None
        return self.attempt_for(challenge, authz, account, repos.acme.settings())

    def attempt_for(
        self,
        challenge: AcmeChallenge,
        authz: AcmeAuthorization,
        account: AcmeAccount,
        settings: AcmeSettings,
    ) -> Attempt:
        """What validating the challenge needs, read from its rows while they are loaded."""
        caa = None
        if settings.issuing_ca_id in (settings.caa_check_ca_ids or []):
            # Those the directory advertises; none (a server reached by address) is a list
            # that no CAA `issue` record matches (validation.check_caa).
            caa = caa_identities(settings.caa_identities, self._server_host)
        return Attempt(
            challenge.id,
            authz.org_id,
            authz.order_id,
            challenge.type,
            authz.identifier_type,
            authz.identifier_value,
            authz.wildcard,
            key_authorization(challenge.token, account.thumbprint),
            caa,
            challenge.attempts,
        )

    def _check(self, attempt: Attempt) -> AcmeProblem | None:
        if self._always_valid:
            return None  # benchmark setting (TESSERA_ACME_INSECURE_ALWAYS_VALID), warned at start
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

    def _record(self, outcomes: list[tuple[Attempt, AcmeProblem | None]]) -> None:
        """Every outcome of the batch in one transaction; should it fail, the challenges keep
        their leases and are validated again when those run out. Rows are changed in order
        of their order's id and the audit rows appended last, by organization, so two
        processes recording batches that share rows take their locks in the same order
        (PostgreSQL)."""
        now = self._clock()
        with self._sessions() as session:
            outcomes = sorted(outcomes, key=lambda o: (o[0].order_id, o[0].challenge_id))
            # Every read first, then one flush: an autoflush between the reads would take
            # SQLite's write lock at the first changed row and hold it through the rest.
            with session.no_autoflush:
                applied = [(o[0], self._apply(session, *o, now)) for o in outcomes]
            session.flush()
            # Each organization's chain head is locked by its first append: in id order too.
            events = [
                audit.event(
                    system_actor(attempt.org_id),
                    "acme.challenge.validate",
                    "acme_challenge",
                    attempt.challenge_id,
                    details,
                )
                for attempt, details in sorted(applied, key=lambda o: o[0].org_id)
                if details is not None
            ]
            if events:
                Repositories(session, events[0]["org_id"]).audit.add_many(events)
            session.commit()

    def _apply(
        self, session: Session, attempt: Attempt, problem: AcmeProblem | None, now: datetime
    ) -> dict[str, Any] | None:
        """The outcome on the challenge, its authorization and its order, and the audit
        details of what was recorded; None when the challenge is no longer waiting for it (no
        longer processing, or claimed again since this attempt's claim: its lease ran out)."""
        repos = Repositories(session, attempt.org_id)
        found = repos.acme.challenge(attempt.challenge_id)
        if found is None or found[0].status != "processing":
            return None
        challenge, authz = found
        number = attempt.number
        if challenge.attempts != number:
            return None
        details = {"type": attempt.kind, "identifier": attempt.name, "valid": problem is None}
        details["attempt"] = number
        if problem is not None and problem.kind in RETRIED_PROBLEMS and number < ATTEMPTS:
            # Still processing: the authorization and the order wait for the next attempt.
            challenge.error = _add_entry(
                challenge.error, _error(problem, number, self._retry_delay)
            )
            challenge.next_attempt_at = now + self._retry_delay
            return {**details, "retry": True}
        challenge.next_attempt_at = None
        if problem is None:
            challenge.status, challenge.validated_at = "valid", now
            challenge.error = None  # an earlier attempt's failure no longer stands
            if authz.status == "pending":
                authz.status = "valid"
        else:
            challenge.status = "invalid"
            challenge.error = _add_entry(challenge.error, _error(problem, number, None))
            if authz.status == "pending":
                authz.status = "invalid"
        _settle_order(repos, authz, challenge.error if problem is not None else None)
        return details

    def cleanup(self) -> None:
        now = self._clock()
        with self._sessions() as session:
            AcmeNonceRepository(session).purge(now)
            expired = AcmeWorkRepository(session).expire(now)
            session.commit()
        if expired:
            log.info("ACME: %d orders and authorizations expired", expired)


def _settle_order(
    repos: Repositories, authz: AcmeAuthorization, failure: dict[str, Any] | None
) -> None:
    """A pending order becomes invalid with a failed authorization (its error naming the
    failure that made it so), ready once every authorization is valid."""
    order = repos.acme.order(authz.order_id)
    if order is None or order.status != "pending":
        return
    statuses = {a.status for a in repos.acme.order_authorizations(order.id)}
    if "invalid" in statuses:
        order.status = "invalid"
        if failure is not None and authz.status == "invalid":
            order.error = authorization_failed(identifier_of(authz), failure)
    elif statuses == {"valid"}:
        order.status = "ready"


def _add_entry(earlier: dict[str, Any] | None, latest: dict[str, Any]) -> dict[str, Any]:
    """The challenge's `error` once another attempt failed. RFC 8555 8.2: the server "MUST
    add an entry to the "error" field in the challenge after each failed validation query",
    and section 8 has several errors told as subproblems: after the first failure, the
    latest problem on top and every attempt's problem, oldest first, as subproblems."""
    if earlier is None:
        return latest
    entries = earlier.get("subproblems") or [earlier]
    return {**latest, "subproblems": [*entries, latest]}


def _error(problem: AcmeProblem, attempt: int, retry_in: timedelta | None) -> dict[str, Any]:
    """The challenge's `error`: the problem, saying which attempt it was and what follows."""
    document = problem.document()
    document["status"] = 400 if problem.status < 500 else problem.status
    if retry_in is not None:
        seconds = f"{retry_in.total_seconds():g}"
        document["detail"] += f" (attempt {attempt} of {ATTEMPTS}; another in {seconds} s)"
    elif attempt > 1:
        document["detail"] += f" (attempt {attempt}, the last)"
    return document
