"""SCEP operations (RFC 8894 section 4) for one call, whatever HTTP front end carries it:
GetCACaps, GetCACert, GetNextCACert and PKIOperation, answered for one SCEP profile.

What is not SCEP at all (unknown operation, a body that is no PKCS#7 pkiMessage) is a 400;
a pkiMessage we can read but must refuse is a signed CertRep FAILURE with its failInfo.
"""

import base64
import binascii
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session
from starlette.responses import PlainTextResponse, Response

from tessera.api.deps import commit_before_answering
from tessera.core.errors import NotFound, TesseraError
from tessera.domains.actor import Actor, system_actor
from tessera.domains.issuance import Issuance
from tessera.domains.scep.enrollment import (
    PKCS_REQ,
    RENEWAL_REQ,
    EnrollmentRefused,
    EnrollmentService,
    Envelope,
)
from tessera.domains.scep.lookups import ScepLookups
from tessera.domains.scep.profiles import ProfileService
from tessera.domains.scep.types import (
    BAD_ALG,
    BAD_CERT_ID,
    BAD_MESSAGE_CHECK,
    BAD_REQUEST,
    Reply,
    Responder,
)
from tessera.protocols.scep import cms, pwri
from tessera.protocols.scep.messages import (
    MessageType,
    PkiMessage,
    cert_rep,
    issuer_and_serial,
    issuer_and_subject,
    read_message,
)
from tessera.runtime import Runtime
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.scep import ProfileView, ResponderIdentity, all_profile_slugs

log = logging.getLogger("tessera.scep")
MAX_MESSAGE = 256 * 1024  # a CSR in two CMS layers; anything bigger is not a SCEP request
CAPABILITIES = (
    "POSTPKIOperation",
    "SHA-256",
    "SHA-384",
    "SHA-512",
    "SHA-1",
    "AES",
    "DES3",
    "Renewal",
)
PKI_MESSAGE = "application/x-pki-message"
DEFAULT_CIPHER = "aes256_cbc"
MESSAGE_NAMES = {MessageType.PKCS_REQ: PKCS_REQ, MessageType.RENEWAL_REQ: RENEWAL_REQ}
# What an EC signer on a dynamic profile may send: a PKCSReq proves its one-time password,
# a CertPoll finds the request that proved one (`_answer_password`).
_PROVING = (MessageType.PKCS_REQ, MessageType.CERT_POLL)
_URL_SAFE_CHARS, _STANDARD_CHARS = frozenset("-_"), frozenset("+/")
_FROM_URL_SAFE = str.maketrans("-_", "+/")


def plain_error(status: int, message: str) -> Response:
    """SCEP clients show an HTTP error body as text, if at all."""
    return PlainTextResponse(message + "\n", status_code=status)


@dataclass(frozen=True)
class Call:
    """One SCEP request as the HTTP front end read it."""

    slug: str
    operation: str
    message: str | None  # the GET form's base64 `message` parameter
    body: bytes | None  # the POST form's pkiMessage
    client_ip: str | None
    user_agent: str | None


def answer(
    rt: Runtime, org_id: int, session: Session, call: Call, cache: "ResponderCache"
) -> Response:
    """The HTTP answer to one call, in the caller's unit of work: a PKIOperation commits it
    once its writes are done (see `commit_before_answering`); the caller commits the rest."""
    if call.body is not None:
        if call.operation != "PKIOperation":
            return plain_error(400, "POST carries operation=PKIOperation only")
        return _pki_operation(_Context(rt, org_id, session, call, cache), call.body)
    if call.operation == "PKIOperation":
        message = call.message or ""
        if len(message) > MAX_MESSAGE * 2:
            return plain_error(413, "message too large")
        der = _base64(message)
        if der is None:
            return plain_error(400, "message is not base64")
        return _pki_operation(_Context(rt, org_id, session, call, cache), der)
    handlers = {
        "GetCACaps": _ca_caps,
        "GetCACert": _ca_cert,
        "GetNextCACert": _next_ca_cert,
    }
    handler = handlers.get(call.operation)
    if handler is None:
        return plain_error(400, f"unknown SCEP operation {call.operation[:40]!r}")
    return handler(_Context(rt, org_id, session, call, cache))


