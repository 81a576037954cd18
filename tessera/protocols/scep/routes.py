"""SCEP over HTTP (RFC 8894 section 4): /scep/pkiclient.exe (the default profile),
/scep/{slug}/pkiclient.exe and the alias /cgi-bin/pkiclient.exe. Unauthenticated, served on
both the HTTPS app and the plain-HTTP listener.

What is not SCEP at all (unknown operation, a body that is no PKCS#7 pkiMessage) is a 400;
a pkiMessage we can read but must refuse is a signed CertRep FAILURE with its failInfo.
"""

import base64
import binascii
import logging

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tessera.api import errors
from tessera.api.deps import UnitOfWork, default_org_id, now, runtime
from tessera.core.errors import NotFound, TesseraError
from tessera.domains.actor import Actor, system_actor
from tessera.domains.issuance import Issuance
from tessera.domains.scep.enrollment import PKCS_REQ, RENEWAL_REQ, EnrollmentService, Envelope
from tessera.domains.scep.profiles import DEFAULT_SLUG, ProfileService
from tessera.domains.scep.types import BAD_CERT_ID, BAD_MESSAGE_CHECK, Reply, Responder
from tessera.protocols.scep import cms
from tessera.protocols.scep.messages import (
    MessageType,
    PkiMessage,
    cert_rep,
    issuer_and_serial,
    issuer_and_subject,
    read_message,
)
from tessera.runtime import Runtime
from tessera.storage.models_scep import ScepProfile
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.scep import all_profile_slugs

log = logging.getLogger("tessera.scep")
router = APIRouter(tags=["Public: SCEP"])
PATHS = ("/scep/pkiclient.exe", "/cgi-bin/pkiclient.exe")
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
RA_RENEWAL_JOB, RA_RENEWAL_SECONDS = "scep-ra-renewal", 3600.0
DEFAULT_CIPHER = "aes256_cbc"
MESSAGE_NAMES = {MessageType.PKCS_REQ: PKCS_REQ, MessageType.RENEWAL_REQ: RENEWAL_REQ}


def plain_error(status: int, message: str) -> Response:
    """SCEP clients show an HTTP error body as text, if at all."""
    return PlainTextResponse(message + "\n", status_code=status)


def install(app: FastAPI, rt: Runtime) -> None:
    app.include_router(router)
    for prefix in ("/scep", "/cgi-bin/pkiclient.exe"):
        errors.FORMATTERS[prefix] = plain_error
    rt.jobs.every(RA_RENEWAL_JOB, RA_RENEWAL_SECONDS, lambda: renew_ra_certificates(rt))


@router.get("/scep/pkiclient.exe")
@router.get("/cgi-bin/pkiclient.exe")
def scep_get(request: Request, session: UnitOfWork) -> Response:
    return _get(request, session, DEFAULT_SLUG)


@router.get("/scep/{slug}/pkiclient.exe")
def scep_profile_get(slug: str, request: Request, session: UnitOfWork) -> Response:
    return _get(request, session, slug)


@router.post("/scep/pkiclient.exe")
@router.post("/cgi-bin/pkiclient.exe")
async def scep_post(request: Request, session: UnitOfWork) -> Response:
    return await _post(request, session, DEFAULT_SLUG)


@router.post("/scep/{slug}/pkiclient.exe")
async def scep_profile_post(slug: str, request: Request, session: UnitOfWork) -> Response:
    return await _post(request, session, slug)


async def _post(request: Request, session: Session, slug: str) -> Response:
    operation = request.query_params.get("operation", "")
    if operation != "PKIOperation":
        return plain_error(400, "POST carries operation=PKIOperation only")
    body = await _read_body(request)
    if body is None:
        return plain_error(413, "message too large")
    return await run_in_threadpool(_pki_operation, request, session, slug, body)


async def _read_body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _get(request: Request, session: Session, slug: str) -> Response:
    operation = request.query_params.get("operation", "")
    if operation == "PKIOperation":
        message = request.query_params.get("message", "")
        if len(message) > MAX_MESSAGE * 2:
            return plain_error(413, "message too large")
        der = _base64(message)
        if der is None:
            return plain_error(400, "message is not base64")
        return _pki_operation(request, session, slug, der)
    handlers = {
        "GetCACaps": _ca_caps,
        "GetCACert": _ca_cert,
        "GetNextCACert": _next_ca_cert,
    }
    handler = handlers.get(operation)
    if handler is None:
        return plain_error(400, f"unknown SCEP operation {operation[:40]!r}")
    context = _Context(request, session, slug)
    return handler(context)


class _Context:
    """The services of one SCEP request, acting as the SCEP front end of one profile."""

    def __init__(self, request: Request, session: Session, slug: str) -> None:
        rt = runtime(request)
        org_id = default_org_id(request)
        host = request.client.host if request.client else None
        agent = (request.headers.get("user-agent") or "")[:300] or None
        # An unauthenticated protocol client: audited as "scep:<profile>", holding no grants.
        self.actor = Actor(None, f"scep:{slug}"[:150], org_id, "scep", frozenset(), host, agent)
        repos = Repositories(session, org_id)
        issuance = Issuance(repos, rt.authority, rt.keys, rt.publication, self.actor, rt.serials)
        self.now = now(request)
        self.profiles = ProfileService(issuance, self.now, rt.settings.scep_ra_days)
        self.enrollment = EnrollmentService(issuance, self.now)
        self.client_ip = host
        self.allow_des = rt.settings.scep_allow_des
        self.profile = _enabled(repos, slug)


