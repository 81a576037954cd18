"""Reading and writing certificates, CSRs, keys and bundles in the formats the dialects
exchange: the one place where bytes from outside become objects.

Whatever the input, the readers here raise only typed errors (`UnparsableInput`,
`InvalidInput`, `PolicyViolation`). cryptography decodes parts of a certificate or CSR lazily
(names, extensions, the public key), so the readers touch those parts before returning: a
malformed extension fails here, as a clear 4xx, and not later in whatever reads it first.
"""

import base64
import binascii
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.utils import CryptographyDeprecationWarning

from tessera.core import kdf_cost, pkcs12_sandbox
from tessera.core.errors import (
    InvalidInput,
    PolicyViolation,
    UnparsableInput,
)
from tessera.core.keys import PrivateKey
from tessera.core.keystore import _as_supported
from tessera.core.names import name_text
from tessera.core.trusted_pem import TRUSTED_LABEL, certificate_der

# Roots in Debian's CA bundle have negative serials (RFC 5280 forbids them), read on purpose:
# the warning, source lines and all, told an operator syncing the trust store nothing.
warnings.filterwarnings(
    "ignore",
    message="Parsed a serial number which wasn't positive",
    category=CryptographyDeprecationWarning,
)

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n")
_END = re.compile(rb"-----END ([A-Z0-9 ]{1,64})-----")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_DEK_INFO = re.compile(
    rb"^DEK-Info:[ \t]*([A-Za-z0-9-]+)[ \t]*,[ \t]*([0-9A-Fa-f]*)[ \t]*\r?$", re.M
)
# The IV each cipher of OpenSSL's traditional encrypted PEM needs (RFC 1421 4.6.1.3 header).
_PEM_IV_BYTES = {"AES-128-CBC": 16, "AES-192-CBC": 16, "AES-256-CBC": 16, "DES-EDE3-CBC": 8}
_UNREADABLE = pkcs12_sandbox.UNREADABLE
_BAD_SIGNATURE: tuple[type[Exception], ...] = (*_UNREADABLE, InvalidSignature)
CSR_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
CERT_LABELS = ("CERTIFICATE", TRUSTED_LABEL)
MAX_OBJECTS = 500
MAX_PASSPHRASE = 1023
CERT_UNREADABLE = "not a certificate in PEM, DER or PKCS#7 form"
CSR_UNREADABLE = "not a certificate signing request in PEM or DER form"
CSR_UNDECODABLE = "the CSR's subject or extensions cannot be decoded"
KEY_UNREADABLE = "not a private key in PEM or DER form, or wrong password"
PKCS12_UNREADABLE = "not a PKCS#12 file, or the password is wrong"


@contextmanager
def reading(message: str) -> Iterator[None]:
    try:
        yield
    except _UNREADABLE as exc:
        raise UnparsableInput(message) from exc


# --- PEM armour and pasted text ---------------------------------------------------------------


def pem_objects(data: bytes) -> list[tuple[str, bytes]]:
    """Every PEM block as (label, block), in order, ignoring text before, between and after.
    Linear in the input: each END marker is searched for once, however many BEGINs precede."""
    found: list[tuple[str, bytes]] = []
    end: re.Match[bytes] | None = None
    taken_until = 0
    for begin in _BEGIN.finditer(data):
        if begin.start() < taken_until:
            continue
        if end is None or end.start() < begin.end():
            end = _END.search(data, begin.end())
            if end is None:
                break
        if end.group(1) == begin.group(1):
            found.append((begin.group(1).decode("ascii"), data[begin.start() : end.end()]))
            taken_until = end.end()
    return found


def pem_blocks(data: bytes, label: str) -> list[bytes]:
    """Every PEM block with this label, ignoring text before, between and after them."""
    return [block for found, block in pem_objects(data) if found == label]


