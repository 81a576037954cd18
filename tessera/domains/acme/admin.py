"""Administration of the ACME server: settings stored in the database, EAB keys, accounts,
orders (with approval), early-renewal marks and statistics."""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tessera.core.errors import Conflict, InvalidInput, NotFound
from tessera.core.keystore import KeyEncryptor
from tessera.domains import audit
from tessera.domains.acme.accounts import encrypt_hmac, new_hmac_key
from tessera.domains.actor import Actor
from tessera.domains.issuance import chain_refusal, signing_refusal
from tessera.protocols.acme.jws import b64encode
from tessera.storage.models_acme import AcmeAccount, AcmeEabKey, AcmeOrder, AcmeSettings
from tessera.storage.repositories import Repositories

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_VALIDITY_DAYS = 825
SETTING_FIELDS = (
    "enabled",
    "issuing_ca_id",
    "template_id",
    "validity_days",
    "require_approval",
    "require_eab",
    "caa_check_ca_ids",
    "caa_identities",
    "terms_of_service",
    "website",
    "profiles",
)


@dataclass(frozen=True)
class NewEabKey:
    row: AcmeEabKey
    hmac_key: str  # base64url; shown once


@dataclass
class AcmeAdmin:
    repos: Repositories
    actor: Actor
    keys: KeyEncryptor
    now: datetime

    def settings(self) -> AcmeSettings:
        return self.repos.acme.settings()

    def update_settings(self, changes: dict[str, Any]) -> AcmeSettings:
        row = self.repos.acme.settings(for_update=True)
        if "issuing_ca_id" in changes and changes["issuing_ca_id"] is not None:
            self._check_ca(changes["issuing_ca_id"], row.issuing_ca_id)
        if "template_id" in changes and changes["template_id"] is not None:
            self._check_template(changes["template_id"])
        if "validity_days" in changes:
            days = changes["validity_days"]
            if not isinstance(days, int) or not 0 < days <= MAX_VALIDITY_DAYS:
                raise InvalidInput(f"validity_days must be between 1 and {MAX_VALIDITY_DAYS}")
        if "profiles" in changes:
            changes["profiles"] = self._profiles(changes["profiles"] or {})
        for name in ("caa_check_ca_ids", "caa_identities"):
            if name in changes and changes[name] is None:
                changes[name] = []
        for name, value in changes.items():
            if name in SETTING_FIELDS:
                setattr(row, name, value)
        row.updated_at = self.now
        self.repos.acme.flush()
        audit.record(
            self.repos.audit,
            self.actor,
            "acme.settings.update",
            "acme_settings",
            row.org_id,
            {"changed": sorted(changes)},
        )
        return row

    def _check_ca(self, ca_id: int, current: int | None) -> None:
        """Only a newly chosen CA is refused for having expired: a form sent back whole, the
        CA unchanged, saves the other settings (issuance refuses the expired CA anyway)."""
        ca = self.repos.cas.get(ca_id)
        if ca is None:
            raise InvalidInput(f"CA {ca_id} not found")
        refusal = signing_refusal(ca, now=self.now if ca_id != current else None)
        refusal = refusal or chain_refusal(self.repos, ca)
        if refusal is not None:
            raise InvalidInput(f"CA {ca_id} cannot sign: {refusal}")

    def _check_template(self, template_id: int) -> None:
        template = self.repos.templates.get(template_id)
        if template is None:
            raise InvalidInput(f"template {template_id} not found")
        if template.is_ca:
            raise InvalidInput(f"template {template_id} is a CA template")

    def _profiles(self, profiles: dict[str, Any]) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for name, spec in profiles.items():
            if not PROFILE_NAME.fullmatch(name):
                raise InvalidInput(f"profile name {name[:64]!r} must be 1-64 letters, digits, .-_")
            template_id = spec.get("template_id")
            if template_id is not None:
                self._check_template(template_id)
            days = spec.get("validity_days")
            if days is not None and not 0 < days <= MAX_VALIDITY_DAYS:
                raise InvalidInput(f"profile {name}: validity_days out of range")
            checked[name] = {
                "description": spec.get("description") or name,
                "template_id": template_id,
                "validity_days": days,
            }
        return checked

    # EAB keys
    def create_eab(self, comment: str | None) -> NewEabKey:
        secret = new_hmac_key()
        row = self.repos.acme.add_eab(
            AcmeEabKey(
                kid=f"kid-{secrets.token_urlsafe(12)}",
                encrypted_hmac_key=encrypt_hmac(self.keys, secret),
                comment=comment,
                created_by=self.actor.username,
                created_at=self.now,
            )
        )
        audit.record(
            self.repos.audit,
            self.actor,
            "acme.eab.create",
            "acme_eab_key",
            row.id,
            {"kid": row.kid},
        )
        return NewEabKey(row, b64encode(secret))

    def revoke_eab(self, key_id: int) -> AcmeEabKey:
        row = self.repos.acme.eab(key_id)
        if row is None:
            raise NotFound(f"EAB key {key_id} not found")
        if row.revoked_at is not None:
            raise Conflict(f"EAB key {key_id} is revoked already")
        row.revoked_at = self.now
        audit.record(
            self.repos.audit,
            self.actor,
            "acme.eab.revoke",
            "acme_eab_key",
            row.id,
            {"kid": row.kid},
        )
        return row

    # accounts and orders
    def account(self, account_id: int) -> AcmeAccount:
        row = self.repos.acme.account(account_id)
        if row is None:
            raise NotFound(f"ACME account {account_id} not found")
        return row

    def deactivate_account(self, account_id: int) -> AcmeAccount:
        row = self.account(account_id)
        if row.status != "valid":
            raise Conflict(f"ACME account {account_id} is {row.status} already")
        row.status = "revoked"  # RFC 8555 7.1.2: deactivated is what a client does itself
        self.repos.acme.cancel_pending(row.id)
        audit.record(
            self.repos.audit,
            self.actor,
            "acme.account.deactivate",
            "acme_account",
            row.id,
            {"by": "administrator"},
        )
        return row

    def order(self, order_id: int) -> AcmeOrder:
        row = self.repos.acme.order(order_id)
        if row is None:
            raise NotFound(f"ACME order {order_id} not found")
        return row
