"""SCEP profiles (the seed's `/scep/config` is the profile named "default") and their RA
certificates.

SCEP moves the request inside an envelope encrypted to the server with RSA key transport, so
each profile answers with an RSA key. By default that is a registration authority (RA)
certificate issued by the profile's CA through the one issuance path (its key encrypted at
rest like every other); an RSA CA may also answer by itself (`use_ra` false). The RA is
issued when a profile is enabled or changes CA, and renewed by a background job when it
nears its end (see `renew_due`). An earlier RA of the profile keeps opening the requests
encrypted to it until it expires (see `retired_responder`).
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tessera.core.errors import Conflict, InvalidInput, NotFound, PolicyViolation, Unavailable
from tessera.core.formats import load_certificate
from tessera.core.inspect import serial_hex
from tessera.core.keys import generate_private_key, parse_key_spec
from tessera.core.profile import CertificateRequest
from tessera.domains import audit
from tessera.domains.issuance import Issuance, chain_refusal, signing_refusal
from tessera.domains.scep.types import ProfileSettings, Responder
from tessera.storage import models
from tessera.storage.models_scep import ScepProfile

DEFAULT_SLUG = "default"
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RA_VALIDITY_DAYS = 365  # the default of TESSERA_SCEP_RA_DAYS
RA_RENEW_BEFORE = timedelta(days=30)
CHALLENGE_TYPES = ("static", "dynamic")
# Fields a PATCH may set, with the checks each needs (done in `_apply`).
SETTABLE = (
    "enabled",
    "ca_id",
    "ca_ident",
    "next_ca_id",
    "template_id",
    "auto_approve",
    "challenge_type",
    "challenge_validity",
    "queue_without_challenge",
    "use_ra",
)


@dataclass(frozen=True)
class ProfileDefaults:
    """What an unsaved profile looks like: disabled until an admin picks a CA."""

    slug: str = DEFAULT_SLUG
    enabled: bool = False
    ca_id: int | None = None
    ca_ident: str | None = None
    next_ca_id: int | None = None
    template_id: int | None = None
    auto_approve: bool = False
    challenge_type: str = "static"
    challenge_validity: int = 24
    queue_without_challenge: bool = False
    use_ra: bool = True
    ra_certificate_id: int | None = None
    next_ra_certificate_id: int | None = None


def profile_path(slug: str) -> str:
    return "/scep/pkiclient.exe" if slug == DEFAULT_SLUG else f"/scep/{slug}/pkiclient.exe"


def renew_window(ra_days: int) -> timedelta:
    """How long before its end an RA is renewed: 30 days, or a third of a shorter lifetime
    (renewing within the lifetime itself would reissue the RA on every run of the job)."""
    return min(RA_RENEW_BEFORE, timedelta(days=ra_days) / 3)


def ra_common_name(slug: str) -> str:
    return f"SCEP RA {slug}"[:64]


class ProfileService:
    def __init__(self, issuance: Issuance, now: datetime, ra_days: int = RA_VALIDITY_DAYS) -> None:
        self._issuance = issuance
        self._repos = issuance.repos
        self._now = now
        self._ra_days = ra_days

    def get(self, slug: str) -> ScepProfile | ProfileDefaults:
        return self._repos.scep.profile(slug) or ProfileDefaults(slug=slug)

    def require(self, slug: str) -> ScepProfile:
        profile = self._repos.scep.profile(slug)
        if profile is None:
            raise NotFound(f"SCEP profile {slug!r} not found")
        return profile

    def listing(self) -> list[ScepProfile]:
        return list(self._repos.scep.profiles())

    def create(self, slug: str, changes: dict[str, Any]) -> ScepProfile:
        if not SLUG.match(slug) or slug == DEFAULT_SLUG:
            raise InvalidInput("slug: lowercase letters, digits, - and _ (and not 'default')")
        if self._repos.scep.profile(slug) is not None:
            raise Conflict(f"SCEP profile {slug!r} already exists")
        return self._save(slug, changes, "scep.profile.create")

    def update(self, slug: str, changes: dict[str, Any]) -> ScepProfile:
        if slug != DEFAULT_SLUG:
            self.require(slug)
        return self._save(slug, changes, "scep.config.update")

    def delete(self, slug: str) -> None:
        profile = self.require(slug)
        self._repos.scep.delete_profile(profile)
        self._audit("scep.profile.delete", profile, {"slug": slug})

    def _save(self, slug: str, changes: dict[str, Any], action: str) -> ScepProfile:
        profile = self._repos.scep.profile(slug)
        if profile is None:
            defaults = ProfileDefaults(slug=slug)
            profile = ScepProfile(**{k: getattr(defaults, k) for k in ("slug", *SETTABLE)})
            profile.created_at = self._now
            self._repos.scep.add_profile(profile)
        before = {k: getattr(profile, k) for k in SETTABLE}
        self._apply(profile, changes)
        profile.updated_at = self._now
        if profile.enabled and profile.ca_id is None:
            raise InvalidInput("an enabled SCEP profile needs a ca_id")
        self._ensure_ra(profile, force=before["ca_id"] != profile.ca_id)
        changed = {k: getattr(profile, k) for k in SETTABLE if before[k] != getattr(profile, k)}
        self._audit(action, profile, {"slug": slug, "changed": changed})
        return profile

    def _apply(self, profile: ScepProfile, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if name not in SETTABLE:
                continue
            if name in ("ca_id", "next_ca_id") and value is not None:
                # Only a newly chosen CA is refused for having expired: a form sent back
                # whole, the CA unchanged, saves the other settings, and the protocol keeps
                # answering (refusing enrollments in CertRep) with the CA it has.
                changed = int(value) != getattr(profile, name)
                upcoming = name == "next_ca_id"  # a rollover's next CA may start later
                self._signing_ca(int(value), self._now if changed else None, upcoming)
            if name == "template_id" and value is not None:
                template = self._repos.templates.get(int(value))
                if template is None:
                    raise NotFound(f"template {value} not found")
                if template.is_ca:
                    raise PolicyViolation("a SCEP profile cannot use a CA template")
            if name == "challenge_type" and value not in CHALLENGE_TYPES:
                raise InvalidInput("challenge_type must be static or dynamic")
            setattr(profile, name, value)
        if profile.next_ca_id is not None and profile.next_ca_id == profile.ca_id:
            raise InvalidInput("next_ca_id must differ from ca_id")

    def _signing_ca(
        self, ca_id: int, expired_by: datetime | None = None, upcoming: bool = False
    ) -> models.CertificateAuthority:
        """`expired_by`: refuse the CA too if it has expired by then (a newly chosen one), or
        is not valid yet, unless `upcoming` (the next CA of a rollover)."""
        ca = self._repos.cas.get(ca_id)
        if ca is None:
            raise NotFound(f"CA {ca_id} not found")
        refusal = signing_refusal(ca, now=expired_by, upcoming=upcoming)
        refusal = refusal or chain_refusal(self._repos, ca)
        if refusal is not None:
            raise PolicyViolation(f"CA {ca_id} cannot sign: {refusal}")
        return ca

    # RA certificates
    def _ensure_ra(self, profile: ScepProfile, force: bool = False) -> None:
        """Issue the RA (and the next CA's RA during a rollover) when missing or stale."""
        if not profile.enabled or profile.ca_id is None:
            return
        ca = self._signing_ca(profile.ca_id)
        if profile.use_ra:
            current = self._certificate(profile.ra_certificate_id)
            if force or current is None or self._due(current, ca):
                profile.ra_certificate_id = self._issue_ra(profile, ca).id
        else:
            _check_answers_itself(ca, "")
        if profile.next_ca_id is None:
            profile.next_ra_certificate_id = None
            return
        next_ca = self._signing_ca(profile.next_ca_id)
        if profile.use_ra:
            upcoming = self._certificate(profile.next_ra_certificate_id)
            if upcoming is None or self._due(upcoming, next_ca):
                # RFC 8894 4.7: the next CA may be valid only later; its RA is signed now.
                profile.next_ra_certificate_id = self._issue_ra(profile, next_ca, True).id
        else:
            # The next CA opens envelopes itself once it answers (and for early clients now).
            _check_answers_itself(next_ca, "next ")

    def renew_due(self, profile: ScepProfile) -> bool:
        """For the background job: True when an RA was (re)issued. The profile row is
        claimed with a conditional UPDATE first, so of several server processes running the
        job at once only one renews (the others find the RA changed and skip)."""
        if not profile.enabled or profile.ca_id is None or not self._stale(profile):
            return False
        if not self._repos.scep.claim_profile(profile, self._now):
            return False
        self._ensure_ra(profile)
        return True

    def _stale(self, profile: ScepProfile) -> bool:
        if not profile.use_ra:
            return False
        pairs = [(profile.ra_certificate_id, profile.ca_id)]
        if profile.next_ca_id is not None:
            pairs.append((profile.next_ra_certificate_id, profile.next_ca_id))
        for (cert_id, ca_id), upcoming in zip(pairs, (False, True), strict=False):
            cert = self._certificate(cert_id)
            ca = self._repos.cas.get(ca_id) if ca_id is not None else None
            if ca is not None and signing_refusal(ca, now=self._now, upcoming=upcoming):
                continue  # nothing can sign its RA: the job would fail (and log) every minute
            if cert is None or ca is None or self._due(cert, ca):
                return True
        return False

    def _due(self, cert: models.Certificate, ca: models.CertificateAuthority) -> bool:
        if cert.ca_id != ca.id or cert.status != "active":
            return True
        # An RA never outlives its CA: one that already ends with the CA cannot be renewed
        # any further (a CA rollover is the cure), and reissuing it hourly only churns keys.
        if cert.not_after >= ca.not_after:
            return False
        return cert.not_after - self._now < renew_window(self._ra_days)

    def _certificate(self, cert_id: int | None) -> models.Certificate | None:
        return self._repos.certificates.get(cert_id) if cert_id is not None else None

    def _issue_ra(
        self, profile: ScepProfile, ca: models.CertificateAuthority, upcoming: bool = False
    ) -> models.Certificate:
        key = generate_private_key(parse_key_spec("RSA", 2048))
        common_name = ra_common_name(profile.slug)
        preferred = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tessera"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        request = CertificateRequest(
            # O=Tessera, unless a directoryName constraint up the CA's chain wants the
            # subject within a subtree (then under the CA's own subject; docs/issuance.md)
            subject=self._issuance.issuer_chain(ca).subject_within(preferred, common_name),
            public_key=key.public_key(),
            validity_days=self._ra_days,
            # RFC 8894: the RA signs the replies and decrypts the requests; id-kp-cmcRA
            # (RFC 6402) names what it is.
            key_usage=("digitalSignature", "keyEncipherment"),
            extended_key_usage=("cmcRA",),
            requester=self._issuance.actor.username,
            origin="scep-ra",
        )
        row = self._issuance.issue_certificate(
            request, ca, None, key, fresh_key=True, upcoming=upcoming
        )
        self._audit("scep.ra.issue", profile, {"certificate_id": row.id, "ca_id": ca.id})
        return row

    # What the protocol needs
    def responder(self, profile: ProfileSettings, upcoming: bool = False) -> Responder:
        """The certificate and key that answer for this profile, and the CA certificates
        GetCACert (or GetNextCACert, with `upcoming`) hands out."""
        ca_id = profile.next_ca_id if upcoming else profile.ca_id
        if ca_id is None:
            raise NotFound("no CA rollover is in progress for this SCEP profile")
        ca = self._signing_ca(ca_id)
        chain = self._chain(ca)
        if not profile.use_ra:
            key = self._issuance.keys.decrypt(ca.encrypted_private_key or "")
            if not isinstance(key, rsa.RSAPrivateKey):
                raise PolicyViolation("the CA has no RSA key; enable the RA")
            return Responder(chain[0], key, chain)
        ra_id = profile.next_ra_certificate_id if upcoming else profile.ra_certificate_id
        ra = self._certificate(ra_id)
        if ra is None or ra.encrypted_private_key is None:
            raise PolicyViolation("the SCEP profile has no RA certificate; save its config")
        if ra.status != "active":
            # Clients would encrypt to, and trust answers signed by, a certificate its CA
            # says is revoked. The renewal job issues the next RA within RA_RENEWAL_SECONDS.
            raise Unavailable("the SCEP profile's RA certificate was revoked; a new one follows")
        return self._ra_responder(ra, chain)

    def retired_responder(
        self, profile: ProfileSettings, issuer_der: bytes, serial: int
    ) -> Responder | None:
        """An earlier RA of this profile that a request is encrypted to, while it is still
        valid: a client that fetched GetCACert before a renewal (or polls a pending request
        across one) keeps being served. None when the serial names no such RA."""
        if not profile.use_ra or profile.ca_id is None:
            return None
        ca = self._signing_ca(profile.ca_id)
        if _parsed(ca.certificate_pem).subject.public_bytes() != issuer_der:
            return None
        ra = self._repos.scep.certificate_by_serial(serial_hex(serial), [ca.id])
        if (
            ra is None
            or ra.origin != "scep-ra"
            or ra.common_name != ra_common_name(profile.slug)
            or ra.status != "active"
            or ra.not_after <= self._now
            or ra.encrypted_private_key is None
        ):
            return None
        return self._ra_responder(ra, self._chain(ca))

    def _ra_responder(self, ra: models.Certificate, chain: list[x509.Certificate]) -> Responder:
        ra_key = self._issuance.keys.decrypt(ra.encrypted_private_key or "")
        if not isinstance(ra_key, rsa.RSAPrivateKey):
            raise PolicyViolation("the RA key is not RSA")
        return Responder(_parsed(ra.certificate_pem), ra_key, [_parsed(ra.certificate_pem), *chain])

    def _chain(self, ca: models.CertificateAuthority) -> list[x509.Certificate]:
        return list(self._issuance.issuer_chain(ca).certificates)

    def _audit(self, action: str, profile: ScepProfile, details: dict[str, Any]) -> None:
        audit.record(
            self._repos.audit,
            self._issuance.actor,
            action,
            "scep_profile",
            profile.id,
            _jsonable(details),
        )


