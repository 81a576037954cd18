"""SCEP operations once the envelope is open: enrollment (PKCSReq), renewal (RenewalReq),
polling (CertPoll), GetCert and GetCRL, and the approval queue behind them.

Every certificate is issued by `Issuance.issue_certificate` (the one issuance path) with the
profile's CA and template and origin "scep". An enrollment that is refused leaves nothing
behind but its audit row: `enroll` raises `EnrollmentRefused`, and whoever owns the unit of
work rolls back what the attempt wrote (a certificate, a request row) before recording the
refusal with `refuse`. A dynamic challenge is spent last, and a rollback leaves it unspent.
An enrollment that is not answered as a repeat holds its (profile, transactionID), looks for
an earlier request again and keeps the hold until the commit
(`ScepRepository.hold_transaction`), so that copies of one request sent at once are answered
from the first instead of each issuing; on SQLite that hold is the write lock, then held
through the signing.
"""

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tessera.core.errors import Conflict, NotFound, TesseraError
from tessera.core.formats import is_issued_by, load_certificate
from tessera.core.inspect import common_name, general_names, public_key_sha256
from tessera.core.names import name_text
from tessera.core.profile import CertificateRequest, fill_subject, with_subject_emails
from tessera.core.renewal import renewal_opens
from tessera.domains import audit
from tessera.domains.issuance import Issuance, core_template
from tessera.domains.scep import csr as scep_csr
from tessera.domains.scep.challenges import MISSING, VALID, ChallengeService
from tessera.domains.scep.challenges import digest as challenge_digest
from tessera.domains.scep.csr import read_csr
from tessera.domains.scep.types import BAD_ALG, BAD_CERT_ID, BAD_REQUEST, ProfileSettings, Reply
from tessera.storage import models
from tessera.storage.models_scep import ScepRequest
from tessera.storage.repositories.scep import DYNAMIC, ISSUED, PENDING, REJECTED

PKCS_REQ, RENEWAL_REQ = "PKCSReq", "RenewalReq"
RENEWAL = "renewal"


class EnrollmentRefused(Exception):
    """An enrollment turned down, with the failInfo and text its CertRep FAILURE carries."""

    def __init__(self, fail_info: str, text: str) -> None:
        super().__init__(text)
        self.fail_info, self.text = fail_info, text


@dataclass(frozen=True)
class Envelope:
    """A verified, decrypted request: who signed it and what it carries. `needs_password`:
    the signer's key cannot encrypt and the profile holds no static challenge, so a SUCCESS
    can only be encrypted with a challenge password the request proved (RFC 8894 3.1)."""

    message_type: str
    transaction_id: str
    signer: x509.Certificate
    payload: bytes
    client_ip: str | None = None
    needs_password: bool = False


@dataclass(frozen=True)
class _Attempt:
    """A PKCSReq or RenewalReq as read: its CSR, what a request sent again is matched by,
    and how it is authenticated (VALID, MISSING or INVALID challenge, or RENEWAL)."""

    csr: x509.CertificateSigningRequest
    subject: str
    key_digest: str
    password: str | None
    challenge: str


