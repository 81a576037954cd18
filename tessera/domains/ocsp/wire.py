"""OCSP on the wire (RFC 6960, RFC 5019 profile): parse requests, build signed responses.

Pure crypto, no storage. Single-certificate requests and responses (nearly all traffic) go
through cryptography's Rust parser and builder; cryptography handles exactly one request and
one response, so requests and responses with several certificates go through asn1crypto.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp

from tessera.core.keys import PrivateKey, signature_hash
from tessera.core.revocation import REASONS

MAX_CERTS_PER_REQUEST = 50
MAX_NONCE_BYTES = 128  # RFC 9654 (RFC 8954, which it obsoletes, allowed 32)
NONCE_OID = "1.3.6.1.5.5.7.48.1.2"
# CertID hash algorithms we answer for, by OID; anything else gets `unauthorized`.
HASHES: dict[str, hashes.HashAlgorithm] = {
    "1.3.14.3.2.26": hashes.SHA1(),  # noqa: S303 - RFC 5019 clients use SHA-1 CertIDs
    "2.16.840.1.101.3.4.2.4": hashes.SHA224(),
    "2.16.840.1.101.3.4.2.1": hashes.SHA256(),
    "2.16.840.1.101.3.4.2.2": hashes.SHA384(),
    "2.16.840.1.101.3.4.2.3": hashes.SHA512(),
}
_OID_BY_NAME = {algorithm.name: oid for oid, algorithm in HASHES.items()}


class MalformedRequest(ValueError):
    """The bytes are not an OCSP request we can read."""


@dataclass(frozen=True, slots=True)
class CertID:
    hash_oid: str
    name_hash: bytes
    key_hash: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class Request:
    cert_ids: tuple[CertID, ...]
    nonce: bytes | None


@dataclass(frozen=True, slots=True)
class Status:
    kind: str  # good | revoked | unknown
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None


GOOD = Status("good")
UNKNOWN = Status("unknown")


@dataclass(frozen=True)
class Signer:
    certificate: x509.Certificate
    key: PrivateKey
    delegated: bool  # a delegated signer's certificate travels in the response

    @property
    def key_id(self) -> bytes:
        return responder_key_hash(self.certificate)


def parse_request(der: bytes) -> Request:
    """A request of one or more CertIDs, and its nonce. Raises MalformedRequest."""
    try:
        parsed = ocsp.load_der_ocsp_request(der)
    except (ValueError, NotImplementedError):  # garbage, or several requests: the slow reader
        return _parse_with_asn1crypto(der)
    try:
        oid = _OID_BY_NAME.get(parsed.hash_algorithm.name, "")
        extensions = parsed.extensions
    except x509.DuplicateExtension as exc:  # RFC 5280 4.2: an extension appears once
        raise MalformedRequest("the request carries an extension twice") from exc
    except (UnsupportedAlgorithm, ValueError):
        # An algorithm cryptography does not know, or an extension it cannot read: the slow
        # reader tells us the OID and skips what it does not know.
        return _parse_with_asn1crypto(der)
    if _has_single_request_extensions(der):
        return _parse_with_asn1crypto(der)  # rare; cryptography does not expose them
    nonce = None
    for extension in extensions:
        if isinstance(extension.value, x509.OCSPNonce):
            nonce = _checked_nonce(extension.value.nonce)
        elif extension.critical:
            raise MalformedRequest(_NOT_UNDERSTOOD.format(extension.oid.dotted_string))
    serial = _checked_serial(parsed.serial_number)
    cert_id = CertID(oid, parsed.issuer_name_hash, parsed.issuer_key_hash, serial)
    return Request((cert_id,), nonce)


def _parse_with_asn1crypto(der: bytes) -> Request:
    try:
        request = asn1_ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        cert_ids = tuple(_cert_id(one["req_cert"]) for one in tbs["request_list"])
        for one in tbs["request_list"]:
            for extension in one["single_request_extensions"] or ():
                if extension["critical"].native:  # none is understood here
                    raise MalformedRequest(_NOT_UNDERSTOOD.format(extension["extn_id"].dotted))
        nonce = None
        seen: set[str] = set()
        for listed in tbs["request_extensions"] or ():
            extension = _RawExtension.load(listed.dump())
            oid = extension["extn_id"].dotted
            if oid in seen:  # as cryptography's reader refuses it (RFC 5280 4.2)
                raise MalformedRequest("the request carries an extension twice")
            seen.add(oid)
            if oid == NONCE_OID:
                nonce = _checked_nonce(_nonce_bytes(extension["extn_value"].native))
            elif extension["critical"].native:
                raise MalformedRequest(_NOT_UNDERSTOOD.format(oid))
    except MalformedRequest:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedRequest(f"not an OCSP request: {exc}") from exc
    if not cert_ids or len(cert_ids) > MAX_CERTS_PER_REQUEST:
        raise MalformedRequest(f"a request names 1 to {MAX_CERTS_PER_REQUEST} certificates")
    return Request(cert_ids, nonce)


# RFC 6960 4.4: unrecognised extensions are ignored unless critical; a critical one that is
# not understood cannot be ignored, so the request is refused.
_NOT_UNDERSTOOD = "critical extension {} is not understood"


def _has_single_request_extensions(der: bytes) -> bool:
    """Whether a Request (reqCert, [0] singleRequestExtensions) of a request that
    cryptography has already parsed (so the DER is sound) holds more than its CertID: a walk
    over a few lengths, where a full asn1crypto parse would cost the hot path 30 times more."""
    _, tbs_request, _ = _tlv_at(der, 0)  # inside OCSPRequest
    _, first_field, _ = _tlv_at(der, tbs_request)  # inside TBSRequest
    tag, start, end = _tlv_at(der, first_field)
    while tag in (0xA0, 0xA1):  # [0] version, [1] requestorName
        tag, start, end = _tlv_at(der, end)
    requests_end, request = end, start  # requestList: SEQUENCE OF Request
    while request < requests_end:
        _, cert_id, request_end = _tlv_at(der, request)
        if _tlv_at(der, cert_id)[2] != request_end:
            return True
        request = request_end
    return False


def _tlv_at(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the DER element at offset."""
    tag, length, start = der[offset], der[offset + 1], offset + 2
    if length & 0x80:
        size = length & 0x7F
        length, start = int.from_bytes(der[start : start + size], "big"), start + size
    return tag, start, start + length


