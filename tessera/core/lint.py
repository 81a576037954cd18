"""Checks run on every to-be-signed certificate, before the issuer's key is touched.

These are the RFC 5280 / RFC 5480 / RFC 8410 rules a request can break; pkilint runs in the
test suite over every kind of certificate the server issues, as a second opinion.
"""

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from tessera.core.errors import InvalidInput, PolicyViolation
from tessera.core.issuer_chain import IssuerChain
from tessera.core.names import UPPER_BOUNDS, check_general_name, is_country_code
from tessera.core.profile import CertificateRequest

_EC_FORBIDDEN = {"keyEncipherment", "dataEncipherment"}
_ED25519_ALLOWED = {
    "digitalSignature",
    "contentCommitment",
    "nonRepudiation",
    "keyCertSign",
    "cRLSign",
}


def check_before_signing(
    request: CertificateRequest,
    chain: IssuerChain,
    not_before: datetime,
    not_after: datetime,
) -> None:
    """`chain`: the issuer's certificate and its issuers held here (empty for a root)."""
    _check_issuer(chain.certificates[0] if chain.certificates else None)
    chain.check(request)  # name constraints and path length of every CA up the chain
    _check_subject(request.subject)
    _check_sans(request.sans)
    _check_key_usage_for_key(request)
    _check_ca_flags(request)
    if not request.is_ca and len(request.subject) == 0 and not request.sans:
        raise PolicyViolation("a certificate needs a subject or at least one SAN")
    if not_after <= not_before:
        raise PolicyViolation("the certificate would expire before it becomes valid")


def _check_issuer(issuer_cert: x509.Certificate | None) -> None:
    if issuer_cert is None:
        return
    try:
        constraints = issuer_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise PolicyViolation("the issuer is not a CA certificate") from exc
    if not constraints.ca:
        raise PolicyViolation("the issuer is not a CA certificate")
    try:
        usage = issuer_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise PolicyViolation("the issuer's key usage does not allow certificate signing")


def _check_subject(subject: x509.Name) -> None:
    """RFC 5280's upper bounds (appendix A.1) on the attributes a CSR may bring as it likes
    (the API's subject fields are checked before): in characters, as the ASN.1 counts them."""
    for attribute in subject:
        value = attribute.value if isinstance(attribute.value, str) else ""
        if attribute.oid == NameOID.COUNTRY_NAME:
            if not is_country_code(value):
                raise PolicyViolation("the subject's country must be a two-letter ISO 3166 code")
            continue
        limit = UPPER_BOUNDS.get(attribute.oid)
        if limit is not None and len(value) > limit:
            name = attribute.rfc4514_attribute_name
            raise PolicyViolation(f"the subject's {name} is longer than {limit} characters")


def check_requested_names(subject: x509.Name, sans: Sequence[x509.GeneralName]) -> None:
    """The names a CSR asks for, checked as signing will check them, when it is stored: the
    inventory holds no request that no CA and no template could ever sign."""
    _check_subject(subject)
    _check_sans(tuple(sans))


def _check_sans(sans: tuple[x509.GeneralName, ...]) -> None:
    """Every SAN, whichever path brought it (a CSR, ACME, SCEP, a renewal), passes the checks
    the API applies to the names it is given (`parse_san`)."""
    for name in sans:
        try:
            check_general_name(name)
        except InvalidInput as exc:
            raise PolicyViolation(exc.message) from exc


def _check_key_usage_for_key(request: CertificateRequest) -> None:
    names = set(request.key_usage or ())
    if isinstance(request.public_key, ec.EllipticCurvePublicKey) and names & _EC_FORBIDDEN:
        raise PolicyViolation(
            f"EC keys cannot be used for {sorted(names & _EC_FORBIDDEN)} (RFC 5480)"
        )
    if isinstance(request.public_key, ed25519.Ed25519PublicKey) and names - _ED25519_ALLOWED:
        raise PolicyViolation(
            f"Ed25519 keys cannot be used for {sorted(names - _ED25519_ALLOWED)} (RFC 8410)"
        )


def _check_ca_flags(request: CertificateRequest) -> None:
    names = set(request.key_usage or ())
    if request.is_ca and request.key_usage and "keyCertSign" not in names:
        raise PolicyViolation("a CA certificate needs the keyCertSign key usage")
    if not request.is_ca and "keyCertSign" in names:
        raise PolicyViolation("keyCertSign is only for CA certificates")
    if request.path_length is not None and request.path_length < 0:
        raise PolicyViolation("path length cannot be negative")
