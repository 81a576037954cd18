"""ACME resources as RFC 8555 section 7.1 shows them (field for field), with their URLs."""

from datetime import datetime
from typing import Any

from tessera.core.clock import wire_time
from tessera.domains.acme.validation import caa_identities
from tessera.storage.models_acme import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    AcmeSettings,
)
from tessera.storage.repositories import Repositories


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else wire_time(moment)


class Urls:
    def __init__(self, base: str) -> None:
        self.base = base  # https://host:port/acme

    def __call__(self, *parts: object) -> str:
        return "/".join([self.base, *(str(p) for p in parts)])

    def account(self, account_id: int) -> str:
        return self("acct", account_id)


def directory(urls: Urls, settings: AcmeSettings, server_host: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"externalAccountRequired": settings.require_eab}
    identities = caa_identities(settings.caa_identities, server_host)
    if identities:
        meta["caaIdentities"] = identities
    if settings.terms_of_service:
        meta["termsOfService"] = settings.terms_of_service
    if settings.website:
        meta["website"] = settings.website
    if settings.profiles:
        meta["profiles"] = {
            name: str((spec or {}).get("description") or name)
            for name, spec in sorted(settings.profiles.items())
        }
    return {
        "newNonce": urls("new-nonce"),
        "newAccount": urls("new-account"),
        "newOrder": urls("new-order"),
        "revokeCert": urls("revoke-cert"),
        "keyChange": urls("key-change"),
        "renewalInfo": urls("renewalInfo"),
        "meta": meta,
    }


def account(urls: Urls, row: AcmeAccount) -> dict[str, Any]:
    # externalAccountBinding is the binding JWS the client sent (RFC 8555 7.3.4): echoed in
    # the answer that creates the account (routes.new_account), not kept after it; the bound
    # EAB key shows in the management API.
    return {
        "status": row.status,
        "contact": list(row.contact or []),
        "termsOfServiceAgreed": row.terms_agreed,
        "orders": urls("acct", row.id, "orders"),
        "createdAt": rfc3339(row.created_at),
        "key": row.jwk,
    }


def order(urls: Urls, repos: Repositories, row: AcmeOrder) -> dict[str, Any]:
    authzs = repos.acme.order_authorizations(row.id)
    body: dict[str, Any] = {
        "status": row.status,
        "expires": rfc3339(row.expires_at),
        "identifiers": row.identifiers,
        "authorizations": [urls("authz", a.id) for a in authzs],
        "finalize": urls("order", row.id, "finalize"),
    }
    for key, value in (("notBefore", row.not_before), ("notAfter", row.not_after)):
        if value is not None:
            body[key] = rfc3339(value)
    if row.profile:
        body["profile"] = row.profile
    if row.replaces:
        body["replaces"] = row.replaces
    if row.error:
        body["error"] = row.error
    if row.status == "valid" and row.certificate_id is not None:
        body["certificate"] = urls("cert", row.certificate_id)
    return body


def authorization(urls: Urls, repos: Repositories, row: AcmeAuthorization) -> dict[str, Any]:
    challenges = repos.acme.authorization_challenges(row.id)
    if row.status in ("valid", "invalid"):
        # RFC 8555 7.1.4: a valid authorization lists the challenge that proved it, an
        # invalid one the challenge that was attempted and failed (with its error). The
        # others may go, but not a failed one (7.5.1: "SHOULD NOT remove challenges with
        # status invalid"): one answered alongside the one that proved it stays listed.
        shown = (row.status, "invalid")
        challenges = [c for c in challenges if c.status in shown] or list(challenges)
    body: dict[str, Any] = {
        "identifier": {"type": row.identifier_type, "value": row.identifier_value},
        "status": row.status,
        "expires": rfc3339(row.expires_at),
        "challenges": [challenge(urls, c) for c in challenges],
    }
    if row.wildcard:
        body["wildcard"] = True
    return body


def challenge(urls: Urls, row: AcmeChallenge) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": row.type,
        "url": urls("chall", row.id),
        "status": row.status,
        "token": row.token,
    }
    if row.validated_at is not None:
        body["validated"] = rfc3339(row.validated_at)
    if row.error:
        body["error"] = row.error
    return body