def _enabled(repos: Repositories, slug: str) -> ScepProfile:
    profile = repos.scep.profile(slug)
    if profile is None or not profile.enabled or profile.ca_id is None:
        raise NotFound(f"no enabled SCEP profile {slug!r}")
    return profile


def _ca_caps(context: _Context) -> Response:
    caps = list(CAPABILITIES)
    if context.profile.next_ca_id is not None:
        caps.append("GetNextCACert")
    caps.append("SCEPStandard")
    return PlainTextResponse("\n".join(caps))


def _ca_cert(context: _Context) -> Response:
    responder = context.profiles.responder(context.profile)
    if len(responder.ca_certificates) == 1:
        return Response(_der(responder.ca_certificates[0]), media_type="application/x-x509-ca-cert")
    return Response(
        cms.degenerate(responder.ca_certificates), media_type="application/x-x509-ca-ra-cert"
    )


def _next_ca_cert(context: _Context) -> Response:
    """The next CA (and its RA), signed by the current responder (RFC 8894 section 4.7)."""
    if context.profile.next_ca_id is None:
        raise NotFound("no CA rollover is in progress; there is no next CA certificate")
    current = context.profiles.responder(context.profile)
    upcoming = context.profiles.responder(context.profile, upcoming=True)
    inner = cms.degenerate(upcoming.ca_certificates)
    body = cms.sign(inner, [], current.certificate, current.key, "sha256", [current.certificate])
    return Response(body, media_type="application/x-x509-next-ca-cert")


def _pki_operation(request: Request, session: Session, slug: str, der: bytes) -> Response:
    context = _Context(request, session, slug)
    try:
        message = read_message(der)
    except cms.NotCms as exc:
        return plain_error(400, str(exc))
    responder = context.profiles.responder(context.profile)
    reply, requester, cipher, signer = _process(context, message, responder)
    body = cert_rep(message, reply, signer, requester, cipher)
    return Response(body, media_type=PKI_MESSAGE)


def _process(
    context: _Context, message: PkiMessage, responder: Responder
) -> tuple[Reply, x509.Certificate | None, str, Responder]:
    """Verify, decrypt, then hand the request to the service; refusals become FAILURE. Also
    returns who signs the answer (see `_open`)."""
    try:
        signer = cms.signer_certificate(message.signed)
        cms.verify(message.signed, signer)
        if not message.signed.content:
            raise cms.CmsError(BAD_MESSAGE_CHECK, "the pkiMessage carries no envelope")
        opened, responder = _open(context, message.signed.content, responder)
    except cms.CmsError as exc:
        log.info("SCEP %s refused: %s", message.message_type.name, exc.message)
        failure = Reply.failure(exc.fail_info, exc.message)
        return failure, None, DEFAULT_CIPHER, responder
    envelope = Envelope(
        MESSAGE_NAMES.get(message.message_type, message.message_type.name),
        message.transaction_text,
        signer,
        opened.content,
        context.client_ip,
    )
    try:
        reply = _dispatch(context, message.message_type, envelope)
    except cms.CmsError as exc:
        reply = Reply.failure(exc.fail_info, exc.message)
    return reply, signer, opened.cipher, responder


def _open(
    context: _Context, content: bytes, responder: Responder
) -> tuple[cms.Decrypted, Responder]:
    """Open the envelope with the responder's key. During a rollover a client may already
    encrypt to the next RA (it learnt it from GetNextCACert, signed by the current one, so
    the current one answers). After an RA renewal a client may still encrypt to the earlier
    RA, the only one it knows: that RA opens the request and signs the answer."""
    allow = context.allow_des
    try:
        return _decrypt(content, responder, allow), responder
    except cms.CmsError as exc:
        refused = exc
    if context.profile.next_ca_id is not None:
        upcoming = context.profiles.responder(context.profile, upcoming=True)
        try:
            return _decrypt(content, upcoming, allow), responder
        except cms.CmsError as exc:
            refused = exc
    for issuer, serial in cms.recipients(content):
        retired = context.profiles.retired_responder(context.profile, issuer, serial)
        if retired is not None:
            return _decrypt(content, retired, allow), retired
    raise refused


def _decrypt(content: bytes, opener: Responder, allow_des: bool) -> cms.Decrypted:
    return cms.decrypt_enveloped(content, opener.certificate, opener.key, allow_des)


def _dispatch(context: _Context, kind: MessageType, envelope: Envelope) -> Reply:
    service, profile = context.enrollment, context.profile
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        return service.enroll(profile, envelope)
    if kind is MessageType.CERT_POLL:
        issuer_and_subject(envelope.payload)
        return service.poll(profile, envelope)
    wanted = issuer_and_serial(envelope.payload)
    if kind is MessageType.GET_CERT:
        return service.get_cert(profile, wanted.issuer, wanted.serial)
    return _get_crl(context, wanted.issuer)


def _get_crl(context: _Context, issuer_der: bytes) -> Reply:
    ca = context.enrollment.ca_for(context.profile, issuer_der)
    if ca is None:
        return Reply.failure(BAD_CERT_ID, "no CRL for this issuer here")
    crl = context.enrollment.latest_crl(ca)
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
    cleaned = text.replace(" ", "+").replace("\n", "").replace("\r", "")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)