def _cert_id(value: asn1_ocsp.CertId) -> CertID:
    serial = value["serial_number"].native
    if not isinstance(serial, int):
        raise MalformedRequest("the serial number is not an integer")
    return CertID(
        value["hash_algorithm"]["algorithm"].dotted,
        bytes(value["issuer_name_hash"].native),
        bytes(value["issuer_key_hash"].native),
        _checked_serial(serial),
    )


def _checked_serial(serial: int) -> int:
    """No certificate has a negative serial (RFC 5280 4.1.2.2), and no response can name one
    (cryptography refuses to encode it): a request for one is malformed (RFC 6960 2.3)."""
    if serial < 0:
        raise MalformedRequest("a certificate serial number is never negative")
    return serial


class _RawExtension(asn1_core.Sequence):
    """An Extension whose extnValue is kept as the bytes sent. asn1crypto's OCSP classes
    parse a nonce's extnValue as an OCTET STRING themselves: a raw nonce then fails to load,
    and `_nonce_bytes` would unwrap a nonce that itself looks like an OCTET STRING twice."""

    _fields = [
        ("extn_id", asn1_core.ObjectIdentifier),
        ("critical", asn1_core.Boolean, {"default": False}),
        ("extn_value", asn1_core.OctetString),
    ]


def _nonce_bytes(raw: bytes) -> bytes:
    """The nonce is an OCTET STRING inside extnValue (RFC 9654); a few old clients put the
    raw bytes there instead. Both are read, as cryptography (and OpenSSL) read them on the
    one-certificate path; the answer always carries the RFC's form, so a client that
    compares extnValue bytes with what it sent raw sees a mismatch."""
    try:
        inner = asn1_core.OctetString.load(raw, strict=True)
    except ValueError:
        return raw
    return bytes(inner.native)


def _checked_nonce(nonce: bytes) -> bytes:
    if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
        raise MalformedRequest(f"the nonce must be 1 to {MAX_NONCE_BYTES} octets (RFC 9654)")
    return nonce


