"""The CA that ACME issues with, or why none can: one answer for new-order, which asks before
the client proves control of its names for nothing, and for finalize, which asks again right
before signing (the CA may have expired, been revoked or disabled since the order was made)."""

from datetime import datetime

from tessera.domains.issuance import ca_chain, revoked_above, signing_refusal
from tessera.protocols.acme.problems import AcmeProblem
from tessera.storage.models import CertificateAuthority
from tessera.storage.models_acme import AcmeSettings
from tessera.storage.repositories import Repositories

SETTINGS = "PATCH /api/v2/acme/settings"
NO_ISSUING_CA = f"no issuing CA is configured for ACME ({SETTINGS})"


def issuing_ca(repos: Repositories, settings: AcmeSettings, now: datetime) -> CertificateAuthority:
    """The configured issuing CA when it can sign now, else a 503 `serverInternal` problem
    saying why: the fault is the server's configuration, not the client's request, and the
    client may try again once an administrator has chosen a CA that can sign. The one rule
    of `signing_refusal` (revoked, disabled, key not held here, internal, under the key floor,
    expired or not valid yet) and a revoked CA above it, which relying parties would refuse."""
    ca_id = settings.issuing_ca_id
    if ca_id is None:
        raise unavailable(NO_ISSUING_CA)
    ca = repos.cas.get(ca_id)
    if ca is None:  # the setting holds a bare id (a deletion racing the choice of the CA)
        raise unavailable(
            f"the issuing CA (CA {ca_id}) no longer exists; choose another ({SETTINGS})"
        )
    refusal = signing_refusal(ca, now=now) or revoked_above(ca_chain(repos, ca))
    if refusal is not None:
        raise unavailable(f"the issuing CA (CA {ca_id}) cannot issue: {refusal}")
    return ca


def unavailable(detail: str) -> AcmeProblem:
    return AcmeProblem("serverInternal", detail, 503)
