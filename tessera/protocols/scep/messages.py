"""SCEP messages (RFC 8894 section 3): the pkiMessage a client sends, read into a typed
object, and the CertRep the server answers with."""

import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from tessera.domains.scep.types import BAD_REQUEST, PkiStatus, Reply, Responder
from tessera.protocols.scep import cms as scep_cms
from tessera.protocols.scep import pwri
from tessera.protocols.scep.cms import ASN1_ERRORS, CmsError, NotCms, SignedMessage, parsed_value

# Signed attributes (RFC 8894 section 3.2.1).
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
NONCE_BYTES = 16
MAX_TRANSACTION_TEXT = 128  # scep_requests.transaction_id


class MessageType(StrEnum):
    CERT_REP = "3"
    RENEWAL_REQ = "17"
    PKCS_REQ = "19"
    CERT_POLL = "20"
    GET_CERT = "21"
    GET_CRL = "22"


_MESSAGE_TYPES = {member.value: member for member in MessageType}
# The attributes every CertRep shares, encoded once.
_CERT_REP_TYPE = scep_cms.attribute(
    OID_MESSAGE_TYPE, core.PrintableString(MessageType.CERT_REP.value)
)
_PKI_STATUS = {
    s: scep_cms.attribute(OID_PKI_STATUS, core.PrintableString(s.value)) for s in PkiStatus
}


@dataclass(frozen=True)
class PkiMessage:
    """The outer, signed layer of a request: enough to answer it, even with a FAILURE.
    `message_type` is None for a messageType this server does not know (`type_text`)."""

    message_type: MessageType | None
    transaction_id: core.Asn1Value  # echoed byte for byte
    sender_nonce: bytes
    signed: SignedMessage
    type_text: str

    @property
    def type_name(self) -> str:
        known = self.message_type
        return known.name if known is not None else f"messageType {self.type_text[:20]!r}"

    @property
    def transaction_text(self) -> str:
        """The transactionID as stored and shown: its text when it is printable (as RFC 8894
        requires), else its hex, so no NUL or control character reaches the database. One
        longer than the column is kept as its digest, not cut short: two IDs that share
        their first 128 characters are two transactions."""
        try:
            text = str(parsed_value(self.transaction_id, core.PrintableString))
        except ASN1_ERRORS:
            text = ""
        printable = bool(text) and text.isascii() and text.isprintable()
        shown = text if printable else self.transaction_id.contents.hex()
        if len(shown) <= MAX_TRANSACTION_TEXT:
            return shown
        return "sha256:" + hashlib.sha256(self.transaction_id.contents).hexdigest()


def read_message(der: bytes) -> PkiMessage:
    """Parse the SignedData and its SCEP attributes. NotCms when it is not SCEP at all. A
    messageType that is no request (a CertRep) or that we do not know is still a pkiMessage:
    it is answered FAILURE badRequest, "transaction not permitted or supported" (RFC 8894
    section 3.2.1.4), so the client learns why in the protocol it speaks."""
    signed = scep_cms.load_signed(der)
    message_type = signed.attribute(OID_MESSAGE_TYPE)
    transaction_id = signed.attribute(OID_TRANSACTION_ID)
    sender_nonce = signed.attribute(OID_SENDER_NONCE)
    if message_type is None or transaction_id is None or sender_nonce is None:
        raise NotCms("not a SCEP pkiMessage: messageType, transactionID or senderNonce missing")
    try:
        kind = str(parsed_value(message_type, core.PrintableString))
        nonce = parsed_value(sender_nonce, core.OctetString)
        parsed_value(transaction_id, core.PrintableString)  # parsed to validate it
    except ASN1_ERRORS as exc:
        raise NotCms(f"unreadable SCEP attribute: {exc}") from exc
    if not isinstance(nonce, bytes) or not nonce:
        raise NotCms("the senderNonce is not an octet string")
    return PkiMessage(_MESSAGE_TYPES.get(kind), transaction_id, nonce, signed, kind)


def cert_rep(
    request: PkiMessage,
    reply: Reply,
    responder: Responder,
    requester: x509.Certificate | None,
    cipher: str,
    password: str | None = None,
) -> bytes:
    """The CertRep: transactionID echoed, recipientNonce = the client's senderNonce, a fresh
    senderNonce; on SUCCESS the certificates (or CRL) in a degenerate SignedData encrypted
    to the requester's certificate, or with `password` when its key cannot encrypt.
    PENDING and FAILURE carry an empty eContent rather than none: OpenSSL's PKCS7_verify
    (certmonger's scep-submit) refuses a SignedData without content ("no content"), so the
    client never learns the status."""
    content = b""
    if reply.status is PkiStatus.SUCCESS:
        if requester is None:
            reply = Reply.failure(BAD_REQUEST, "no certificate to encrypt the answer to")
        else:
            try:
                inner = scep_cms.degenerate(reply.certificates, [reply.crl] if reply.crl else [])
                if password is not None:
                    content = pwri.encrypt(inner, password, cipher)
                else:
                    content = scep_cms.encrypt_enveloped(inner, requester, cipher)
            except CmsError as exc:
                reply, content = Reply.failure(exc.fail_info, exc.message), b""
    attributes = [
        _CERT_REP_TYPE,
        _PKI_STATUS[reply.status],
        scep_cms.attribute(OID_TRANSACTION_ID, request.transaction_id),
        scep_cms.attribute(OID_SENDER_NONCE, core.OctetString(os.urandom(NONCE_BYTES))),
        scep_cms.attribute(OID_RECIPIENT_NONCE, core.OctetString(request.sender_nonce)),
    ]
    if reply.status is PkiStatus.FAILURE:
        attributes.append(
            scep_cms.attribute(OID_FAIL_INFO, core.PrintableString(reply.fail_info or "2"))
        )
        if reply.text:
            attributes.append(
                scep_cms.attribute(OID_FAIL_INFO_TEXT, core.UTF8String(reply.text[:200]))
            )
    return scep_cms.sign(
        content,
        attributes,
        responder.certificate,
        responder.key,
        request.signed.digest_algorithm,
        [responder.certificate],
    )


@dataclass(frozen=True)
class IssuerAndSerial:
    issuer: bytes  # DER of the Name, compared with `x509.Name.public_bytes()`
    serial: int


def issuer_and_serial(der: bytes) -> IssuerAndSerial:
    """GetCert and GetCRL name a certificate by issuer and serial number."""
    try:
        parsed = cms.IssuerAndSerialNumber.load(der, strict=True)
        return IssuerAndSerial(parsed["issuer"].dump(), int(parsed["serial_number"].native))
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_REQUEST, f"unreadable IssuerAndSerialNumber: {exc}") from exc


class _IssuerAndSubject(core.Sequence):
    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


def issuer_and_subject(der: bytes) -> tuple[bytes, bytes]:
    """CertPoll names the request by issuer and subject (RFC 8894 section 3.3.3): the
    transactionID and the subject find it; the issuer is only checked to be well-formed."""
    try:
        parsed = _IssuerAndSubject.load(der, strict=True)
        return parsed["issuer"].dump(), parsed["subject"].dump()
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_REQUEST, f"unreadable IssuerAndSubject: {exc}") from exc