def issuer_hashes(issuer: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """The (issuerNameHash, issuerKeyHash) of a CA for every supported CertID algorithm."""
    name_der = issuer.subject.public_bytes()
    key_bits = _public_key_bits(issuer)
    return {
        oid: (_digest(algorithm, name_der), _digest(algorithm, key_bits))
        for oid, algorithm in HASHES.items()
    }


def responder_key_hash(certificate: x509.Certificate) -> bytes:
    """ResponderID byKey: SHA-1 of the signer's subjectPublicKey bits (RFC 6960 4.2.1)."""
    return hashlib.sha1(_public_key_bits(certificate)).digest()  # noqa: S324 - mandated


def _public_key_bits(certificate: x509.Certificate) -> bytes:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bytes(asn1_x509.PublicKeyInfo.load(spki)["public_key"])


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def build_response(
    signer: Signer,
    answers: Sequence[tuple[CertID, Status]],
    this_update: datetime,
    next_update: datetime,
    nonce: bytes | None = None,
) -> bytes:
    """A signed, successful OCSP response; producedAt is thisUpdate (both when it is made)."""
    if len(answers) == 1:
        return _build_one(signer, answers[0], this_update, next_update, nonce)
    return _build_many(signer, answers, this_update, next_update, nonce)


def _build_one(
    signer: Signer,
    answer: tuple[CertID, Status],
    this_update: datetime,
    next_update: datetime,
    nonce: bytes | None,
) -> bytes:
    cert_id, status = answer
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        cert_id.name_hash,
        cert_id.key_hash,
        cert_id.serial,
        HASHES[cert_id.hash_oid],
        _CERT_STATUS[status.kind],
        this_update,
        next_update,
        status.revoked_at,
        status.reason,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
    if signer.delegated:
        builder = builder.certificates([signer.certificate])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    signed = builder.sign(signer.key, signature_hash(signer.key))
    return signed.public_bytes(serialization.Encoding.DER)


_CERT_STATUS = {
    "good": ocsp.OCSPCertStatus.GOOD,
    "revoked": ocsp.OCSPCertStatus.REVOKED,
    "unknown": ocsp.OCSPCertStatus.UNKNOWN,
}


def _build_many(
    signer: Signer,
    answers: Sequence[tuple[CertID, Status]],
    this_update: datetime,
    next_update: datetime,
    nonce: bytes | None,
) -> bytes:
    extensions = None
    if nonce is not None:
        extensions = [{"extn_id": "nonce", "critical": False, "extn_value": nonce}]
    data = asn1_ocsp.ResponseData(
        {
            "responder_id": asn1_ocsp.ResponderId(name="by_key", value=signer.key_id),
            "produced_at": this_update,
            "responses": [_single(a, this_update, next_update) for a in answers],
            "response_extensions": extensions,
        }
    )
    tbs = data.dump()
    certs = None
    if signer.delegated:
        der = signer.certificate.public_bytes(serialization.Encoding.DER)
        certs = [asn1_x509.Certificate.load(der)]
    basic = asn1_ocsp.BasicOCSPResponse(
        {
            "tbs_response_data": data,
            "signature_algorithm": {"algorithm": _signature_algorithm(signer.key)},
            "signature": _sign(signer.key, tbs),
            "certs": certs,
        }
    )
    response = asn1_ocsp.OCSPResponse(
        {
            "response_status": "successful",
            "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
        }
    )
    return bytes(response.dump())


def _single(
    answer: tuple[CertID, Status], this_update: datetime, next_update: datetime
) -> asn1_ocsp.SingleResponse:
    cert_id, status = answer
    if status.kind == "revoked":
        info: dict[str, object] = {"revocation_time": status.revoked_at}
        if status.reason is not None:
            info["revocation_reason"] = status.reason.name  # same names in asn1crypto
        cert_status = asn1_ocsp.CertStatus(name="revoked", value=info)
    else:
        cert_status = asn1_ocsp.CertStatus(name=status.kind, value=asn1_core.Null())
    return asn1_ocsp.SingleResponse(
        {
            "cert_id": {
                "hash_algorithm": {"algorithm": cert_id.hash_oid},
                "issuer_name_hash": cert_id.name_hash,
                "issuer_key_hash": cert_id.key_hash,
                "serial_number": cert_id.serial,
            },
            "cert_status": cert_status,
            "this_update": this_update,
            "next_update": next_update,
        }
    )


def _signature_algorithm(key: PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    digest = signature_hash(key)
    name = digest.name if digest else "sha256"
    return f"{name}_ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else f"{name}_rsa"


def _sign(key: PrivateKey, data: bytes) -> bytes:
    digest = signature_hash(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest or hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest or hashes.SHA256())
    raise TypeError(f"cannot sign OCSP responses with {type(key).__name__}")


def unsuccessful(status: str) -> bytes:
    """An unsigned response with an error status: malformed_request, internal_error,
    try_later, sig_required or unauthorized (RFC 6960 4.2.1)."""
    kind = ocsp.OCSPResponseStatus[status.upper()]
    return ocsp.OCSPResponseBuilder.build_unsuccessful(kind).public_bytes(
        serialization.Encoding.DER
    )


def reason_flag(name: str | None) -> x509.ReasonFlags | None:
    """Stored camelCase reason -> flag; `unspecified` is left out of responses (RFC 5280
    5.3.1 advises against the code), so relying parties see revocation without a reason."""
    if not name or name == "unspecified" or name not in REASONS:
        return None
    return REASONS[name]
