"""What a certificate should contain, before template and policy have had their say."""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from tessera.core.errors import InvalidInput, PolicyViolation
from tessera.core.keys import KeySpec, describe_public_key, parse_key_spec
from tessera.core.names import (
    UPPER_BOUNDS,
    check_country,
    cn_as_san,
    extended_key_usage,
    key_usage,
    parse_san,
)

MAX_VALIDITY_DAYS = 36500
MAX_PATH_LENGTH = 10

# Subject attributes a template may default, in the order they appear in a DN (C first).
SUBJECT_DEFAULTS: dict[str, tuple[x509.ObjectIdentifier, int]] = {
    "country": (NameOID.COUNTRY_NAME, 2),
    "state": (NameOID.STATE_OR_PROVINCE_NAME, UPPER_BOUNDS[NameOID.STATE_OR_PROVINCE_NAME]),
    "locality": (NameOID.LOCALITY_NAME, UPPER_BOUNDS[NameOID.LOCALITY_NAME]),
    "organization": (NameOID.ORGANIZATION_NAME, UPPER_BOUNDS[NameOID.ORGANIZATION_NAME]),
    "organizational_unit": (
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        UPPER_BOUNDS[NameOID.ORGANIZATIONAL_UNIT_NAME],
    ),
}
_DN_RANK = {oid: rank for rank, (oid, _) in enumerate(SUBJECT_DEFAULTS.values())}


@dataclass(frozen=True)
class Template:
    """Fixed choices an administrator made; issuing with a template applies them."""

    name: str
    validity_days: int | None = None
    key_algorithm: str | None = None
    key_size: int | None = None
    key_usage: tuple[str, ...] | None = None
    extended_key_usage: tuple[str, ...] | None = None
    is_ca: bool = False
    path_length: int | None = None
    subject_defaults: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CertificateRequest:
    """Everything the caller asked for; the public key comes from a CSR or a generated key."""

    subject: x509.Name
    public_key: object
    sans: tuple[x509.GeneralName, ...] = ()
    validity_days: int | None = None
    not_after: datetime | None = None  # an exact end within validity_days (ACME's notAfter)
    key_usage: tuple[str, ...] | None = None
    extended_key_usage: tuple[str, ...] | None = None
    is_ca: bool = False
    path_length: int | None = None
    requester: str = "system"
    origin: str = "api"  # which front end asked: api, csr, renewal, bootstrap, acme, scep...
    extra: dict[str, str] = field(default_factory=dict)
    # id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): only for delegated OCSP signing certificates
    ocsp_nocheck: bool = False
    # The SANs exactly as given, none added (`with_default_sans`): a renewal certifies the
    # names of the certificate it renews, no more.
    names_as_given: bool = False


def with_default_sans(request: CertificateRequest) -> CertificateRequest:
    """A leaf that asks for no SAN gets its common name as one when that names a host or an
    address (`names.cn_as_san`), since clients ignore the CN: whichever front end asked (the
    API, a CSR, SCEP; `Issuance.issue_certificate` applies it to every leaf) unless it
    asked for its names as given (a renewal). ACME always names its identifiers."""
    if request.is_ca or request.sans or request.names_as_given:
        return request
    return replace(request, sans=tuple(cn_as_san(request.subject)))


def with_subject_emails(request: CertificateRequest) -> CertificateRequest:
    """Every emailAddress of the subject (the API's `email`, a CSR's) also as an rfc822Name
    SAN: RFC 5280 4.1.2.6 has new certificates state an email address there, the subject
    attribute being a deprecated copy for legacy software. For CAs and renewals too: the
    subject already names the address, so the SAN certifies nothing new."""
    present = {_mailbox(name.value) for name in request.sans if isinstance(name, x509.RFC822Name)}
    missing: list[x509.GeneralName] = []
    for attribute in request.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        value = attribute.value if isinstance(attribute.value, str) else ""
        if _mailbox(value) in present:
            continue
        try:
            missing.append(parse_san(f"email:{value}"))
        except InvalidInput as exc:
            raise PolicyViolation(f"the subject's emailAddress is no mailbox: {exc}") from exc
        present.add(_mailbox(value))
    return replace(request, sans=(*request.sans, *missing)) if missing else request


