"""ACME certificate revocation (RFC 8555 7.6): which certificate, who may revoke it, and with
which reason. The revocation itself is `CertificateService.revoke`, as for any other."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tessera.core.errors import Conflict, UnparsableInput
from tessera.core.formats import load_certificate, same_public_key
from tessera.core.revocation import REASONS
from tessera.domains.acme.identifiers import Identifier, name_identifiers
from tessera.domains.certificates.service import CertificateService
from tessera.protocols.acme import jws
from tessera.protocols.acme.problems import AcmeProblem, malformed, unauthorized
from tessera.storage import models
from tessera.storage.models_acme import AcmeAccount
from tessera.storage.repositories import Repositories

# RFC 5280 reason codes a subscriber may give (7 is unused, 8 removeFromCRL undoes a hold and
# revokes nothing; holds and CA compromise are not a subscriber's to declare).
ACME_REASONS = {
    0: "unspecified",
    1: "keyCompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    9: "privilegeWithdrawn",
}
ALREADY_REVOKED = "the certificate is revoked already"


@dataclass(frozen=True)
class Target:
    """The certificate a revocation request names: as sent, and as stored here."""

    parsed: x509.Certificate
    stored: models.Certificate


def target(repos: Repositories, encoded: object) -> Target:
    der = jws.b64decode(encoded, "certificate")
    try:
        parsed = load_certificate(der)
    except UnparsableInput as exc:
        raise malformed("the certificate cannot be read") from exc
    stored = repos.acme.certificate_by_fingerprint(parsed.fingerprint(hashes.SHA256()).hex())
    if stored is None:
        raise AcmeProblem("malformed", "this certificate was not issued here", 404)
    return Target(parsed, stored)


def reason(code: object) -> str:
    if not isinstance(code, int) or isinstance(code, bool) or code not in ACME_REASONS:
        allowed = sorted(ACME_REASONS)
        raise AcmeProblem("badRevocationReason", f"reason must be one of {allowed}")
    assert ACME_REASONS[code] in REASONS
    return ACME_REASONS[code]


def check_account(repos: Repositories, account: AcmeAccount, cert: Target, now: datetime) -> None:
    """RFC 8555 7.6: the account that ordered the certificate may revoke it, and so may an
    account that holds valid authorizations for every identifier in it."""
    order = repos.acme.order_for_certificate(cert.stored.id)
    if order is not None and order.account_id == account.id:
        return
    names = certificate_identifiers(cert.parsed)
    held = repos.acme.authorized_identifiers(account.id, [i.base for i in names], now)
    if not names or any((i.type, i.base, i.wildcard) not in held for i in names):
        raise unauthorized(
            "this account neither ordered the certificate nor holds valid authorizations"
            " for all of its identifiers"
        )


def check_key(jwk: dict[str, Any], cert: Target) -> None:
    """RFC 8555 7.6: a request signed with the certificate's own key (jwk) may revoke it."""
    if not same_public_key(jws.public_key(jwk), cert.parsed.public_key()):
        raise unauthorized("the JWS is signed neither by an account nor by the certificate's key")


def revoke(service: CertificateService, cert: Target, why: str) -> None:
    stored = cert.stored
    # A hold is the one revocation that is not final: the subscriber may make it permanent.
    if stored.status == "revoked" and stored.revocation_reason != "certificateHold":
        raise AcmeProblem("alreadyRevoked", ALREADY_REVOKED)
    try:
        service.revoke(stored.id, why, "revoked through ACME")
    except Conflict as exc:  # another request revoked it meanwhile
        raise AcmeProblem("alreadyRevoked", ALREADY_REVOKED) from exc


def certificate_identifiers(cert: x509.Certificate) -> list[Identifier]:
    """The identifiers a certificate is for, as authorizations name them: its DNS and IP
    SANs and its CNs. A name of any other kind is one no authorization covers: then none."""
    try:
        san: list[x509.GeneralName] = list(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        san = []
    names = name_identifiers(cert.subject, san)
    return sorted(names or (), key=lambda i: (i.type, i.value))
