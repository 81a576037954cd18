"""Certificate tools: check a TLS server, decode a certificate or a CSR, tell whether a
certificate, a key and a CSR belong together, and convert between PEM, DER, PKCS#12 and PKCS#7.
Nothing here reads or writes the inventory."""

import base64
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509

from tessera.core import inspect, tls_probe
from tessera.core.errors import InvalidInput, TesseraError
from tessera.core.formats import (
    cert_der,
    cert_pem,
    csr_der,
    csr_pem,
    decode_text,
    key_der,
    key_pem,
    load_certificates,
    load_csr,
    load_private_key,
    pkcs7_bundle,
    pkcs12_bundle,
    public_key_der,
    same_public_key,
    secret,
)
from tessera.core.keys import PrivateKey
from tessera.core.uploads import Content, read_objects
from tessera.domains import exports
from tessera.domains.tools.describe import (
    certificate_facts,
    certificate_summary,
    csr_facts,
    key_facts,
)

OUTPUT_FORMATS = ("pem", "der", "pkcs12", "pkcs7", "pkcs7-der")
INPUT_TYPES = ("auto", "pem", "der", "pkcs12", "pkcs7")
EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class ProbeSettings:
    timeout: float
    allow_private: bool
    resolver: tls_probe.Resolver = tls_probe.system_resolver


@dataclass(frozen=True)
class Conversion:
    content: str  # PEM text, or base64 of DER/PKCS#12/PKCS#7
    output_format: str
    input_type: str = "auto"
    password: str | None = None  # opens the input (PKCS#12, encrypted key)
    pkcs12_password: str | None = None  # protects a PKCS#12 output; `password` if not given
    chain: str | None = None
    private_key: str | None = None


@dataclass
class _Parts:
    certificates: list[x509.Certificate]
    keys: list[PrivateKey]
    csrs: list[x509.CertificateSigningRequest]


class ToolsService:
    def __init__(self, now: datetime, probing: ProbeSettings) -> None:
        self._now = now
        self._probing = probing

    def check_ssl(self, hostname: str, port: int) -> dict[str, Any]:
        result = tls_probe.probe(
            hostname,
            port,
            self._probing.timeout,
            self._probing.allow_private,
            self._probing.resolver,
        )
        return _tls_report(result, self._now)

    def decode_certificate(self, text: str) -> dict[str, Any]:
        certs = load_certificates(_required(text, "a certificate"))
        facts = certificate_facts(certs[0], self._now)
        facts["chain_length"] = len(certs)
        if len(certs) > 1:
            facts["chain"] = [certificate_summary(c, self._now) for c in certs]
        return facts

    def decode_csr(self, text: str) -> dict[str, Any]:
        return csr_facts(load_csr(_required(text, "a CSR"), verify=False))

    def match_keys(
        self,
        certificate: str | None,
        private_key: str | None,
        csr: str | None,
        password: str | None,
    ) -> dict[str, Any]:
        given = [
            (n, t)
            for n, t in (("certificate", certificate), ("private_key", private_key), ("csr", csr))
            if t
        ]
        if len(given) < 2:
            raise InvalidInput("give at least two of certificate, private_key and csr")
        items, spki = [], {}
        for name, text in given:
            item, key_der = _match_item(name, decode_text(text), password)
            items.append(item)
            if key_der is not None:
                spki[name] = key_der
        pairs = _pairs(spki)
        readable = len(spki) == len(given)
        return {
            "items": items,
            "pairs": pairs,
            "matches": [p for p in pairs if p["match"]],
            "mismatches": [p for p in pairs if not p["match"]],
            "all_match": readable and bool(pairs) and all(p["match"] for p in pairs),
        }

    def convert(self, request: Conversion) -> dict[str, Any]:
        request = _canonical_formats(request)
        if request.output_format not in OUTPUT_FORMATS:
            raise InvalidInput(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}")
        if request.input_type not in INPUT_TYPES:
            raise InvalidInput(f"input_type must be one of {', '.join(INPUT_TYPES)}")
        content = read_objects(_required(request.content, "the input"), secret(request.password))
        _check_input_type(request.input_type, content)
        parts = _parts(content)
        if request.private_key:
            parts.keys.append(
                load_private_key(decode_text(request.private_key), secret(request.password))
            )
        if request.chain:
            parts.certificates += load_certificates(decode_text(request.chain))
        # Once each (a bundle listing one twice, a chain that repeats the leaf): a PKCS#7 or
        # PKCS#12 file would hold the copy, a PKCS#12 file's as a chain certificate.
        parts.certificates = list(dict.fromkeys(parts.certificates))
        data, filename, media_type = _write(request, parts)
        textual = request.output_format in ("pem", "pkcs7")
        return {
            "format": request.output_format,
            "detected_format": content.format,
            "encoding": "text" if textual else "base64",
            "data": data.decode("ascii") if textual else base64.b64encode(data).decode("ascii"),
            "content_base64": base64.b64encode(data).decode("ascii"),
            "filename": filename,
            "media_type": media_type,
            "contents": {
                "certificates": len(parts.certificates),
                "private_keys": len(parts.keys),
                "csrs": len(parts.csrs),
            },
        }


