"""Serialising certificates (and, when asked and allowed, their keys) for download."""

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from tessera.core.errors import InvalidInput, NotFound
from tessera.core.formats import (
    cert_der,
    cert_pem,
    key_pem,
    load_certificate,
    pkcs7_bundle,
    pkcs12_bundle,
)
from tessera.core.keys import PrivateKey

PEM = "application/x-pem-file"
PKCS12_FORMATS = ("pkcs12", "p12", "pfx")
PKCS7_FORMATS = ("pkcs7", "p7b", "pkcs7-der", "p7c")
# The file extensions among them, and the format each names.
ALIASES = {"p12": "pkcs12", "pfx": "pkcs12", "p7b": "pkcs7", "p7c": "pkcs7-der"}
FORMATS = ("pem", "der", "chain", *PKCS12_FORMATS, *PKCS7_FORMATS)
# What a bulk export may hold: every certificate-only format.
BULK_FORMATS = ("pem", "der", "chain", *PKCS7_FORMATS)
# What one file of several certificates may be (an "export all"): DER holds one certificate.
BUNDLE_FORMATS = ("pem", *PKCS7_FORMATS)


@dataclass(frozen=True)
class Exported:
    content: bytes
    media_type: str
    filename: str


def safe_name(name: str, fallback: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or fallback


def export(
    fmt: str,
    name: str,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    key: PrivateKey | None = None,
    password: str | None = None,
) -> Exported:
    """`chain` is the issuer chain, nearest first; `key` is only given when it is exported.
    PKCS#7 (`pkcs7`/`p7b` in PEM, `pkcs7-der`/`p7c` in DER) holds the certificate and its
    chain, never a key. In PEM the key is encrypted PKCS#8 under `password` when one is given."""
    if fmt == "pem":
        body = cert_pem(cert) + (key_pem(key, password) if key is not None else "")
        return Exported(body.encode(), PEM, f"{name}.pem")
    if fmt == "der":
        return Exported(cert_der(cert), "application/pkix-cert", f"{name}.der")
    if fmt == "chain":
        body = "".join(cert_pem(c) for c in [cert, *chain])
        return Exported(body.encode(), PEM, f"{name}-chain.pem")
    if fmt in PKCS12_FORMATS:
        if not password:
            raise InvalidInput("a password is required for PKCS#12 export")
        content = pkcs12_bundle(name, cert, key, chain, password)
        return Exported(content, "application/x-pkcs12", f"{name}.p12")
    if fmt in PKCS7_FORMATS:
        der = fmt in ("pkcs7-der", "p7c")
        content = pkcs7_bundle([cert, *chain], der=der)
        return Exported(
            content, "application/x-pkcs7-certificates", f"{name}.p7{'c' if der else 'b'}"
        )
    raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")


def bundle(fmt: str, pems: Sequence[str], stem: str, what: str) -> Exported:
    """Several certificates (`what`: "certificates", "CAs") in one file `stem`.<ext>: a PEM
    bundle, or PKCS#7 in PEM or DER. Any other format is refused rather than ignored."""
    if fmt == "der":
        raise InvalidInput(
            f"DER holds a single certificate; export all {what} as pem, or as pkcs7-der for "
            "one binary file"
        )
    if fmt not in BUNDLE_FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(BUNDLE_FORMATS)}")
    if fmt == "pem":
        return Exported("".join(pems).encode(), PEM, f"{stem}.pem")
    if not pems:  # a PKCS#7 SignedData cannot be empty
        raise NotFound(f"there are no {what} to export")
    der = fmt in ("pkcs7-der", "p7c")
    certs = [load_certificate(p.encode()) for p in pems]
    name = f"{stem}.p7c" if der else f"{stem}.p7b"
    return Exported(pkcs7_bundle(certs, der), "application/x-pkcs7-certificates", name)


def wants_key(fmt: str, include_key: bool) -> bool:
    return fmt in PKCS12_FORMATS or (fmt == "pem" and include_key)


def check_key_options(fmt: str, include_key: bool, password: str | None) -> None:
    """A password protects a key exported in PEM (`include_key`) or a PKCS#12 file. Without
    either it would protect nothing, and the caller might take the download for protected.
    (`include_key` alone with a format that never holds a key is tolerated, as it always
    was: it asks for nothing that is not given.)"""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
    if password and not wants_key(fmt, include_key):
        raise InvalidInput(
            "password applies only to an exported private key (format=pem with "
            "include_key=true) or to PKCS#12; this export has neither"
        )


def zipped(files: Iterable[tuple[str, bytes]], filename: str) -> Exported:
    """Several exports in one ZIP archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            archive.writestr(name, content)
    return Exported(buffer.getvalue(), "application/zip", filename)