def _is_rsa(ca: models.CertificateAuthority) -> bool:
    return ca.key_algorithm.upper() == "RSA"


# What a CA answering by itself does with its key: signs the CertReps and opens the envelopes.
RESPONDER_USAGES = ("digitalSignature", "keyEncipherment")


def _check_answers_itself(ca: models.CertificateAuthority, which: str) -> None:
    """With `use_ra` false the CA is the SCEP responder: it decrypts the requests (RSA key
    transport) and signs the answers, so RFC 8894 section 2.1.2 wants its keyUsage to allow
    digitalSignature and keyEncipherment, and clients that choose the encryption
    certificate by key usage (scepclient's `-key-encipherment-selector`) find no other.
    `which`: "" or "next ", for the message."""
    if not _is_rsa(ca):
        raise PolicyViolation(f"use_ra false needs an RSA {which}CA (SCEP key transport is RSA)")
    missing = _missing_usages(_parsed(ca.certificate_pem), RESPONDER_USAGES)
    if missing:
        raise PolicyViolation(
            f"use_ra false needs a {which}CA certificate whose keyUsage allows "
            f"{' and '.join(RESPONDER_USAGES)} (RFC 8894 section 2.1.2); that of CA {ca.id} "
            f"lacks {' and '.join(missing)}: keep the RA (use_ra true) or choose such a CA"
        )


def _missing_usages(cert: x509.Certificate, wanted: tuple[str, ...]) -> list[str]:
    """The usages of `wanted` the certificate's keyUsage does not allow; none without a
    keyUsage extension, which RFC 5280 section 4.2.1.3 reads as no restriction."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    allowed = {
        "digitalSignature": usage.digital_signature,
        "keyEncipherment": usage.key_encipherment,
    }
    return [name for name in wanted if not allowed[name]]


@lru_cache(maxsize=64)
def _parsed(pem: str) -> x509.Certificate:
    return load_certificate(pem.encode())


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (_jsonable(v) if isinstance(v, dict) else v if not isinstance(v, datetime) else str(v))
        for k, v in details.items()
    }