def _tls_report(result: tls_probe.ProbeResult, now: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hostname": result.hostname,
        "port": result.port,
        "address": result.address,
        "connected": result.connected,
        "error": result.error,
    }
    if not result.connected:
        return body
    chain = [certificate_summary(c, now) for c in result.chain]
    leaf = result.chain[0] if result.chain else None
    name, tls_version, bits = result.cipher or (None, None, None)
    hostname_match = leaf is not None and tls_probe.hostname_matches(leaf, result.hostname)
    return {
        **body,
        "protocol": result.protocol,
        "cipher": {"name": name, "protocol": tls_version, "bits": bits},
        "chain": chain,
        "certificate": certificate_facts(leaf, now) if leaf is not None else None,
        "validation": {
            "valid": result.trusted,
            "trusted": result.trusted,
            "hostname_match": hostname_match,
            "error": result.verify_error,
        },
        "issues": _issues(result, chain, hostname_match),
    }


def _required(text: str, what: str) -> bytes:
    if not text or not text.strip():
        raise InvalidInput(f"{what} is required")
    return decode_text(text)


def _issues(result: tls_probe.ProbeResult, chain: list[dict[str, Any]], matched: bool) -> list[str]:
    issues = []
    if not result.trusted:
        issues.append(f"not trusted: {result.verify_error}")
    if chain and not matched:
        issues.append(f"the certificate is not valid for {result.hostname}")
    leaf = chain[0] if chain else None
    if leaf and leaf["status"] != "valid":
        issues.append(f"the certificate is {leaf['status'].replace('_', ' ')}")
    elif leaf and leaf["days_remaining"] < EXPIRY_WARNING_DAYS:
        issues.append(f"the certificate expires in {leaf['days_remaining']} days")
    if leaf and leaf["self_signed"]:
        issues.append("the certificate is self-signed")
    return issues


def _pairs(spki: dict[str, bytes]) -> list[dict[str, Any]]:
    """Each readable input against each later one: same public key or not."""
    names = list(spki)
    return [
        {"item1": a, "item2": b, "match": spki[a] == spki[b]}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]


def _match_item(
    name: str, data: bytes, password: str | None
) -> tuple[dict[str, Any], bytes | None]:
    """One input of match-keys, described; a part that cannot be read is reported, not
    refused, so the answer can still say what it could compare."""
    try:
        if name == "certificate":
            cert = load_certificates(data)[0]
            facts = {"common_name": inspect.common_name(cert.subject)}
            public = cert.public_key()
        elif name == "csr":
            csr = load_csr(data, verify=False)
            facts = {"common_name": inspect.common_name(csr.subject)}
            public = csr.public_key()
        else:
            public = load_private_key(data, secret(password)).public_key()
            facts = {}
    except TesseraError as exc:
        return {"type": name, "valid": False, "error": exc.message}, None
    key = key_facts(public)
    return {
        "type": name,
        "valid": True,
        **facts,
        "key_algorithm": key["algorithm"],
        "key_size": key["size"],
    }, public_key_der(public)


