"""Building and signing CRLs (RFC 5280 section 5), fast enough for a million entries.

cryptography's `RevokedCertificateBuilder` costs about 10 microseconds per entry in Python
objects alone, so a CA with a million revocations would spend ten seconds before signing.
Here cryptography builds everything but the entry list: a CRL with the right issuer, times,
signature algorithm and extensions and no entries. Its to-be-signed part is then re-assembled
with the `revokedCertificates` list encoded directly to DER (each entry is a short, fixed
shape: serial, revocation date, optional reason code and invalidity date), signed with the
CA key using the same algorithm, and wrapped. No SQL here: entries come in as plain tuples.
"""

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from tessera.core.keys import PrivateKey, signature_hash

# RFC 5280 5.3.1 reason codes; unspecified (0) is left out of entries, as the RFC asks.
REASON_CODES: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "cACompromise": 2,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "certificateHold": 6,
    "removeFromCRL": 8,
    "privilegeWithdrawn": 9,
    "aACompromise": 10,
}
_UTC_TIME_END = 2050  # RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050


class Entry(NamedTuple):
    """One revoked certificate as a CRL lists it; the serial in hex, as the inventory keeps it,
    and the dates as datetimes or as seconds since the epoch (what the database hands over
    fastest). A tuple, not a dataclass: a CRL can have a million of them."""

    serial_hex: str
    revoked_at: datetime | int
    reason: str | None = None
    invalidity_date: datetime | int | None = None


# What build_crl takes: an Entry, or a row of (serial hex, revocation date, reason) with or
# without the invalidity date after it.
EntryLike = (
    Entry
    | tuple[str, datetime | int, str | None]
    | tuple[str, datetime | int, str | None, datetime | int | None]
)


@dataclass(frozen=True)
class CRLSpec:
    """Everything about one CRL but its entries."""

    issuer: x509.Certificate
    key: PrivateKey
    number: int
    this_update: datetime
    next_update: datetime
    delta_base: int | None = None  # set for a delta CRL: the base CRL number it extends
    freshest_url: str | None = None  # where the delta CRL is, listed in a full CRL
    ca_issuers_url: str | None = None


def build_crl(spec: CRLSpec, entries: Iterable[EntryLike]) -> bytes:
    """The signed CRL in DER."""
    template = _template(spec)
    encoded = b"".join([encode_entry(*entry) for entry in entries])
    tbs = _splice_entries(template.tbs_certlist_bytes, encoded)
    signature = _sign(spec.key, tbs)
    algorithm = _children(template.public_bytes(serialization.Encoding.DER))[1]
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def _template(spec: CRLSpec) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(spec.issuer.subject)
        .last_update(spec.this_update)
        .next_update(spec.next_update)
        .add_extension(_authority_key_id(spec.issuer), critical=False)
        .add_extension(x509.CRLNumber(spec.number), critical=False)
    )
    if spec.delta_base is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(spec.delta_base), critical=True)
    elif spec.freshest_url:
        point = x509.DistributionPoint(
            [x509.UniformResourceIdentifier(spec.freshest_url)], None, None, None
        )
        builder = builder.add_extension(x509.FreshestCRL([point]), critical=False)
    if spec.ca_issuers_url:
        access = x509.AccessDescription(
            x509.AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(spec.ca_issuers_url),
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), False)
    return builder.sign(spec.key, signature_hash(spec.key))  # type: ignore[arg-type]


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()  # type: ignore[arg-type]
        )