def _mailbox(address: str) -> str:
    """An address as mail compares it: the domain in any case, the local part as written
    (RFC 5321 2.4)."""
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else address


def apply_template(request: CertificateRequest, template: Template | None) -> CertificateRequest:
    """A template fills what the request left open and refuses what contradicts it."""
    if template is None:
        return request
    _refuse_conflict(template, "key_usage", request.key_usage, template.key_usage, key_usage)
    _refuse_conflict(
        template,
        "extended_key_usage",
        request.extended_key_usage,
        template.extended_key_usage,
        _eku_oids,
    )
    if template.is_ca != request.is_ca:
        issues, asked = ("CA", "an end-entity") if template.is_ca else ("end-entity", "a CA")
        raise PolicyViolation(
            f"template {template.name!r} issues {issues} certificates only (basic constraints "
            f"CA:{str(template.is_ca).upper()}); this request is for {asked} certificate"
        )
    enforce_template_key(template, request.public_key)
    validity = request.validity_days or template.validity_days
    if template.validity_days and validity and validity > template.validity_days:
        raise PolicyViolation(
            f"template {template.name!r} allows at most {template.validity_days} days"
        )
    return replace(
        request,
        subject=fill_subject(request.subject, template.subject_defaults),
        validity_days=validity,
        key_usage=request.key_usage or template.key_usage,
        extended_key_usage=request.extended_key_usage or template.extended_key_usage,
        path_length=request.path_length
        if request.path_length is not None
        else template.path_length,
    )


def under_current_template(
    renewal: CertificateRequest, template: Template | None, days_given: bool
) -> CertificateRequest:
    """A renewal certifies again what the certificate said, except what its template fixes
    now (it may have changed since): the template's usages replace the old ones, and the old
    period, when no other was asked for, is shortened to what the template allows."""
    if template is None:
        return renewal
    days = renewal.validity_days
    if not days_given and template.validity_days and days and days > template.validity_days:
        days = template.validity_days
    usages = template.key_usage, template.extended_key_usage
    return replace(
        renewal,
        validity_days=days,
        key_usage=renewal.key_usage if usages[0] is None else None,
        extended_key_usage=renewal.extended_key_usage if usages[1] is None else None,
    )


def renewal_key_spec(template: Template | None, previous: KeySpec) -> KeySpec:
    """The new key of a renewal whose old key the server made: like the old one, unless the
    template now fixes another type or size."""
    fixed = template_key_spec(template) if template else None
    if template is None or fixed is None:
        return previous
    if fixed.algorithm == previous.algorithm and template.key_size is None:
        return previous  # the template fixes the type only
    return fixed


def template_key_spec(template: Template) -> KeySpec | None:
    """The key a template fixes; a size alone means RSA, a type alone its default size."""
    if template.key_algorithm is None and template.key_size is None:
        return None
    return parse_key_spec(template.key_algorithm, template.key_size)


def key_to_generate(template: Template | None, algorithm: str | None, size: int | None) -> KeySpec:
    """The key to make for a request that brings none: the type and size asked for, the rest
    from the template (its size only for its own type). One the template does not allow is
    refused here, naming both, before any key is made."""
    fixed = template_key_spec(template) if template else None
    if template is None or fixed is None:
        return parse_key_spec(algorithm, size)
    wanted = parse_key_spec(algorithm, None).algorithm if algorithm else fixed.algorithm
    if size is None and wanted == fixed.algorithm:
        size = template.key_size
    spec = parse_key_spec(wanted, size)
    _enforce_key_spec(template, spec)
    return spec


def enforce_template_key(template: Template, public_key: object) -> None:
    """A CSR's key (or any key) must be of the type and size the template fixes."""
    _enforce_key_spec(template, describe_public_key(public_key))