class EnrollmentService:
    def __init__(self, issuance: Issuance, now: datetime) -> None:
        self._issuance = issuance
        self._repos = issuance.repos
        self._actor = issuance.actor
        self._now = now

    # Protocol operations
    def enroll(self, profile: ProfileSettings, envelope: Envelope) -> Reply:
        """PKCSReq and RenewalReq. One sent again (same message type, transactionID, subject
        and key) is answered from its request's state, as a poll would be: a client that
        retries after a lost answer gets the certificate it was issued, not a second one
        (`_answers_again` says when it is a new request instead).
        Raises `EnrollmentRefused`: roll back, then `refuse`."""
        attempt = self._read(profile, envelope)
        earlier = self._resent(profile, envelope, attempt)
        if earlier is None or not self._answers_again(earlier, attempt):
            # A new request: the transaction is held until the commit and looked up again,
            # so that a copy sent at the same moment finds this request and is answered from
            # it instead of issuing a second certificate. (A repeat answered above, such as
            # scepclient's polls, holds nothing: on SQLite the hold is the write lock.)
            self._repos.scep.hold_transaction(profile.id, envelope.transaction_id)
            earlier = self._resent(profile, envelope, attempt)
        if earlier is not None and self._answers_again(earlier, attempt):
            return self._answer(earlier, envelope)
        stale = earlier if earlier is not None and earlier.status == PENDING else None
        if stale is not None and not self._supersede(stale):
            # Decided meanwhile: by an admin, or superseded by a request under another
            # transactionID for the same key (`_displaced`); answered as decided.
            self._repos.scep.reload_request(stale)
            newer = self._resent(profile, envelope, attempt)
            return self._answer(newer if newer is not None else stale, envelope)
        displaced = self._displaced(profile, envelope, attempt)
        try:
            reply, row = self._enroll(profile, envelope, attempt)
        except TesseraError as exc:
            raise EnrollmentRefused(BAD_REQUEST, exc.message) from exc
        if row is None:
            raise EnrollmentRefused(reply.fail_info or BAD_REQUEST, reply.text or "refused")
        for superseded in displaced if stale is None else [stale, *displaced]:
            self._record("scep.supersede", superseded, {"superseded_by": row.id})
        return reply

    def _displaced(
        self, profile: ProfileSettings, envelope: Envelope, attempt: _Attempt
    ) -> list[ScepRequest]:
        """Requests queued for this PKCSReq's key and subject under other transactionIDs. Its
        requester (the key that signed them) starting over with a valid challenge replaces
        them, as one sending its request again does (`_supersede`), so that no approval
        issues a second certificate for the key; anything else is refused while they wait."""
        if envelope.message_type != PKCS_REQ:
            return []
        queued = [
            row
            for row in self._repos.scep.pending_for_key(profile.id, attempt.key_digest)
            if row.subject == attempt.subject and row.transaction_id != envelope.transaction_id
        ]
        signer = public_key_sha256(envelope.signer)
        if queued and (
            attempt.challenge != VALID or any(row.signer_key_digest != signer for row in queued)
        ):
            text = "a request for this key and subject is queued under another transactionID"
            raise EnrollmentRefused(BAD_REQUEST, text)
        return [row for row in queued if self._supersede(row)]

    def _read(self, profile: ProfileSettings, envelope: Envelope) -> _Attempt:
        """The CSR, and how the request is authenticated: its challenge, checked (not spent:
        see `_enroll`), or the certificate a RenewalReq renews (`_renewal_refusal`)."""
        try:
            csr = read_csr(envelope.payload)
            password = scep_csr.challenge_password(csr)
        except TesseraError as exc:
            raise EnrollmentRefused(BAD_REQUEST, f"bad CSR: {exc.message}") from exc
        if envelope.message_type == RENEWAL_REQ:
            challenge = RENEWAL
        else:
            challenge = self._challenges().check(_ca_id(profile), profile.challenge_type, password)
        return _Attempt(csr, _subject_text(csr), scep_csr.key_digest(csr), password, challenge)

    def _enroll(
        self, profile: ProfileSettings, envelope: Envelope, attempt: _Attempt
    ) -> tuple[Reply, ScepRequest | None]:
        details: dict[str, object] = {}
        csr, challenge = attempt.csr, attempt.challenge
        if envelope.message_type == RENEWAL_REQ:
            renewed = self._renewed(envelope.signer)
            failure = self._renewal_refusal(profile, envelope.signer, renewed, csr)
            if failure is not None:
                return failure, None
            assert renewed is not None  # an unknown signer is refused above
            # Authenticated by the certificate it renews, for that certificate's names only:
            # what was approved once is not queued again.
            approved = True
            details["renews"] = renewed.id
        else:
            if challenge != VALID and not profile.queue_without_challenge:
                text = "challenge password required" if challenge == MISSING else "wrong challenge"
                return Reply.failure(BAD_REQUEST, text), None
            approved = challenge == VALID and profile.auto_approve
        if challenge != VALID and envelope.needs_password:
            # Queued (or renewed) without a password it proved, its answer could never be
            # encrypted: refused before anything is written.
            text = "an answer to a signing-only key needs a valid challenge password"
            return Reply.failure(BAD_ALG, text), None
        row = ScepRequest(
            profile_id=profile.id,
            transaction_id=envelope.transaction_id,
            message_type=envelope.message_type,
            status=ISSUED if approved else PENDING,
            subject=attempt.subject,
            common_name=common_name(csr.subject)[:200],
            key_digest=attempt.key_digest,
            signer_key_digest=public_key_sha256(envelope.signer),
            encrypted_csr=self._issuance.keys.seal(_armored(envelope.payload).encode()),
            challenge=challenge,
            client_ip=envelope.client_ip,
            created_at=self._now,
        )
        # A renewal's CSR may name no SAN: it renews the names of the certificate it renews.
        kept = general_names(envelope.signer) if envelope.message_type == RENEWAL_REQ else []
        if not approved:
            self._check_signable(profile, csr)
        issued = self._issue(profile, csr, kept) if approved else None
        if issued is not None:
            row.certificate_id, row.decided_at, row.decided_by = (
                issued.id,
                self._now,
                self._actor.username,
            )
        if challenge == VALID and not self._spend_challenge(profile, attempt.password):
            return Reply.failure(BAD_REQUEST, "wrong challenge"), None  # used meanwhile
        self._repos.scep.add_request(row)
        # What the issuance's own certificate.issue does not say: the SCEP transaction, how
        # it was authenticated, and which certificate it got (or renews).
        details.update(challenge=challenge, type=row.message_type)
        if issued is not None:
            details["certificate_id"] = issued.id
        self._record("scep.request", row, details)
        if issued is None:
            return Reply.pending(), row
        password = attempt.password if envelope.needs_password else None
        return Reply.success(
            [load_certificate(issued.certificate_pem.encode())], None, password
        ), row

    def _resent(
        self, profile: ProfileSettings, envelope: Envelope, attempt: _Attempt
    ) -> ScepRequest | None:
        """The request this one repeats (a client retrying, or polling by re-sending, as
        scepclient does): same message type, transactionID, subject and key, newest first.
        RFC 8894 section 3.3.3 ties a transaction to its requester, and clients derive the
        transactionID from their key: a request under a transactionID that another key
        holds with a request still open is refused, so that it never takes (nor shadows)
        that request's outcome. A finished one (`_finished`) holds it no longer: a device
        whose transactionID the CA assigned (its EUI, RFC 8894 section 3.2.1.1) may re-key.
        The same key may ask for another subject under it: a new request, told apart by its
        subject.

        A request whose certificate expired, was deleted or is due for renewal (`_over`) is
        a finished transaction: a device enrolling anew with the key its transactionID
        derives from sends the very same PKCSReq, and gets a new certificate (for a valid
        challenge). One whose certificate was revoked is not: it answers FAILURE
        (`_answer`), so that neither a hold nor a revocation is undone by sending the
        request again."""
        known = self._repos.scep.transaction_requests(profile.id, envelope.transaction_id)
        wanted = (envelope.message_type, attempt.key_digest, attempt.subject)
        for row in known:
            if (row.message_type, row.key_digest, row.subject) == wanted and not self._over(row):
                return row
        ours = any(row.key_digest == attempt.key_digest for row in known)
        if not ours and any(
            row.key_digest != attempt.key_digest and not self._finished(row) for row in known
        ):
            # Not for a key that has requests under it already: once its own requests are
            # finished, another key could otherwise take its transactionID (derived from its
            # public key, which its certificate shows) and shut it out of its renewal.
            text = "this transactionID belongs to another requester's request"
            raise EnrollmentRefused(BAD_REQUEST, text)
        return None

    def _answers_again(self, row: ScepRequest, attempt: _Attempt) -> bool:
        """Whether a request sent again is answered from the earlier `row` it repeats, rather
        than made anew. Without a valid challenge it always is. With one:
        - an issued request answers (a retry after a lost answer);
        - a pending one answers, unless it was queued without a valid challenge: then this
          request, which has one, replaces it (`_supersede`), and is issued or queued as any;
        - a rejected one is a new request once a client was given the rejection, or at once
          when its challenge is not the one rejected. Until then the same request sent
          again is how scepclient polls, and must get the rejection: made anew, it would be
          queued again and again, and the client never told."""
        if attempt.challenge != VALID or row.status == ISSUED:
            return True
        if row.status == PENDING:
            return row.challenge == VALID
        if row.rejection_answered_at is not None:
            return False
        return self._same_password(row, attempt.password)

    def _same_password(self, row: ScepRequest, password: str | None) -> bool:
        try:
            stored = self._stored_password(row)
        except TesseraError:  # stored before its challenge was read by type: not the same
            return False
        if stored is None or password is None:
            return stored is password
        return hmac.compare_digest(challenge_digest(stored), challenge_digest(password))

    def _supersede(self, stale: ScepRequest) -> bool:
        """Reject a request queued without a valid challenge that a request with one replaces,
        so that no approval issues it later as a second certificate. A compare-and-set
        before the signing, held by the unit of work: a refusal rolls it back, and an admin
        who decided the request first wins (False)."""
        reason = "superseded: sent again with a valid challenge"
        if not self._repos.scep.claim_pending(stale, REJECTED, self._now, self._actor.username):
            return False
        stale.reason = reason
        return True

    def _finished(self, row: ScepRequest) -> bool:
        """Whether a request holds its transactionID no longer (see `_resent`)."""
        return row.status == REJECTED or self._over(row)

    def _over(self, row: ScepRequest) -> bool:
        """Whether an issued request's transaction is finished (see `_resent`): its
        certificate was deleted or expired, or, unless revoked, is due for renewal (the last
        third of its lifetime). A client retrying after a lost answer does so at once; one
        sending the same PKCSReq late in the certificate's life is renewing with the same
        key, as certmonger does by default (it derives the transactionID from the key and
        sends no RenewalReq), and gets a new certificate for a valid challenge."""
        if row.status != ISSUED:
            return False
        cert = self._repos.certificates.get(row.certificate_id) if row.certificate_id else None
        if cert is None or cert.not_after <= self._now:
            return True
        due = renewal_opens(cert.not_before, cert.not_after) <= self._now
        return due and cert.status != "revoked"

    def poll(self, profile: ProfileSettings, envelope: Envelope, subject_der: bytes) -> Reply:
        """CertPoll: RFC 8894 section 3.3.3 has polling controlled by the transactionID and
        who sends it (the recipientInfo of the answer) rather than by the messageData. A
        request is found by its transactionID and the key of the certificate that signed
        it; a poll from another key answers as an unknown transaction."""
        known = self._repos.scep.transaction_requests(profile.id, envelope.transaction_id)
        row = self._polled(known, public_key_sha256(envelope.signer), subject_der)
        if row is None:
            return Reply.failure(
                BAD_CERT_ID, "no request of this requester with this transactionID"
            )
        return self._answer(row, envelope)

    def _polled(
        self, known: Sequence[ScepRequest], signer_key: str, subject_der: bytes
    ) -> ScepRequest | None:
        """The signer's request under the transactionID. The subject the poll names (compared
        as RFC 5280 compares names) only chooses, newest first, between several: requests
        of the same key for other subjects, or made again after a rejection; or, with no
        request of this key, those stored before the signer's key was (revision 0021)."""
        mine = [row for row in known if row.signer_key_digest == signer_key]
        if len(mine) == 1:
            return mine[0]
        choices = mine or [row for row in known if row.signer_key_digest is None]
        for row in choices:
            if scep_csr.asks_for(self._csr_der(row), subject_der):
                return row
        return None

    def shared_password(self, profile: ProfileSettings) -> str | None:
        """The password that opens password-based envelopes and encrypts answers to keys
        that cannot encrypt: the profile's static challenge. None for a dynamic profile, where
        a request proves its own (`_proven_password`)."""
        if profile.challenge_type == DYNAMIC:
            return None
        return self._challenges().static_password(_ca_id(profile))

    # The approval queue
    def csr_pem(self, row: ScepRequest) -> str:
        """The request's CSR as received, in PEM (sealed at rest: see `encrypted_csr`)."""
        return self._issuance.keys.unseal(row.encrypted_csr).decode("ascii")

    def _csr_der(self, row: ScepRequest) -> bytes:
        return pem.unarmor(self.csr_pem(row).encode())[2]

    def approve(self, request_id: int) -> ScepRequest:
        row = self._pending(request_id)
        profile = self._repos.scep.profile_by_id(row.profile_id)
        if profile is None or profile.ca_id is None:
            raise Conflict("the request's SCEP profile has no CA any more")
        if not self._repos.scep.claim_pending(row, ISSUED, self._now, self._actor.username):
            raise Conflict(f"SCEP request {request_id} was decided meanwhile")
        issued = self._issue(profile, read_csr(self._csr_der(row)))
        row.certificate_id = issued.id
        self._record("scep.approve", row, {"certificate_id": row.certificate_id})
        return row

    def reject(self, request_id: int, reason: str | None) -> ScepRequest:
        row = self._pending(request_id)
        if not self._repos.scep.claim_pending(row, REJECTED, self._now, self._actor.username):
            raise Conflict(f"SCEP request {request_id} was decided meanwhile")
        row.reason = reason
        self._record("scep.reject", row, {"reason": reason})
        return row

    # Helpers
    def _pending(self, request_id: int) -> ScepRequest:
        row = self._repos.scep.request(request_id)
        if row is None:
            raise NotFound(f"SCEP request {request_id} not found")
        if row.status != PENDING:
            raise Conflict(f"SCEP request {request_id} is already {row.status}")
        return row

    def _challenges(self) -> ChallengeService:
        return ChallengeService(self._repos, self._issuance.keys, self._actor, self._now)

    def _spend_challenge(self, profile: ProfileSettings, password: str | None) -> bool:
        assert password is not None  # checked VALID
        return self._challenges().spend(_ca_id(profile), profile.challenge_type, password)

    def _renewed(self, signer: x509.Certificate) -> models.Certificate | None:
        """The certificate a RenewalReq renews: the one that signs it, if we hold it."""
        return self._repos.certificates.by_fingerprint(signer.fingerprint(hashes.SHA256()).hex())

    def _renewal_refusal(
        self,
        profile: ProfileSettings,
        signer: x509.Certificate,
        row: models.Certificate | None,
        csr: x509.CertificateSigningRequest,
    ) -> Reply | None:
        """A RenewalReq renews the certificate that signs it (RFC 8894 section 3.3.1.2), `row`
        in our inventory: one this profile's CA issued (or, during a rollover, the next CA
        that GetNextCACert announces for it), still good, and the new certificate keeps its
        subject and names. Any other CA of the organization may issue for other purposes and
        other names."""
        ca = self._profile_ca(profile, row.ca_id if row is not None else None)
        if row is None or ca is None or not is_issued_by(signer, _ca_cert(ca)):
            return Reply.failure(
                BAD_CERT_ID, "the renewal is not signed by a certificate of this profile's CA"
            )
        if row.status != "active":
            return Reply.failure(BAD_CERT_ID, "the certificate being renewed is revoked")
        if not row.not_before <= self._now < row.not_after:
            return Reply.failure(BAD_CERT_ID, "the certificate being renewed is not valid now")
        if not self._same_names(profile, signer, csr):
            text = "a renewal keeps the subject and names of the certificate it renews"
            return Reply.failure(BAD_REQUEST, text)
        return None

    def _profile_ca(
        self, profile: ProfileSettings, ca_id: int | None
    ) -> models.CertificateAuthority | None:
        if ca_id is None or ca_id not in (profile.ca_id, profile.next_ca_id):
            return None
        return self._repos.cas.get(ca_id)

    def _same_names(
        self,
        profile: ProfileSettings,
        signer: x509.Certificate,
        csr: x509.CertificateSigningRequest,
    ) -> bool:
        """The subject and SANs the CSR would get (the template's subject defaults filled
        in, as the issuance will) are the signer's, the SANs in any order. A CSR without
        SANs renews the signer's, whatever they are (`_enroll` issues with them). Both are
        compared as the issuance gives them, the subject's emailAddresses as SANs too
        (`with_subject_emails`): a CSR naming what the enrolment's named renews a certificate
        that got them, as one issued before they were added."""
        template = core_template(self._template(profile))
        defaults = template.subject_defaults if template is not None else ()
        subject = fill_subject(csr.subject, defaults)
        if subject != signer.subject:
            return False
        asked = tuple(scep_csr.sans(csr))
        if not asked:
            return True

        def issued(sans: Sequence[x509.GeneralName]) -> set[x509.GeneralName]:
            request = CertificateRequest(subject, csr.public_key(), tuple(sans))
            return set(with_subject_emails(request).sans)

        return issued(asked) == issued(general_names(signer))

    def _template(self, profile: ProfileSettings) -> models.Template | None:
        if profile.template_id is None:
            return None
        template = self._repos.templates.get(profile.template_id)
        if template is None:
            raise NotFound(f"template {profile.template_id} not found")
        return template

    def _check_signable(
        self, profile: ProfileSettings, csr: x509.CertificateSigningRequest
    ) -> None:
        """Refuse now what no approval could get signed, as an auto-approved request is
        refused at once: queued, its client would poll for an answer an approval can only
        fail to give."""
        ca = self._repos.cas.get(profile.ca_id) if profile.ca_id is not None else None
        sans = tuple(scep_csr.sans(csr))
        request = CertificateRequest(subject=csr.subject, public_key=csr.public_key(), sans=sans)
        self._issuance.check_signable(request, ca, self._template(profile))

    def _issue(
        self,
        profile: ProfileSettings,
        csr: x509.CertificateSigningRequest,
        kept: Sequence[x509.GeneralName] = (),
    ) -> models.Certificate:
        """Through the one issuance path, with the profile's CA and template; `kept`: the
        names of a renewed certificate, for a CSR that names none."""
        ca = self._repos.cas.get(profile.ca_id) if profile.ca_id is not None else None
        if ca is None:
            raise NotFound("the SCEP profile's CA no longer exists")
        template = self._template(profile)
        request = CertificateRequest(
            subject=csr.subject,
            public_key=csr.public_key(),
            sans=tuple(dict.fromkeys(scep_csr.sans(csr) or kept)),
            requester=self._actor.username,
            origin="scep",
        )
        return self._issuance.issue_certificate(request, ca, template)

    def _answer(self, row: ScepRequest, envelope: Envelope) -> Reply:
        if row.status == PENDING:
            return Reply.pending()
        if row.status == REJECTED:
            if row.rejection_answered_at is None:  # see `_answers_again`
                self._repos.scep.mark_rejection_answered(row, self._now)
            return Reply.failure(BAD_REQUEST, row.reason or "the request was rejected")
        cert = self._repos.certificates.get(row.certificate_id) if row.certificate_id else None
        if cert is None:
            return Reply.failure(BAD_CERT_ID, "the issued certificate was deleted")
        if cert.status == "revoked":
            return Reply.failure(BAD_REQUEST, "the certificate issued for this request is revoked")
        password = self._proven_password(row) if envelope.needs_password else None
        if envelope.needs_password and password is None:
            return Reply.failure(BAD_ALG, "this request proved no password to encrypt with")
        return Reply.success([load_certificate(cert.certificate_pem.encode())], None, password)

    def _proven_password(self, row: ScepRequest) -> str | None:
        """The challengePassword of the request's stored CSR if it was checked valid (and a
        dynamic one spent) when the request was made: one its requester proved, never one
        merely claimed (a request queued without a valid challenge has none)."""
        if row.challenge != VALID:
            return None
        try:
            return self._stored_password(row)
        except TesseraError:
            return None

    def _stored_password(self, row: ScepRequest) -> str | None:
        return scep_csr.challenge_password(read_csr(self._csr_der(row)))

    def refuse(
        self, profile: ProfileSettings, envelope: Envelope, refused: EnrollmentRefused
    ) -> Reply:
        """Record a refused enrollment (after its unit of work was rolled back) and answer."""
        details = {
            "profile": profile.slug,
            "type": envelope.message_type,
            "transaction_id": envelope.transaction_id,
            "reason": refused.text,
        }
        audit.record(
            self._repos.audit,
            self._actor,
            "scep.refuse",
            "scep_profile",
            profile.id,
            details,
            success=False,
        )
        return Reply.failure(refused.fail_info, refused.text)

    def _record(self, action: str, row: ScepRequest, details: dict[str, object]) -> None:
        details = {"transaction_id": row.transaction_id, "subject": row.subject, **details}
        audit.record(self._repos.audit, self._actor, action, "scep_request", row.id, details)


def _subject_text(csr: x509.CertificateSigningRequest) -> str:
    """The subject as stored with the request, and as a re-sent request is matched."""
    return name_text(csr.subject)[:2000]


def _ca_id(profile: ProfileSettings) -> int:
    assert profile.ca_id is not None  # a profile without a CA is not enabled
    return profile.ca_id


def _armored(der: bytes) -> str:
    """The request as received (its signature covers these bytes), in PEM."""
    return pem.armor("CERTIFICATE REQUEST", der).decode("ascii")


def _ca_cert(ca: models.CertificateAuthority) -> x509.Certificate:
    return load_certificate(ca.certificate_pem.encode())
