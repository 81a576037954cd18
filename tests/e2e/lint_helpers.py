"""pkilint run in-process over what a server signed: the same validator sets as its
`lint_pkix_cert`, `lint_crl -t CRL -p PKIX`, `lint_ocsp_response` and
`lint_pkix_signer_signee_cert_chain` scripts, built once (a subprocess per object would cost a
second each), with every finding kept so a failure prints the warnings beside the errors."""

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import validators
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pkilint import loader, pkix, validation
from pkilint.bin import lint_pkix_signer_signee_cert_chain as chain_script
from pkilint.pkix import certificate, crl, extension, name, ocsp
from pkilint.validation import ValidationFindingSeverity as Severity

_VALIDATORS_SCHEMES = {"ftp", "ftps", "git", "http", "https", "rtsp", "sftp", "ssh", "telnet"}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str
    where: str
    validator: str

    def __str__(self) -> str:
        text = f"{self.severity.name} {self.code} @ {self.where} ({self.validator})"
        return f"{text}: {self.message}" if self.message else text


@cache
def _certificate_validator() -> Any:
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


@cache
def _crl_validator() -> Any:
    # The PKIX profile: the CRL type (CRL or ARL) only matters to the CA/B Forum profile.
    return crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            crl.create_issuer_validator_container([]),
            crl.create_validity_validator_container([]),
            crl.create_extensions_validator_container([]),
        ],
    )


@cache
def _ocsp_validator() -> Any:
    return ocsp.create_pkix_ocsp_response_validator_container(
        [
            ocsp.create_response_decoder(),
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [],
    )


def _findings(results: list[validation.ValidationResult]) -> list[Finding]:
    return [
        Finding(
            description.finding.severity,
            description.finding.code,
            description.message or "",
            str(result.node.path),
            type(result.validator).__name__,
        )
        for result in results
        for description in result.finding_descriptions
    ]


def der_of(certificate_or_pem: x509.Certificate | str | bytes) -> bytes:
    if isinstance(certificate_or_pem, x509.Certificate):
        return certificate_or_pem.public_bytes(Encoding.DER)
    raw = certificate_or_pem.encode() if isinstance(certificate_or_pem, str) else certificate_or_pem
    if b"-----BEGIN" in raw:
        return x509.load_pem_x509_certificate(raw).public_bytes(Encoding.DER)
    return raw


def lint_certificate(cert: x509.Certificate | str | bytes, label: str = "cert") -> list[Finding]:
    """pkilint's RFC 5280 certificate linter; it tells CA from end-entity certificates by
    their basicConstraints and keyUsage, as its script does."""
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der_of(cert), label)
    return _findings(_certificate_validator().validate(document.root))


def lint_crl(der: bytes, label: str = "crl") -> list[Finding]:
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, label)
    return _findings(_crl_validator().validate(document.root))


def lint_ocsp_response(der: bytes, label: str = "ocsp") -> list[Finding]:
    document = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, label)
    return _findings(_ocsp_validator().validate(document.root))


def lint_issued_by(
    issuer: x509.Certificate | str | bytes, subject: x509.Certificate | str | bytes
) -> list[Finding]:
    """The signer/signee checks: names and key identifiers match and the signature verifies."""
    documents: dict[str, Any] = {}
    load = loader.RFC5280CertificateDocumentLoader().load_der_document
    documents["issuer"] = load(der_of(issuer), "issuer", "issuer", documents)
    documents["subject"] = load(der_of(subject), "subject", "subject", documents)
    decoding = chain_script.create_decoder_validation_container()
    results = decoding.validate(documents["issuer"].root)
    results += decoding.validate(documents["subject"].root)
    results += chain_script.create_issuer_validation_container().validate(documents["issuer"].root)
    results += chain_script.create_subject_validation_container().validate(
        documents["subject"].root
    )
    return _findings(results)


def _single_label(name: str) -> bool:
    return bool(name) and "." not in name and name.replace("-", "").isalnum()


def _wildcard(name: str) -> bool:
    rest = name.removeprefix("*.")
    return rest != name and all(_single_label(label) for label in rest.split("."))


def misread(finding: Finding) -> bool:
    """Where pkilint (through the `validators` package it calls) holds names to more than
    RFC 5280 asks, said precisely so that nothing else slips through:
    - a single-label dNSName ("localhost", in the server's own TLS certificate): RFC 5280
      4.2.1.6 asks for RFC 1034 3.5's preferred name syntax, whose `<subdomain> ::= <label>
      | <subdomain> "." <label>` is a single label too; `validators.domain` wants a TLD;
    - a wildcard dNSName ("*.example.com"): RFC 5280 4.2.1.6 leaves wildcards to the
      applications that use them ("Applications with specific requirements MAY use such
      names"), RFC 6125 6.4.3 and the CA/B Forum define them;
    - a URI without an authority ("urn:uuid:..."): RFC 5280 4.2.1.6 asks for RFC 3986
      syntax with a scheme and a scheme-specific part, and a host only "URIs that include
      an authority" must have; `validators.url` wants every URI to have a host, and a
      scheme among the nine it knows ("spiffe://", "urn:" are neither)."""
    quoted = finding.message.partition('"')[2].rpartition('"')[0]
    if finding.code == "pkix.invalid_domain_name_syntax":
        return _single_label(quoted) or _wildcard(quoted)
    if finding.code == "pkix.invalid_uri_syntax":
        return _other_scheme(quoted)
    return False


def _other_scheme(uri: str) -> bool:
    """A URI `validators.url` refuses for its scheme alone: it knows nine (http, ftp, ssh...)
    and no other. Its authority, if any, is still checked, under https."""
    scheme, colon, rest = uri.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return False
    if scheme.lower() in _VALIDATORS_SCHEMES:
        return False
    return not rest.startswith("//") or validators.url(f"https:{rest}") is True


def assert_clean(findings: list[Finding], what: str) -> None:
    """No ERROR or FATAL finding (but those `misread`); on failure every finding down to
    WARNING is shown."""
    bad = [f for f in findings if f.severity <= Severity.ERROR and not misread(f)]
    shown = "\n  ".join(str(f) for f in findings if f.severity <= Severity.WARNING)
    assert not bad, f"pkilint findings for {what}:\n  {shown}"


def warnings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == Severity.WARNING]