@dataclass(frozen=True)
class Built:
    """A responder with its GetCACert answer encoded."""

    responder: Responder
    ca_body: bytes
    ca_media_type: str


def build(responder: Responder) -> Built:
    """GetCACert: the CA alone, or the responder (RA) and its chain (RFC 8894 section 4.2.1)."""
    certificates = responder.ca_certificates
    if len(certificates) == 1:
        return Built(responder, _der(certificates[0]), "application/x-x509-ca-cert")
    return Built(responder, cms.degenerate(certificates), "application/x-x509-ca-ra-cert")


class ResponderCache:
    """Responders this process has built, by what they are made of (`ResponderIdentity`):
    the certificates parsed, the RA key decrypted and the GetCACert body encoded once, not
    on each of the three requests of every enrollment. The profile is read on every request,
    so a changed CA, RA or setting is seen at once; only the unchanging parts are kept."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._entries: OrderedDict[ResponderIdentity, Built] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, identity: ResponderIdentity, make: Callable[[], Responder]) -> Built:
        with self._lock:
            found = self._entries.get(identity)
            if found is not None:
                self._entries.move_to_end(identity)
                return found
        built = build(make())  # outside the lock: two threads may build it, one is kept
        with self._lock:
            self._entries[identity] = built
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return built


class _Context:
    """One SCEP request, acting as the SCEP front end of one profile; the services are made
    when an operation needs them (GetCACaps needs none)."""

    def __init__(
        self, rt: Runtime, org_id: int, session: Session, call: Call, cache: ResponderCache
    ) -> None:
        self.rt, self.org_id, self.call = rt, org_id, call
        self.cache = cache
        self.now: datetime = rt.clock()
        self.client_ip = call.client_ip
        self.allow_des = rt.settings.scep_allow_des
        self.repos = Repositories(session, org_id)
        self.profile = _enabled(self.repos, call.slug)

    @cached_property
    def issuance(self) -> Issuance:
        # An unauthenticated protocol client: audited as "scep:<profile>", holding no grants.
        call, rt = self.call, self.rt
        slug = f"scep:{call.slug}"[:150]
        actor = Actor(None, slug, self.org_id, "scep", frozenset(), call.client_ip, call.user_agent)
        return Issuance(self.repos, rt.authority, rt.keys, rt.publication, actor, rt.serials)

    @cached_property
    def profiles(self) -> ProfileService:
        return ProfileService(self.issuance, self.now, self.rt.settings.scep_ra_days)

    @cached_property
    def enrollment(self) -> EnrollmentService:
        return EnrollmentService(self.issuance, self.now)

    @cached_property
    def shared_password(self) -> str | None:
        return self.enrollment.shared_password(self.profile)

    def current(self) -> Built:
        """The current responder, from the cache when the CA may sign."""
        identity = self.profile.responder_identity
        make = lambda: self.profiles.responder(self.profile)  # noqa: E731
        if identity is None or not identity.ca_usable or not identity.ra_active:
            return build(make())  # refuses, saying why (no CA, disabled, no key, RA revoked)
        return self.cache.get(identity, make)


def _enabled(repos: Repositories, slug: str) -> ProfileView:
    profile = repos.scep.profile_view(slug)
    if profile is None or not profile.enabled or profile.ca_id is None:
        raise NotFound(f"no enabled SCEP profile {slug!r}")
    return profile


def _ca_caps(context: _Context) -> Response:
    caps = list(CAPABILITIES)
    if context.profile.next_ca_id is not None:
        caps.append("GetNextCACert")
    if not context.allow_des:  # RFC 8894 2.9: a SCEPStandard server supports no single DES
        caps.append("SCEPStandard")
    return PlainTextResponse("\n".join(caps))


def _ca_cert(context: _Context) -> Response:
    current = context.current()
    return Response(current.ca_body, media_type=current.ca_media_type)


def _next_ca_cert(context: _Context) -> Response:
    """The next CA (and its RA), signed by the current responder (RFC 8894 section 4.7)."""
    if context.profile.next_ca_id is None:
        raise NotFound("no CA rollover is in progress; there is no next CA certificate")
    current = context.current().responder
    upcoming = context.profiles.responder(context.profile, upcoming=True)
    inner = cms.degenerate(upcoming.ca_certificates)
    body = cms.sign(inner, [], current.certificate, current.key, "sha256", [current.certificate])
    return Response(body, media_type="application/x-x509-next-ca-cert")


def _pki_operation(context: _Context, der: bytes) -> Response:
    try:
        message = read_message(der)
    except cms.NotCms as exc:
        return plain_error(400, str(exc))
    responder = context.current().responder
    done = _process(context, message, responder)
    commit_before_answering(context.repos.session)  # before the signed, encrypted CertRep
    body = cert_rep(message, done.reply, done.signer, done.requester, done.cipher, done.password)
    return Response(body, media_type=PKI_MESSAGE)


@dataclass(frozen=True)
class _Processed:
    """A request's outcome and how its CertRep is made: signed by `signer`, a SUCCESS
    encrypted to `requester`'s key, or with `password` when that key cannot encrypt."""

    reply: Reply
    requester: x509.Certificate | None
    cipher: str
    signer: Responder
    password: str | None = None


