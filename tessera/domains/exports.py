"""Serialising certificates (and, when asked and allowed, their keys) for download."""

from dataclasses import dataclass

from cryptography import x509

from tessera.core.errors import InvalidInput
from tessera.core.formats import cert_der, cert_pem, key_pem, pkcs12_bundle
from tessera.core.keys import PrivateKey

PEM = "application/x-pem-file"


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
    """`chain` is the issuer chain, nearest first; `key` is only given when it is exported."""
    if fmt == "pem":
        body = cert_pem(cert) + (key_pem(key) if key is not None else "")
        return Exported(body.encode(), PEM, f"{name}.pem")
    if fmt == "der":
        return Exported(cert_der(cert), "application/pkix-cert", f"{name}.der")
    if fmt == "chain":
        body = "".join(cert_pem(c) for c in [cert, *chain])
        return Exported(body.encode(), PEM, f"{name}-chain.pem")
    if fmt in ("pkcs12", "p12", "pfx"):
        if not password:
            raise InvalidInput("a password is required for PKCS#12 export")
        content = pkcs12_bundle(name, cert, key, chain, password)
        return Exported(content, "application/x-pkcs12", f"{name}.p12")
    raise InvalidInput("format must be pem, der, chain or pkcs12")


def wants_key(fmt: str, include_key: bool) -> bool:
    return fmt in ("pkcs12", "p12", "pfx") or (fmt == "pem" and include_key)
