"""What is in an upload (smart import, tools): every object of a PEM text, or of one DER,
PKCS#12 or PKCS#7 file, read with the parsers of `formats` and reported with its problem
rather than refused."""

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from tessera.core import kdf_cost
from tessera.core.errors import InvalidInput, TesseraError, Unavailable, UnparsableInput
from tessera.core.formats import (
    CERT_LABELS,
    CERT_UNREADABLE,
    CSR_LABELS,
    MAX_OBJECTS,
    TooManyObjects,
    checked_certificate,
    key_is_encrypted,
    load_certificates,
    load_csr,
    load_pkcs12,
    load_private_key,
    looks_like_pkcs12,
    pem_certificate,
    pem_objects,
    reading,
)
from tessera.core.keys import PrivateKey
from tessera.core.pkcs12_sandbox import UNREADABLE


@dataclass(frozen=True)
class Found:
    """One object found in uploaded content: what it is and, when it could be read, itself."""

    kind: str  # certificate | csr | private_key | pkcs12 | pkcs7 | crl | public_key | unknown
    encoding: str  # pem | der
    container: str | None = None  # pkcs12 | pkcs7, when it came out of one
    certificate: x509.Certificate | None = None
    csr: x509.CertificateSigningRequest | None = None
    key: PrivateKey | None = None
    encrypted: bool = False
    problem: str | None = None  # why it could not be read or used
    label: str | None = None  # the PEM label, for what is not understood


@dataclass(frozen=True)
class Content:
    format: str  # pem | der | pkcs12 | pkcs7
    objects: list[Found]


_OTHER_LABELS = {
    "X509 CRL": ("crl", "a certificate revocation list is not imported here"),
    "PUBLIC KEY": ("public_key", "a public key alone cannot be imported"),
}


def read_objects(data: bytes, password: bytes | None) -> Content:
    """Everything in a PEM text (any number of blocks), or in one DER, PKCS#12 or PKCS#7 file.
    Objects that cannot be read are reported with their problem rather than refused. At most
    MAX_OBJECTS in all, bundles' contents counted: what reads them relates each object to the
    others, and a PKCS#7 of a few megabytes holds thousands of certificates."""
    if not data.strip():
        raise InvalidInput("the content is empty")
    content = _read_content(data, password)
    if len(content.objects) > MAX_OBJECTS:
        raise InvalidInput(
            f"at most {MAX_OBJECTS} objects are read at once; "
            f"the content holds {len(content.objects)}"
        )
    return content


def _read_content(data: bytes, password: bytes | None) -> Content:
    blocks = pem_objects(data)
    if len(blocks) > MAX_OBJECTS:
        raise InvalidInput(f"at most {MAX_OBJECTS} PEM objects are read at once")
    if blocks:
        if password:  # every key is decrypted with it: their derivations count together
            kdf_cost.check_bundle_keys([b for label, b in blocks if "PRIVATE KEY" in label])
        found = [item for label, block in blocks for item in _read_block(label, block, password)]
        single = len(blocks) == 1 and blocks[0][0] == "PKCS7"
        return Content("pkcs7" if single else "pem", found)
    if b"-----BEGIN" in data:
        raise UnparsableInput("PEM armour without a complete BEGIN/END block")
    return _read_binary(data, password)


def _read_block(label: str, block: bytes, password: bytes | None) -> list[Found]:
    if label in CERT_LABELS:
        return [_attempt("certificate", "pem", lambda: _pem_found(label, block))]
    if label in CSR_LABELS:
        return [_attempt("csr", "pem", lambda: Found("csr", "pem", csr=load_csr(block)))]
    if "PRIVATE KEY" in label:
        return [_key_found(block, "pem", password)]
    if label == "PKCS7":
        try:
            certs = load_certificates(block)
        except TooManyObjects:
            raise
        except TesseraError as exc:
            return [Found("pkcs7", "pem", problem=exc.message)]
        return [Found("certificate", "pem", "pkcs7", certificate=c) for c in certs]
    if label == "EC PARAMETERS":
        return []  # what `openssl ecparam -genkey` puts before an EC key
    kind, problem = _OTHER_LABELS.get(label, ("unknown", f"unsupported PEM block {label!r}"))
    return [Found(kind, "pem", problem=problem, label=label)]


def _attempt(kind: str, encoding: str, read: Callable[[], Found]) -> Found:
    try:
        return read()
    except TesseraError as exc:
        return Found(kind, encoding, problem=exc.message)


def _pem_found(label: str, block: bytes) -> Found:
    with reading(CERT_UNREADABLE):
        cert = pem_certificate(label, block)
    return Found("certificate", "pem", certificate=checked_certificate(cert))


def _der_found(data: bytes) -> Found:
    with reading(CERT_UNREADABLE):
        cert = x509.load_der_x509_certificate(data)
    return Found("certificate", "der", certificate=checked_certificate(cert))


def _key_found(data: bytes, encoding: str, password: bytes | None) -> Found:
    encrypted = key_is_encrypted(data)
    if encrypted and not password:
        problem = "the private key is encrypted: a password is required"
        return Found("private_key", encoding, encrypted=True, problem=problem)
    try:
        key = load_private_key(data, password)
    except TesseraError as exc:
        return Found("private_key", encoding, encrypted=encrypted, problem=exc.message)
    return Found("private_key", encoding, key=key, encrypted=encrypted)


def _read_binary(data: bytes, password: bytes | None) -> Content:
    if looks_like_pkcs12(data):
        return Content("pkcs12", _pkcs12_found(data, password))
    try:
        return Content("der", [_der_found(data)])
    except UnparsableInput:
        pass
    try:
        certs = pkcs7.load_der_pkcs7_certificates(data)
    except UNREADABLE:
        certs = None
    if certs:
        return Content("pkcs7", [_checked_found(c) for c in certs])
    return Content("der", [_der_csr_or_key(data, password)])


def _checked_found(cert: x509.Certificate) -> Found:
    try:
        return Found("certificate", "der", "pkcs7", certificate=checked_certificate(cert))
    except TesseraError as exc:
        return Found("certificate", "der", "pkcs7", problem=exc.message)


def _pkcs12_found(data: bytes, password: bytes | None) -> list[Found]:
    try:
        cert, key, extra = load_pkcs12(data, password)
    except Unavailable:
        raise  # the server is busy, not the file unreadable: the request's 503
    except TesseraError as exc:
        return [Found("pkcs12", "der", encrypted=True, problem=exc.message)]
    found = [Found("certificate", "der", "pkcs12", certificate=c) for c in [cert, *extra] if c]
    if key is not None:
        found.append(Found("private_key", "der", "pkcs12", key=key))
    return found


def _der_csr_or_key(data: bytes, password: bytes | None) -> Found:
    try:
        return Found("csr", "der", csr=load_csr(data))
    except UnparsableInput:
        pass
    except TesseraError as exc:
        return Found("csr", "der", problem=exc.message)
    key = _key_found(data, "der", password)
    if key.key is not None or key.encrypted:
        return key
    raise UnparsableInput(
        "not a certificate, CSR, private key, PKCS#12 or PKCS#7 in PEM, DER or base64 form"
    )