def _sign(key: PrivateKey, data: bytes) -> bytes:
    """The same algorithm cryptography used for the template (its signatureAlgorithm is
    copied into the result): PKCS#1 v1.5 for RSA, ECDSA with the curve's hash, pure EdDSA."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), signature_hash(key) or hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(signature_hash(key) or hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    raise ValueError(f"cannot sign a CRL with a {type(key).__name__}")


def _splice_entries(tbs: bytes, entries_der: bytes) -> bytes:
    """Insert `revokedCertificates` before `crlExtensions` ([0]); absent when empty (5.1.2.6)."""
    if not entries_der:
        return tbs
    children = _children(tbs)
    at = next(i for i, child in enumerate(children) if child[0] == 0xA0)
    body = b"".join(children[:at]) + _tlv(0x30, entries_der) + b"".join(children[at:])
    return _tlv(0x30, body)


def encode_entry(
    serial_hex: str,
    revoked_at: datetime | int,
    reason: str | None = None,
    invalidity_date: datetime | int | None = None,
) -> bytes:
    """One `revokedCertificates` element. Every part is short (a serial of at most 32 octets,
    a time, two small extensions), so every length here fits in one octet."""
    serial = _serial_bytes(serial_hex)
    body = b"\x02" + bytes((len(serial),)) + serial + _time(revoked_at)
    extensions = _REASON_EXTENSIONS.get(reason or "", b"")
    if invalidity_date is not None:
        moment = _generalized(invalidity_date)
        extensions += _tlv(0x30, _INVALIDITY_OID + _tlv(0x04, moment))
    if extensions:
        body += b"\x30" + bytes((len(extensions),)) + extensions
    return b"\x30" + bytes((len(body),)) + body


def _serial_bytes(serial_hex: str) -> bytes:
    if serial_hex.startswith("-"):  # only an imported, non-conforming certificate has one
        value = int(serial_hex, 16)
        return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
    if len(serial_hex) % 2:
        serial_hex = "0" + serial_hex
    if serial_hex[0] in "89ABCDEFabcdef":  # INTEGER is signed: keep it positive
        serial_hex = "00" + serial_hex
    return bytes.fromhex(serial_hex)


def _reason_extension(code: int) -> bytes:
    enumerated = _tlv(0x0A, bytes([code]))
    return _tlv(0x30, b"\x06\x03\x55\x1d\x15" + _tlv(0x04, enumerated))


def _time(moment: datetime | int) -> bytes:
    """UTCTime (or GeneralizedTime from 2050) of a datetime or of seconds since the epoch.
    Formatting a datetime costs microseconds, a million times over: the day part is cached
    and the time of day looked up in a table."""
    seconds = moment if isinstance(moment, int) else int(moment.timestamp())
    if seconds >= _GENERALIZED_FROM:
        return _generalized(datetime.fromtimestamp(seconds, UTC))
    day, second_of_day = divmod(seconds, 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        text = datetime.fromtimestamp(day * 86400, UTC).strftime("%y%m%d")
        prefix = _DAYS[day] = b"\x17\x0d" + text.encode()
    return prefix + _time_of_day()[second_of_day]


_GENERALIZED_FROM = int(datetime(_UTC_TIME_END, 1, 1, tzinfo=UTC).timestamp())
_DAYS: dict[int, bytes] = {}
_TIMES_OF_DAY: list[bytes] | None = None


def _time_of_day() -> list[bytes]:
    """Made on first use, whole, then published by one assignment: CRLs of several CAs are
    built in parallel threads, and a list filled in place was seen half-filled."""
    global _TIMES_OF_DAY
    if _TIMES_OF_DAY is None:
        _TIMES_OF_DAY = [
            f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}Z".encode() for s in range(86400)
        ]
    return _TIMES_OF_DAY


def _generalized(moment: datetime | int) -> bytes:
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    text = (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}Z"
    )
    return b"\x18\x0f" + text.encode()


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _children(der: bytes) -> Sequence[bytes]:
    """The encoded elements inside one DER SEQUENCE (as made by cryptography: definite
    lengths, single-byte tags)."""
    start, end = _header(der, 0)
    children, at = [], start
    while at < end:
        _, after = _header(der, at)
        children.append(der[at:after])
        at = after
    return children


def _header(der: bytes, at: int) -> tuple[int, int]:
    """(start of the value, end of the element) of the TLV at `at`."""
    first = der[at + 1]
    if first < 0x80:
        return at + 2, at + 2 + first
    count = first & 0x7F
    size = int.from_bytes(der[at + 2 : at + 2 + count], "big")
    start = at + 2 + count
    return start, start + size


def to_pem(der: bytes) -> str:
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN X509 CRL-----\n" + "\n".join(lines) + "\n-----END X509 CRL-----\n"


# Built once: the extension of each reason code is a constant.

_REASON_EXTENSIONS = {name: _reason_extension(code) for name, code in REASON_CODES.items() if code}
_INVALIDITY_OID = b"\x06\x03\x55\x1d\x18"  # id-ce-invalidityDate, 2.5.29.24
