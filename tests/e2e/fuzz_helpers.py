"""What the schema-driven fuzzing of the HTTP API (test_api_fuzz.py) adds to the OpenAPI
document: PKI objects, whole and damaged, where the document only says "string" (request
models, and the bodies of the routes that read their body themselves: uploads, imports),
passwords that open the PKCS#12 and encrypted keys made here, and JWS parts that decode to
JSON in the ACME bodies."""

import base64
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

PKI_FORMAT = "x-tessera-pki"
B64JSON_FORMAT = "x-tessera-b64json"
PASSWORDS = ["", "pw", "wrong"]

# String properties of the request models that carry a PEM (or base64) object.
PKI_PROPERTIES = {
    "UploadCSR": ["csr"],
    "AddTrustedCertificate": ["certificate"],
    "AttachCSRKey": ["key"],
    "ConvertFormat": ["pem", "content", "chain", "private_key"],
    "DecodePem": ["pem", "content"],
    "IssueCertificate": ["csr"],
    "MatchKeys": ["certificate", "private_key", "csr"],
}

# Routes that read their own body (uploads.read_upload and the like), whose bodies (multipart
# and JSON) the document describes, and their fields that carry a PKI object. (The template
# import, which reads JSON templates, is fuzzed with the document's bodies as they are.)
UPLOADS = [
    "/api/v2/certificates/import",
    "/api/v2/cas/import",
    "/api/v2/csrs/upload",
    "/api/v2/csrs/import",
    "/api/v2/truststore/import",
    "/api/v2/import/analyze",
    "/api/v2/import/execute",
]
UPLOAD_PKI_FIELDS = {"file", "certificate", "pem_content", "content", "pem", "csr", "private_key"}
JWS_PARTS = ["protected", "payload", "signature"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@cache
def materials() -> dict[str, bytes]:
    """DER (or PKCS#12) blobs of every kind the server reads, made once."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Fuzz Foreign CA"))
        .issuer_name(_name("Fuzz Foreign CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("leaf.fuzz.test"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("leaf.fuzz.test")]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("csr.fuzz.test"))
        .sign(ed_key, None)
    )
    der = serialization.Encoding.DER
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    return {
        "CERTIFICATE": ca.public_bytes(der),
        "LEAF": leaf.public_bytes(der),
        "CERTIFICATE REQUEST": csr.public_bytes(der),
        "PRIVATE KEY": leaf_key.private_bytes(der, pkcs8, none),
        "EC PRIVATE KEY": ca_key.private_bytes(
            der, serialization.PrivateFormat.TraditionalOpenSSL, none
        ),
        "ENCRYPTED PRIVATE KEY": ed_key.private_bytes(
            der, pkcs8, serialization.BestAvailableEncryption(b"pw")
        ),
        "PKCS7": pkcs7.serialize_certificates([leaf, ca], der),
        "PKCS12": pkcs12.serialize_key_and_certificates(
            b"fuzz", leaf_key, leaf, [ca], serialization.BestAvailableEncryption(b"pw")
        ),
    }


LABELS = [
    "CERTIFICATE",
    "CERTIFICATE REQUEST",
    "NEW CERTIFICATE REQUEST",
    "TRUSTED CERTIFICATE",
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "PKCS7",
    "X509 CRL",
]


@st.composite
def damaged(draw: st.DrawFn, blob: bytes) -> bytes:
    """The blob whole, cut short, with bytes changed, or with bytes put in."""
    how = draw(st.sampled_from(["whole", "cut", "flip", "insert"]))
    if how == "whole" or not blob:
        return blob
    at = draw(st.integers(0, len(blob) - 1))
    if how == "cut":
        return blob[:at]
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ draw(st.integers(1, 255))]) + blob[at + 1 :]
    return blob[:at] + draw(st.binary(min_size=1, max_size=8)) + blob[at:]


def pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


@st.composite
def pki_text(draw: st.DrawFn) -> str:
    """A PEM object (one or several, a label that may not fit), base64 of DER, or junk."""
    blobs = materials()
    kind = draw(st.sampled_from(sorted(blobs)))
    blob = draw(damaged(blobs[kind]))
    shape = draw(st.sampled_from(["pem", "pem", "bundle", "base64", "text"]))
    if shape == "base64":
        return base64.b64encode(blob).decode()
    if shape == "text":
        return blob.decode("latin-1")
    label = draw(st.sampled_from([kind if kind in LABELS else "CERTIFICATE", *LABELS]))
    text = pem(label, blob)
    if shape == "bundle":
        other = draw(st.sampled_from(sorted(blobs)))
        text += pem(other if other in LABELS else "CERTIFICATE", blobs[other])
    return text


@st.composite
def b64json(draw: st.DrawFn) -> str:
    """base64url of a small JSON object (or of junk), as in a JWS."""
    value = draw(
        st.one_of(
            st.dictionaries(
                st.sampled_from(["alg", "nonce", "url", "kid", "jwk", "identifiers", "csr"]),
                st.one_of(st.text(max_size=20), st.integers(), st.none()),
                max_size=4,
            ),
            st.binary(max_size=16),
        )
    )
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _pki(prop: dict[str, Any]) -> dict[str, Any]:
    """A string schema (maybe in anyOf with null) given the PKI format, bounds kept."""
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "string":
            option["format"] = PKI_FORMAT
    return prop


def _upload_fields(schema: dict[str, Any]) -> None:
    """PKI objects and known passwords in an upload body's fields (its anyOf branches too)."""
    properties = schema.get("properties", {})
    for name, prop in properties.items():
        if name in UPLOAD_PKI_FIELDS:
            prop.pop("contentMediaType", None)  # the file part: text made here, not bytes
            _pki(prop)
    if "password" in properties:
        properties["password"] = {"type": "string", "enum": PASSWORDS}
    for branch in schema.get("anyOf", []):
        _upload_fields(branch)


def enrich(raw: dict[str, Any]) -> None:
    """Give the OpenAPI document's bodies PKI-shaped strings, passwords and JWS parts."""
    schemas = raw["components"]["schemas"]
    for model, names in PKI_PROPERTIES.items():
        for name in names:
            _pki(schemas[model]["properties"][name])
    for path in UPLOADS:
        content = raw["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"multipart/form-data", "application/json"}, path
        for media in content.values():
            _upload_fields(media["schema"])
    signed = [
        item["post"]
        for path, item in raw["paths"].items()
        if path.startswith("/acme/") and "post" in item
    ]
    assert signed
    for post in signed:
        jws = post["requestBody"]["content"]["application/jose+json"]["schema"]["properties"]
        for part in JWS_PARTS:
            jws[part] = {"type": "string", "format": B64JSON_FORMAT}