def _process(context: _Context, message: PkiMessage, responder: Responder) -> _Processed:
    """Verify, decrypt, then hand the request to the service; refusals become FAILURE. Also
    returns who signs the answer (see `_open`)."""
    kind = message.message_type
    try:
        signer = cms.signer_certificate(message.signed)
        cms.verify(message.signed, signer)
        if kind is None or kind is MessageType.CERT_REP:
            raise cms.CmsError(BAD_REQUEST, f"{message.type_name} is not a request we answer")
        # A SUCCESS is encrypted to the signer: refuse what we could not answer now, before
        # a certificate is issued, a challenge spent or a request queued.
        password = _answer_password(context, signer, kind)
        needs_password = password is None and pwri.signing_only(signer)
        if not message.signed.content:
            raise cms.CmsError(BAD_MESSAGE_CHECK, "the pkiMessage carries no envelope")
        opened, responder = _open(context, message.signed.content, responder)
    except cms.CmsError as exc:
        log.info("SCEP %s refused: %s", message.type_name, exc.message)
        failure = Reply.failure(exc.fail_info, exc.message)
        return _Processed(failure, None, DEFAULT_CIPHER, responder)
    envelope = Envelope(
        MESSAGE_NAMES.get(kind, kind.name),
        message.transaction_text,
        signer,
        opened.content,
        context.client_ip,
        needs_password,
    )
    try:
        reply = _dispatch(context, kind, envelope)
    except cms.CmsError as exc:
        reply = Reply.failure(exc.fail_info, exc.message)
    if needs_password:
        password = reply.password  # proven by this request (or the one it polls for)
    return _Processed(reply, signer, opened.cipher, responder, password)


def _answer_password(context: _Context, signer: x509.Certificate, kind: MessageType) -> str | None:
    """None when the answer is encrypted to the signer's RSA key. A key that can only sign
    (EC) gets it encrypted with the challenge password instead (RFC 8894 section 3.1): the
    profile's static one, which the server holds. A dynamic profile keeps its one-time
    passwords as digests only: there the password is the one the request's CSR proves
    valid, or the stored CSR of the request a poll finds (None here; the service hands it
    back with its reply). Nothing else proves one: refused (badAlg) before anything is
    written."""
    if not pwri.signing_only(signer):
        cms.recipient_key(signer)  # RSA, and large enough for key transport
        return None
    if context.shared_password is None and kind not in _PROVING:
        raise cms.CmsError(
            BAD_ALG, "on a dynamic profile a signing-only key may only enroll and poll"
        )
    return context.shared_password


def _open(
    context: _Context, content: bytes, responder: Responder
) -> tuple[cms.Decrypted, Responder]:
    """Open the envelope with the responder's key. During a rollover a client may already
    encrypt to the next RA (it learnt it from GetNextCACert, signed by the current one, so
    the current one answers). After an RA renewal a client may still encrypt to the earlier
    RA, the only one it knows: that RA opens the request and signs the answer."""
    allow = context.allow_des
    if pwri.password_only(content):
        # RFC 8894 section 3.1: protected with the challenge password, not the RA's key.
        if context.shared_password is None:
            raise cms.CmsError(
                BAD_ALG, "password-based envelopes need the profile's static challenge"
            )
        return pwri.decrypt(content, context.shared_password, allow), responder
    try:
        return _decrypt(content, responder, allow), responder
    except cms.CmsError as exc:
        refused = exc
    upcoming = _upcoming(context)
    if upcoming is not None:
        try:
            return _decrypt(content, upcoming, allow), responder
        except cms.CmsError as exc:
            refused = exc
    for issuer, serial in cms.recipients(content):
        retired = context.profiles.retired_responder(context.profile, issuer, serial)
        if retired is not None:
            return _decrypt(content, retired, allow), retired
    raise refused