def _enforce_key_spec(template: Template, actual: KeySpec) -> None:
    fixed = template_key_spec(template)
    if fixed is None:
        return
    size_fixed = template.key_size is not None or fixed.algorithm == "Ed25519"
    if actual.algorithm != fixed.algorithm or (size_fixed and actual.size != fixed.size):
        wanted = fixed.label if size_fixed else f"{fixed.algorithm} keys"
        raise PolicyViolation(
            f"template {template.name!r} requires {wanted}; the request's key is {actual.label}"
        )


def fill_subject(subject: x509.Name, defaults: tuple[tuple[str, str], ...]) -> x509.Name:
    """Add each defaulted attribute the subject lacks, at its usual place; never override."""
    rdns = list(subject.rdns)
    present = {attr.oid for rdn in rdns for attr in rdn}
    for key, value in defaults:
        if not value:
            continue
        attribute = subject_default_attribute(key, value)
        if attribute.oid in present:
            continue
        rank = _DN_RANK[attribute.oid]
        at = next((i for i, rdn in enumerate(rdns) if _rank(rdn) > rank), len(rdns))
        rdns.insert(at, x509.RelativeDistinguishedName([attribute]))
        present.add(attribute.oid)
    return x509.Name(rdns)


def _rank(rdn: x509.RelativeDistinguishedName) -> int:
    return min(_DN_RANK.get(attr.oid, len(_DN_RANK)) for attr in rdn)


def subject_default_attribute(key: str, value: str) -> x509.NameAttribute:
    if key not in SUBJECT_DEFAULTS:
        known = ", ".join(SUBJECT_DEFAULTS)
        raise InvalidInput(f"unknown subject default {key!r}; known: {known}")
    oid, limit = SUBJECT_DEFAULTS[key]
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"subject default {key} must be 1 to {limit} characters")
    if oid == NameOID.COUNTRY_NAME:
        value = check_country(value, "subject default country")
    return x509.NameAttribute(oid, value)


def check_template(template: Template) -> None:
    """Everything a template fixes must be something the authority can issue."""
    if template.validity_days is not None and not 0 < template.validity_days <= MAX_VALIDITY_DAYS:
        raise InvalidInput(f"validity_days must be between 1 and {MAX_VALIDITY_DAYS}")
    spec = template_key_spec(template)
    if template.key_usage is not None:
        key_usage(list(template.key_usage))
        _check_usage_fits(template, spec)
    if template.extended_key_usage is not None:
        extended_key_usage(list(template.extended_key_usage))
    if template.path_length is not None:
        if not template.is_ca:
            raise InvalidInput("path_length applies only to CA templates (basic_constraints.ca)")
        if not 0 <= template.path_length <= MAX_PATH_LENGTH:
            raise InvalidInput(f"path_length must be between 0 and {MAX_PATH_LENGTH}")
    for key, value in template.subject_defaults:
        subject_default_attribute(key, value)


def _check_usage_fits(template: Template, spec: KeySpec | None) -> None:
    names = set(template.key_usage or ())
    if template.is_ca and names and "keyCertSign" not in names:
        raise InvalidInput("a CA template's key_usage needs keyCertSign")
    if not template.is_ca and "keyCertSign" in names:
        raise InvalidInput("keyCertSign is only for CA templates")
    if spec is not None and spec.algorithm != "RSA":
        forbidden = names & {"keyEncipherment", "dataEncipherment"}
        if forbidden:
            raise InvalidInput(f"{spec.label} keys cannot be used for {sorted(forbidden)}")


def _refuse_conflict(
    template: Template,
    label: str,
    asked: tuple[str, ...] | None,
    fixed: tuple[str, ...] | None,
    meaning: Callable[[list[str]], object],
) -> None:
    """Compared by what the names mean, not how they are spelled: a template saying
    nonRepudiation or an EKU's dotted OID must accept a request (or the renewal of its own
    certificate, read back as contentCommitment / serverAuth) naming the same usages."""
    if asked and fixed is not None and meaning(list(asked)) != meaning(list(fixed)):
        raise PolicyViolation(
            f"{label} {list(asked)} conflicts with template {template.name!r} ({list(fixed)})"
        )


def _eku_oids(names: list[str]) -> frozenset[x509.ObjectIdentifier]:
    return frozenset(extended_key_usage(names))
