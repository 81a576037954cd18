"""What a certificate should contain, before template and policy have had their say."""

from dataclasses import dataclass, field, replace

from cryptography import x509

from tessera.core.errors import PolicyViolation

MAX_VALIDITY_DAYS = 36500


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
    key_usage: tuple[str, ...] | None = None
    extended_key_usage: tuple[str, ...] | None = None
    is_ca: bool = False
    path_length: int | None = None
    requester: str = "system"
    origin: str = "api"  # which front end asked: api, csr, renewal, bootstrap, acme, scep...
    extra: dict[str, str] = field(default_factory=dict)


def apply_template(request: CertificateRequest, template: Template | None) -> CertificateRequest:
    """A template fills what the request left open and refuses what contradicts it."""
    if template is None:
        return request
    _refuse_conflict(template, "key_usage", request.key_usage, template.key_usage)
    _refuse_conflict(
        template, "extended_key_usage", request.extended_key_usage, template.extended_key_usage
    )
    if template.is_ca != request.is_ca:
        raise PolicyViolation(f"template {template.name!r} does not issue this kind of certificate")
    validity = request.validity_days or template.validity_days
    if template.validity_days and validity and validity > template.validity_days:
        raise PolicyViolation(
            f"template {template.name!r} allows at most {template.validity_days} days"
        )
    return replace(
        request,
        validity_days=validity,
        key_usage=request.key_usage or template.key_usage,
        extended_key_usage=request.extended_key_usage or template.extended_key_usage,
        path_length=request.path_length
        if request.path_length is not None
        else template.path_length,
    )


def _refuse_conflict(
    template: Template,
    label: str,
    asked: tuple[str, ...] | None,
    fixed: tuple[str, ...] | None,
) -> None:
    if asked and fixed is not None and set(asked) != set(fixed):
        raise PolicyViolation(
            f"{label} {list(asked)} conflicts with template {template.name!r} ({list(fixed)})"
        )
