"""What a certificate signing request says: its subject, names, key and requested extensions.

`summarize` reads the facts the inventory stores for a request it accepts; `describe` decodes a
stored request for display, including whether its self-signature verifies. Neither touches
HTTP or SQL. Text that a database cannot hold (NUL characters) is refused here, since a name
with one can be neither stored nor certified.
"""

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tessera.core import inspect, lint
from tessera.core.errors import InvalidInput, PolicyViolation, UnparsableInput
from tessera.core.keys import KeySpec, describe_public_key, enforce_key_floor
from tessera.core.names import (
    extended_key_usage_names,
    format_san,
    key_usage_names,
    name_text,
)

# Short names of the subject attributes the native API shows one by one.
SUBJECT_FIELDS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.EMAIL_ADDRESS: "emailAddress",
}
_DECODING_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


@dataclass(frozen=True)
class CsrSummary:
    """The facts the inventory keeps in columns, beside the PEM itself."""

    common_name: str
    subject: str
    sans: list[str]
    key: KeySpec
    pem: str


def summarize(csr: x509.CertificateSigningRequest) -> CsrSummary:
    """Facts of a request about to be stored; refuses one whose key could never be certified
    (the key floor, unsupported types) or whose names cannot be decoded or stored."""
    key = enforce_key_floor(csr.public_key())
    try:
        subject = name_text(csr.subject)
        common_name = inspect.common_name(csr.subject)
        sans = [format_san(name) for name in _requested_sans(csr)]
    except _DECODING_ERRORS as exc:
        raise UnparsableInput("the CSR's subject or extensions cannot be decoded") from exc
    if any("\x00" in text for text in (subject, common_name, *sans)):
        raise InvalidInput("the CSR's subject or names contain NUL characters")
    lint.check_requested_names(csr.subject, _requested_sans(csr))
    pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return CsrSummary(common_name, subject, sans, key, pem)


def describe(pem: str) -> dict[str, object]:
    """A stored request decoded for display (read without refusing a bad signature, so the
    answer can say whether it verifies)."""
    csr = x509.load_pem_x509_csr(pem.encode())
    key: dict[str, object] = {"key_algorithm": "unknown", "key_size": 0}
    spec = _key_spec(csr)
    if spec is not None:
        key = {"key_algorithm": spec.algorithm, "key_size": spec.size, "key_type": spec.label}
    return {
        "subject": name_text(csr.subject),
        "subject_fields": subject_fields(csr.subject),
        "common_name": inspect.common_name(csr.subject),
        "san": [format_san(name) for name in _requested_sans(csr)],
        **key,
        "signature_algorithm": _signature_algorithm(csr),
        "signature_valid": _signature_valid(csr),
        "extensions": [requested_extension(ext) for ext in csr.extensions],
    }


def subject_fields(name: x509.Name) -> dict[str, str]:
    """The familiar attributes by their short names; the first value of each."""
    fields: dict[str, str] = {}
    for attribute in name:
        label = SUBJECT_FIELDS.get(attribute.oid)
        if label is not None and label not in fields:
            fields[label] = str(attribute.value)
    return fields


def requested_extension(ext: x509.Extension[x509.ExtensionType]) -> dict[str, object]:
    """One extension of the extensionRequest attribute: name, OID, criticality and value."""
    oid = ext.oid
    return {
        "name": inspect.oid_name(oid),
        "oid": oid.dotted_string,
        "critical": ext.critical,
        "value": _extension_value(ext.value),
    }


def _extension_value(value: x509.ExtensionType) -> object:
    if isinstance(value, x509.SubjectAlternativeName):
        return [format_san(name) for name in value]
    if isinstance(value, x509.KeyUsage):
        return key_usage_names(value)
    if isinstance(value, x509.ExtendedKeyUsage):
        return extended_key_usage_names(value)
    if isinstance(value, x509.BasicConstraints):
        return {"ca": value.ca, "path_length": value.path_length}
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest.hex()
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value.hex()
    return value.public_bytes().hex()


def _requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def _key_spec(csr: x509.CertificateSigningRequest) -> KeySpec | None:
    try:
        return describe_public_key(csr.public_key())
    except (PolicyViolation, ValueError):
        return None


def _signature_algorithm(csr: x509.CertificateSigningRequest) -> str:
    return inspect.oid_name(csr.signature_algorithm_oid)


def _signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    try:
        return bool(csr.is_signature_valid)
    except (ValueError, TypeError):
        return False