def decode_upload(data: bytes) -> bytes:
    """An uploaded file or pasted text: PEM and binary as they are; base64 (one line or
    wrapped) of a binary file (DER, PKCS#12, PKCS#7) decoded."""
    if b"-----BEGIN" in data:
        return data
    compact = b"".join(data.split())
    if compact and _BASE64.fullmatch(compact):
        try:
            return base64.b64decode(compact, validate=True)
        except binascii.Error:
            return data
    return data


def decode_text(text: str) -> bytes:
    """Text from a JSON field: PEM as it is, or base64 of a binary file (optionally prefixed
    "BASE64:", as UCM's tools write it)."""
    stripped = text.strip()
    if stripped[:7].upper() == "BASE64:":
        stripped = stripped[7:]
    return decode_upload(text_bytes(stripped))


def text_bytes(text: str) -> bytes:
    """UTF-8, keeping lone surrogates (JSON can carry them) so the parsers refuse them."""
    return text.encode("utf-8", "surrogatepass")


def secret(password: str | None) -> bytes | None:
    return text_bytes(password) if password else None


# --- certificates -----------------------------------------------------------------------------


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """PEM (one or many, with surrounding text; OpenSSL's TRUSTED CERTIFICATE form too), DER,
    or a PKCS#7 bundle (PEM or DER). At most MAX_OBJECTS of them: the body limit lets some
    15,000 small certificates through, which took half a minute of CPU to read and describe."""
    with reading(CERT_UNREADABLE):
        blocks = [(label, b) for label, b in pem_objects(data) if label in CERT_LABELS]
        if blocks:
            _at_most_max_objects(len(blocks))
            certs = [pem_certificate(label, block) for label, block in blocks]
        elif pem_blocks(data, "PKCS7"):
            certs = pkcs7.load_pem_pkcs7_certificates(pem_blocks(data, "PKCS7")[0])
        else:
            certs = _der_certificates(data)
    if not certs:
        raise UnparsableInput("no certificate found")
    _at_most_max_objects(len(certs))
    return [checked_certificate(c) for c in certs]


class TooManyObjects(InvalidInput):
    """Refuses the whole content, even when found inside one of its objects."""


def _at_most_max_objects(count: int) -> None:
    if count > MAX_OBJECTS:
        raise TooManyObjects(
            f"at most {MAX_OBJECTS} objects are read at once; the content holds {count} "
            "certificates"
        )


def pem_certificate(label: str, block: bytes) -> x509.Certificate:
    if label == TRUSTED_LABEL:
        return x509.load_der_x509_certificate(certificate_der(block))
    return x509.load_pem_x509_certificate(block)


def load_certificate_file(data: bytes, password: bytes | None = None) -> list[x509.Certificate]:
    """Every certificate of a file: what `load_certificates` reads, or a PKCS#12 file (opened
    with the password, if it has one), whose private key, if any, is left out."""
    if not looks_like_pkcs12(data):
        return load_certificates(data)
    cert, _, extra = load_pkcs12(data, password)
    certs = [cert, *extra] if cert is not None else extra
    if not certs:
        raise InvalidInput("the PKCS#12 file holds no certificate")
    return certs


def _der_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(data)]
    except _UNREADABLE:
        return pkcs7.load_der_pkcs7_certificates(data)


def load_certificate(data: bytes) -> x509.Certificate:
    return load_certificates(data)[0]


def checked_certificate(cert: x509.Certificate) -> x509.Certificate:
    """Decode what cryptography leaves for later, so nothing fails after this returns."""
    with reading("the certificate's names, dates or extensions cannot be decoded"):
        texts = [name_text(cert.subject), name_text(cert.issuer)]
        texts += _extension_texts(cert.extensions)
        _ = (cert.version, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)
    public_key(cert)
    if any("\x00" in text for text in texts):
        raise InvalidInput("the certificate's names contain NUL characters")
    return cert


def _extension_texts(extensions: x509.Extensions) -> list[str]:
    texts: list[str] = []
    for ext in extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
            texts += [str(name.value) for name in ext.value]
    return texts