def _upcoming(context: _Context) -> Responder | None:
    """The next CA's responder during a rollover, if it can answer now: one whose CA was
    disabled meanwhile opens nothing, and the request still gets its CertRep FAILURE."""
    if context.profile.next_ca_id is None:
        return None
    try:
        return context.profiles.responder(context.profile, upcoming=True)
    except TesseraError as exc:
        log.info("SCEP next CA of %s cannot answer: %s", context.call.slug, exc.message)
        return None


def _decrypt(content: bytes, opener: Responder, allow_des: bool) -> cms.Decrypted:
    return cms.decrypt_enveloped(content, opener.certificate, opener.key, allow_des)


def _dispatch(context: _Context, kind: MessageType, envelope: Envelope) -> Reply:
    service, profile = context.enrollment, context.profile
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        try:
            return service.enroll(profile, envelope)
        except EnrollmentRefused as refused:
            # Only the refusal's audit row stays: no certificate, request row or spent
            # challenge of the attempt.
            context.repos.session.rollback()
            return service.refuse(profile, envelope, refused)
    if kind is MessageType.CERT_POLL:
        _issuer, subject = issuer_and_subject(envelope.payload)
        return service.poll(profile, envelope, subject)
    wanted = issuer_and_serial(envelope.payload)
    if kind is MessageType.GET_CERT:
        return ScepLookups(context.repos).get_cert(profile, wanted.issuer, wanted.serial)
    return _get_crl(context, wanted.issuer)


def _get_crl(context: _Context, issuer_der: bytes) -> Reply:
    lookups = ScepLookups(context.repos)
    ca = lookups.ca_for(context.profile, issuer_der)
    if ca is None:
        return Reply.failure(BAD_CERT_ID, "no CRL for this issuer here")
    crl = lookups.latest_crl(ca)
    if crl is None:
        return Reply.failure(BAD_CERT_ID, "no CRL has been published for this CA yet")
    return Reply.success([], crl)


def renew_ra_certificates(rt: Runtime) -> None:
    """The background job: renew RA certificates that near their end, in every profile.
    Several processes may run it at once; each renewal is a conditional write, so one wins
    and the others roll back."""
    with rt.sessions() as session:
        for org_id, slug in all_profile_slugs(session):
            try:
                _renew_one(rt, session, org_id, slug)
                session.commit()
            except TesseraError as exc:
                session.rollback()
                log.warning("SCEP RA renewal for %s failed: %s", slug, exc.message)


def _renew_one(rt: Runtime, session: Session, org_id: int, slug: str) -> None:
    repos = Repositories(session, org_id)
    actor = system_actor(org_id)
    issuance = Issuance(repos, rt.authority, rt.keys, rt.publication, actor, rt.serials)
    service = ProfileService(issuance, rt.clock(), rt.settings.scep_ra_days)
    profile = repos.scep.profile(slug)
    if profile is not None and profile.enabled:
        service.renew_due(profile)


def _base64(text: str) -> bytes | None:
    """The GET form's message as clients write it (RFC 8894 section 4.1 asks for base64,
    then URL escaping): a '+' sent unescaped reads back as a space; OpenSSL-style line
    breaks and dropped padding are tolerated; the URL-safe alphabet is read too (micromdm's
    scepclient writes GET messages in it), but not mixed with the standard one."""
    cleaned = "".join(text.replace(" ", "+").split())
    if not _URL_SAFE_CHARS.isdisjoint(cleaned):
        if not _STANDARD_CHARS.isdisjoint(cleaned):
            return None
        cleaned = cleaned.translate(_FROM_URL_SAFE)
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)