def _canonical_formats(request: Conversion) -> Conversion:
    """`p12`, `pfx`, `p7b` and `p7c` read as the formats they name (a PKCS#7 input is one,
    whichever its encoding)."""
    output_format = exports.ALIASES.get(request.output_format, request.output_format)
    input_type = exports.ALIASES.get(request.input_type, request.input_type)
    input_type = "pkcs7" if input_type == "pkcs7-der" else input_type
    return replace(request, output_format=output_format, input_type=input_type)


def _check_input_type(input_type: str, content: Content) -> None:
    expected = {
        "pkcs12": ("pkcs12",),
        "pkcs7": ("pkcs7",),
        "pem": ("pem", "pkcs7"),
        "der": ("der", "pkcs7", "pkcs12"),
    }
    allowed = expected.get(input_type)
    if allowed is not None and content.format not in allowed:
        raise InvalidInput(f"input_type is {input_type} but the content is {content.format}")


def _parts(content: Content) -> _Parts:
    for index, found in enumerate(content.objects, start=1):
        if found.problem:
            raise InvalidInput(f"object {index} ({found.kind}): {found.problem}")
    return _Parts(
        [f.certificate for f in content.objects if f.certificate is not None],
        [f.key for f in content.objects if f.key is not None],
        [f.csr for f in content.objects if f.csr is not None],
    )


def _write(request: Conversion, parts: _Parts) -> tuple[bytes, str, str]:
    fmt, certs = request.output_format, parts.certificates
    if fmt == "pem":
        text = "".join(cert_pem(c) for c in certs) + "".join(key_pem(k) for k in parts.keys)
        text += "".join(csr_pem(r) for r in parts.csrs)
        return text.encode("ascii"), "converted.pem", "application/x-pem-file"
    if fmt == "der":
        return _single_der(parts)
    if fmt == "pkcs12":
        if not certs:
            raise InvalidInput("a certificate is required for PKCS#12")
        password = request.pkcs12_password or request.password
        if not password:
            raise InvalidInput("a password (pkcs12_password) is required for PKCS#12 output")
        cert, key, chain = _pkcs12_parts(certs, parts.keys)
        data = pkcs12_bundle("certificate", cert, key, chain, password)
        return data, "certificate.p12", "application/x-pkcs12"
    if not certs:
        raise InvalidInput("at least one certificate is required for PKCS#7")
    der = fmt == "pkcs7-der"
    name = "certificates.p7c" if der else "certificates.p7b"
    return pkcs7_bundle(certs, der=der), name, "application/x-pkcs7-certificates"


def _pkcs12_parts(
    certs: list[x509.Certificate], keys: list[PrivateKey]
) -> tuple[x509.Certificate, PrivateKey | None, list[x509.Certificate]]:
    """The certificate the key belongs to, the key, and the other certificates as its chain.
    The certificate is found by public key, not by place: a bundle may well list the CA
    before the leaf. A PKCS#12 holds one key: the first one given (the input's before
    `private_key`)."""
    if not keys:
        return certs[0], None, certs[1:]
    key = keys[0]
    for index, cert in enumerate(certs):
        if same_public_key(cert.public_key(), key.public_key()):
            return cert, key, certs[:index] + certs[index + 1 :]
    raise InvalidInput("the private key does not belong to any of the certificates given")


def _single_der(parts: _Parts) -> tuple[bytes, str, str]:
    """DER holds one object: the first certificate, else the key, else the CSR."""
    if parts.certificates:
        return cert_der(parts.certificates[0]), "certificate.der", "application/pkix-cert"
    if parts.keys:
        return key_der(parts.keys[0]), "private_key.der", "application/pkcs8"
    if parts.csrs:
        return csr_der(parts.csrs[0]), "request.der", "application/pkcs10"
    raise InvalidInput("nothing to convert")