def public_key(obj: x509.Certificate | x509.CertificateSigningRequest) -> PublicKeyTypes:
    try:
        return obj.public_key()
    except UnsupportedAlgorithm as exc:
        raise PolicyViolation("the public key algorithm is not supported") from exc
    except ValueError as exc:
        raise UnparsableInput("the public key cannot be decoded") from exc


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s name and key signed `cert`."""
    try:
        cert.verify_directly_issued_by(issuer)
    except _BAD_SIGNATURE:
        return False
    return True


# --- CSRs --------------------------------------------------------------------------------------


def load_csr(data: bytes, verify: bool = True) -> x509.CertificateSigningRequest:
    """A PEM or DER CSR; with `verify`, only one whose self-signature verifies."""
    with reading(CSR_UNREADABLE):
        blocks = [b for label in CSR_LABELS for b in pem_blocks(data, label)]
        if len(blocks) > 1:  # which one was meant? Taking the first would drop the rest unsaid
            raise InvalidInput(f"the text holds {len(blocks)} CSRs; send one at a time")
        if blocks:
            pem = blocks[0].replace(b"NEW CERTIFICATE REQUEST", b"CERTIFICATE REQUEST")
            csr = x509.load_pem_x509_csr(pem)
        else:
            csr = x509.load_der_x509_csr(data)
    _check_csr(csr)
    if verify and not csr_signature_valid(csr):
        raise PolicyViolation("CSR signature does not verify")
    return csr


def _check_csr(csr: x509.CertificateSigningRequest) -> None:
    with reading(CSR_UNDECODABLE):
        texts = [name_text(csr.subject), *_extension_texts(csr.extensions)]
    public_key(csr)
    if any("\x00" in text for text in texts):
        raise InvalidInput("the CSR's subject or names contain NUL characters")


def csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    try:
        return bool(csr.is_signature_valid)
    except _UNREADABLE as exc:
        raise PolicyViolation("CSR signature cannot be checked") from exc


# --- private keys and PKCS#12 ------------------------------------------------------------------


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """The first PEM private key, or a DER one. A password is used only if the key needs it."""
    blocks = [block for label, block in pem_objects(data) if "PRIVATE KEY" in label]
    source = blocks[0] if blocks else data
    loader = serialization.load_pem_private_key if blocks else serialization.load_der_private_key
    if blocks:
        _check_pem_iv(source)
    if password is not None:
        kdf_cost.check_key(source, KEY_UNREADABLE)
    try:
        key = _decrypted(loader, source, password)
    except TypeError as exc:
        raise InvalidInput("the private key is encrypted: a password is required") from exc
    except UnsupportedAlgorithm as exc:
        raise InvalidInput("unsupported private key type") from exc
    except _UNREADABLE as exc:
        raise UnparsableInput(KEY_UNREADABLE) from exc
    return _as_supported(key)


def _check_pem_iv(block: bytes) -> None:
    """A DEK-Info IV shorter than its cipher's makes cryptography 50 panic (a Rust assertion,
    which no `except Exception` catches) instead of refusing the key: refused here first."""
    header = _DEK_INFO.search(block)
    if header is None:
        return
    needed = _PEM_IV_BYTES.get(header.group(1).decode("ascii").upper())
    if needed is not None and len(header.group(2)) < 2 * needed:
        raise UnparsableInput(f"the key's DEK-Info IV is shorter than {needed} bytes")


def _decrypted(loader: Callable[..., object], source: bytes, password: bytes | None) -> object:
    if password is not None and not key_is_encrypted(source):
        try:
            return loader(source, password=None)
        except TypeError:
            pass  # encrypted after all (DER gives no sign of it): use the password
    return loader(source, password=password)


def key_is_encrypted(data: bytes) -> bool:
    """A PEM key under a passphrase (PKCS#8 or OpenSSL's traditional form), or a DER PKCS#8
    EncryptedPrivateKeyInfo."""
    if b"-----BEGIN" in data:
        return b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:
        return True
    except _UNREADABLE:
        return False
    return False


def load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[x509.Certificate | None, PrivateKey | None, list[x509.Certificate]]:
    key, cert, extra = _open_pkcs12(data, password)
    _at_most_max_objects(len(extra) + (1 if cert else 0))
    certs = [checked_certificate(c) for c in ([cert] if cert else []) + list(extra)]
    main = certs[0] if cert is not None else None
    return main, (_as_supported(key) if key is not None else None), certs[1 if main else 0 :]


def _open_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[PrivateKeyTypes | None, x509.Certificate | None, list[x509.Certificate]]:
    """With the password given; a file under no password or the empty one opens either way
    (cryptography opens both with None)."""
    kdf_cost.check_pkcs12(data, PKCS12_UNREADABLE)
    failure: Exception | None = None
    for candidate in dict.fromkeys([password, None]):
        try:
            key_der, cert_der, extra_der = pkcs12_sandbox.load(data, candidate)
        except _UNREADABLE as exc:
            failure = exc
            continue
        key = serialization.load_der_private_key(key_der, None) if key_der else None
        cert = x509.load_der_x509_certificate(cert_der) if cert_der else None
        return key, cert, [x509.load_der_x509_certificate(der) for der in extra_der]
    raise InvalidInput(PKCS12_UNREADABLE) from failure


def looks_like_pkcs12(data: bytes) -> bool:
    """PKCS#12 is DER starting with a SEQUENCE holding version 3."""
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[:8]


# --- writing -----------------------------------------------------------------------------------


def public_key_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


FEW_KEYS = 8  # up to this many keys, a certificate is searched for them before it is parsed


def public_key_among(pem: str, wanted: set[bytes]) -> bytes | None:
    """Which of `wanted` (SubjectPublicKeyInfo DER) is the key of this certificate, one PEM
    block as `cert_pem` writes it. A key's SPKI appears verbatim in its certificate's DER:
    when the keys are few, a bytes search for each (a tenth of a parse) rules most
    certificates out; a candidate, or every certificate when the keys are many, is parsed to
    be sure (an extension could quote another key)."""
    if len(wanted) <= FEW_KEYS:
        der = base64.b64decode(pem.partition("-----\n")[2].rpartition("-----END")[0])
        if not any(spki in der for spki in wanted):
            return None
    spki = public_key_der(x509.load_pem_x509_certificate(pem.encode()).public_key())
    return spki if spki in wanted else None


def same_public_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    return public_key_der(a) == public_key_der(b)


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def key_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER: only for handing a key back to whoever supplied it."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def passphrase_bytes(passphrase: str) -> bytes:
    """A passphrase that protects an exported key: 1 to 1023 bytes (OpenSSL's limit)."""
    raw = text_bytes(passphrase)
    if not 0 < len(raw) <= MAX_PASSPHRASE:
        raise InvalidInput(f"a passphrase must be 1 to {MAX_PASSPHRASE} bytes long")
    return raw


def key_pem(key: PrivateKey, passphrase: str | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase_bytes(passphrase))
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode("ascii")


def pkcs12_bundle(
    name: str,
    cert: x509.Certificate,
    key: PrivateKey | None,
    chain: list[x509.Certificate],
    password: str,
) -> bytes:
    if not password:
        raise InvalidInput("a password is required for PKCS#12 export")
    # Checked here, for every caller: the serializer's own refusal is a bare ValueError.
    if key is not None and not same_public_key(cert.public_key(), key.public_key()):
        raise InvalidInput("the private key does not belong to the certificate")
    # AES-256 with PBKDF2 and SHA-256 MAC: readable by OpenSSL 1.1+ and 3.x.
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase_bytes(password))
    )
    return pkcs12.serialize_key_and_certificates(
        text_bytes(name), key, cert, chain or None, encryption
    )


def pkcs7_bundle(certs: list[x509.Certificate], der: bool = False) -> bytes:
    if not certs:
        raise InvalidInput("a PKCS#7 bundle needs at least one certificate")
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return pkcs7.serialize_certificates(certs, encoding)
