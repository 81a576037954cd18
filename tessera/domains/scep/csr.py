"""Reading the PKCS#10 request inside a SCEP envelope.

Some SCEP clients (strongSwan's `pki --scep`) encode the CSR's attribute SET in the order
they were added (challengePassword, then extensionRequest) rather than DER's sorted order,
and `cryptography` refuses such a request. We accept it the way a BER reader would: the
signature is checked over the bytes as received, and only then is the request re-encoded in
DER order so that its names and key can be read. Everything else goes through the same
checks as any CSR (`core.formats.load_csr`), and the attributes, which cryptography decodes
only when first asked, are read here too: whatever the request, what is wrong with it is an
`UnparsableInput` or a `PolicyViolation` (a CertRep FAILURE), never an exception of
cryptography's own reaching the HTTP layer.
"""

from collections.abc import Callable

from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tessera.core.errors import PolicyViolation, UnparsableInput
from tessera.core.formats import load_csr
from tessera.core.inspect import general_names, public_key_sha256

# asn1crypto raises the built-in errors on malformed input; cryptography raises
# UnsupportedAlgorithm (no ValueError) for a public key of an algorithm it does not know.
ASN1_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    UnsupportedAlgorithm,
)
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def read_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A CSR whose self-signature verifies; raises UnparsableInput or PolicyViolation."""
    try:
        csr = load_csr(der)
    except UnparsableInput:
        csr = _read_unsorted(der)
    _read_attributes(csr)
    return csr


def _read_unsorted(der: bytes) -> x509.CertificateSigningRequest:
    """A CSR whose attributes are not in DER order: verified as received, then re-encoded."""
    try:
        parsed = asn1_csr.CertificationRequest.load(der, strict=True)
        info = parsed["certification_request_info"]
        signed_bytes = info.dump()
        signature = parsed["signature"].native
        algorithm = parsed["signature_algorithm"]
        key = serialization.load_der_public_key(info["subject_pk_info"].dump())
        _verify(key, signature, signed_bytes, algorithm.signature_algo, algorithm.hash_algo)
        info["attributes"] = sorted(info["attributes"], key=lambda a: a.dump())
        reordered = parsed.dump(force=True)
    except ASN1_ERRORS as exc:
        raise UnparsableInput(f"not a certificate signing request: {exc}") from exc
    return load_csr(reordered, verify=False)


def _read_attributes(csr: x509.CertificateSigningRequest) -> None:
    """Decode the attributes now (the challenge is read from them later): cryptography
    refuses a multi-valued one with a ValueError at first access."""
    try:
        for attribute in csr.attributes:
            attribute.value  # noqa: B018
    except ASN1_ERRORS as exc:
        raise UnparsableInput(f"the CSR's attributes cannot be decoded: {exc}") from exc


def _verify(key: object, signature: bytes, data: bytes, algo: str, hash_name: str) -> None:
    hash_cls = HASHES.get(hash_name)
    if hash_cls is None:
        raise PolicyViolation(f"unsupported CSR signature hash {hash_name}")
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo == "rsassa_pkcs1v15":
            key.verify(signature, data, padding.PKCS1v15(), hash_cls())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo == "ecdsa":
            key.verify(signature, data, ec.ECDSA(hash_cls()))
        else:
            raise PolicyViolation(f"unsupported CSR signature algorithm {algo}")
    except InvalidSignature as exc:
        raise PolicyViolation("CSR signature does not verify") from exc


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The challengePassword as text, or None when the CSR carries none. RFC 2985 makes it a
    DirectoryString, whose type says how its octets read (a BMPString is UTF-16, a
    UniversalString UTF-32): compared as raw octets, the same password sent as a BMPString
    would never match. `_read_attributes` has refused a multi-valued one already."""
    der = csr.public_bytes(serialization.Encoding.DER)
    try:
        info = asn1_csr.CertificationRequest.load(der)["certification_request_info"]
        for attribute in info["attributes"]:
            if attribute["type"].native == "challenge_password":
                value: str = attribute["values"][0].native
                return value
    except ASN1_ERRORS as exc:
        # Not the error's own text: a codec error names the offending byte of the password
        # and where it is, and this message reaches the audit row of the refusal.
        text = "the CSR's challengePassword cannot be read as a DirectoryString"
        raise UnparsableInput(text) from exc
    return None


def key_digest(csr: x509.CertificateSigningRequest) -> str:
    return public_key_sha256(csr)


def sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    return general_names(csr)


def asks_for(csr_der: bytes, subject_der: bytes) -> bool:
    """Whether the CSR asks for the subject `subject_der` names (a CertPoll's), compared as
    RFC 5280 section 7.1 compares names: a client may encode its name differently when it
    polls. A name that cannot be read matches nothing."""
    try:
        info = asn1_csr.CertificationRequest.load(csr_der)["certification_request_info"]
        return bool(info["subject"] == asn1_x509.Name.load(subject_der))
    except ASN1_ERRORS:
        return False
