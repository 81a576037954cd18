"""ACME accounts (RFC 8555 7.3): creation (with onlyReturnExisting and external account
binding), contact updates, deactivation and key rollover."""

import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tessera.core.errors import NotFound
from tessera.core.keystore import KeyEncryptor
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.protocols.acme import jws
from tessera.protocols.acme.problems import AcmeProblem, inactive_account, malformed, unauthorized
from tessera.storage.models_acme import AcmeAccount, AcmeEabKey
from tessera.storage.repositories import Repositories

MAX_CONTACTS = 10
# An address's local part as a mailto URL carries it unencoded: RFC 5322 atext and dots, less
# "?", "#" and "%" (the URL's hfields, fragment and escapes); a domain of LDH labels.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!$&'*+/=^_`{|}~.-]+")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
EAB_KEY_BYTES = 32


def acme_actor(actor: Actor, account_id: int | None) -> Actor:
    name = f"acme:account/{account_id}" if account_id is not None else "acme"
    return replace(actor, username=name, role="acme", permissions=frozenset())


def check_contacts(raw: object) -> list[str]:
    """RFC 8555 7.3: a scheme other than mailto is `unsupportedContact`; a mailto URL that is
    not one plain address (no hfields, RFC 6068) is `invalidContact`."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_CONTACTS:
        raise malformed(f"contact must be a list of at most {MAX_CONTACTS} URLs")
    contacts = []
    for item in raw:
        if not isinstance(item, str):
            raise malformed("each contact must be a URL (a string)")
        scheme, colon, address = item.partition(":")
        if not colon or scheme.lower() != "mailto":
            raise AcmeProblem(
                "unsupportedContact", f"{item[:80]!r}: only mailto: contacts are supported"
            )
        if len(item) > 254 or not _mailbox(address):
            raise AcmeProblem("invalidContact", f"{item[:80]!r} is not a single email address")
        contacts.append(f"mailto:{address}")  # URI schemes are case-insensitive (RFC 3986 3.1)
    return contacts


def _mailbox(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(
        at
        and _LOCAL_PART.fullmatch(local)
        and ".." not in local
        and not local.startswith(".")
        and not local.endswith(".")
        and all(_DOMAIN_LABEL.fullmatch(label) for label in domain.split("."))
    )


@dataclass
class Accounts:
    repos: Repositories
    actor: Actor
    keys: KeyEncryptor
    now: datetime
    base: str  # the directory's base URL, for Location headers

    def find(self, account_id: int) -> AcmeAccount:
        account = self.repos.acme.account(account_id)
        if account is None:
            raise AcmeProblem("accountDoesNotExist", "no such account", 400)
        return account

    def new_account(
        self, jwk: dict[str, Any], payload: dict[str, Any], url: str
    ) -> tuple[AcmeAccount, bool]:
        thumbprint = jws.thumbprint(jwk)
        existing = self.repos.acme.account_by_thumbprint(thumbprint)
        if existing is not None:
            return _usable_existing(existing), False
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
        settings = self.repos.acme.settings()
        terms = settings.terms_of_service
        if terms and payload.get("termsOfServiceAgreed") is not True:
            # RFC 8555 7.3.3: a userActionRequired error is a 403, with the terms to agree
            # to by Link and as the problem's instance
            raise AcmeProblem(
                "userActionRequired",
                "agree to the terms of service first",
                403,
                headers={"Link": f'<{terms}>;rel="terms-of-service"'},
                extra={"instance": terms},
            )
        contacts = check_contacts(payload.get("contact"))
        binding = payload.get("externalAccountBinding")
        if binding is None and settings.require_eab:
            raise AcmeProblem(
                "externalAccountRequired", "this server requires an external account binding"
            )
        key = self._eab_key(binding, jwk, url) if binding is not None else None
        account = self.repos.acme.add_account(
            AcmeAccount(
                thumbprint=thumbprint,
                jwk=jws.public_jwk(jwk),
                contact=contacts,
                status="valid",
                terms_agreed=payload.get("termsOfServiceAgreed") is True,
                eab_kid=key.kid if key else None,
                created_at=self.now,
            )
        )
        if account is None:  # the same key, registered meanwhile by a racing request
            existing = self.repos.acme.account_by_thumbprint(thumbprint)
            if existing is None:
                raise unauthorized("this key belongs to an account of another organization")
            return _usable_existing(existing), False
        if key is not None and not self.repos.acme.bind_eab(key, account.id):
            raise unauthorized("the external account binding key was used already")
        details = {"eab_kid": key.kid if key else None, "contacts": len(contacts)}
        self._audit("acme.account.create", account.id, details)
        return account, True

    def _eab_key(self, binding: object, jwk: dict[str, Any], url: str) -> AcmeEabKey:
        if not isinstance(binding, dict):
            raise malformed("externalAccountBinding must be a JWS object")
        inner = jws.parse(binding, algorithms=("HS256", "HS384", "HS512"))
        if inner.kid is None or "nonce" in inner.protected:
            raise malformed("the binding needs a kid and no nonce")
        if inner.url != url:
            raise unauthorized("the binding's url is not the new-account URL")
        key = self.repos.acme.eab_by_kid(inner.kid)
        if key is None or key.revoked_at is not None:
            raise unauthorized("unknown or revoked external account binding key")
        if key.account_id is not None:
            raise unauthorized("the external account binding key was used already")
        if not jws.verify_hmac(inner, decrypt_hmac(self.keys, key.encrypted_hmac_key)):
            raise unauthorized("the external account binding signature does not verify")
        if jws.public_jwk(inner.json_payload()) != jws.public_jwk(jwk):
            raise unauthorized("the binding does not sign this account key")
        return key

    def update(self, account: AcmeAccount, payload: dict[str, Any]) -> AcmeAccount:
        """RFC 8555 7.3.2: the contacts change; the server "MUST ignore any updates to the
        "orders" field, "termsOfServiceAgreed" field (see Section 7.3.3), the "status" field
        (except as allowed by Section 7.3.6)": only a deactivation changes the status, and
        the terms are agreed to when the account is created."""
        if payload.get("status") == "deactivated":
            account.status = "deactivated"
            self.repos.acme.cancel_pending(account.id)
            self._audit("acme.account.deactivate", account.id, {})
            return account
        if "contact" in payload:
            account.contact = check_contacts(payload["contact"])
            self._audit("acme.account.update", account.id, {"contacts": len(account.contact)})
        return account

    def key_change(self, account: AcmeAccount, outer_url: str, payload: dict[str, Any]) -> None:
        """RFC 8555 7.3.5: the inner JWS is signed by the new key, over the account URL and
        the old key."""
        inner = jws.parse(payload)
        new_jwk = inner.jwk
        if new_jwk is None:
            raise malformed("the inner JWS must carry the new key as jwk")
        if "nonce" in inner.protected:
            raise malformed("the inner JWS must not have a nonce")
        if inner.url != outer_url:
            raise malformed("the inner JWS url differs from the outer one")
        jws.verify(inner, jws.public_key(new_jwk))
        body = inner.json_payload()
        if not isinstance(body.get("oldKey"), dict):
            raise malformed("the key-change payload needs oldKey")
        if body.get("account") != f"{self.base}/acct/{account.id}":
            raise malformed("the key-change payload names another account")
        if jws.thumbprint(body["oldKey"]) != account.thumbprint:
            raise unauthorized("oldKey is not the account's current key")
        new_thumbprint = jws.thumbprint(new_jwk)
        taken = self.repos.acme.account_by_thumbprint(new_thumbprint) is not None
        # A rollover racing this one to the same key may take it after the look above: the
        # unique thumbprint refuses the second, which gets the same answer as if it came later.
        if taken or not self.repos.acme.change_key(
            account, new_thumbprint, jws.public_jwk(new_jwk)
        ):
            raise self._key_in_use(new_thumbprint)
        self._audit("acme.account.key_change", account.id, {})

    def _key_in_use(self, thumbprint: str) -> AcmeProblem:
        """RFC 8555 7.3.5: 409 with the URL of the account that has the new key."""
        holder = self.repos.acme.account_by_thumbprint(thumbprint)
        if holder is None:  # the thumbprint is unique server-wide, accounts per organization
            return unauthorized("the new key belongs to an account of another organization")
        location = {"Location": f"{self.base}/acct/{holder.id}"}
        return AcmeProblem("malformed", "another account has the new key", 409, headers=location)

    def _audit(self, action: str, account_id: int, details: dict[str, Any]) -> None:
        audit.record(
            self.repos.audit,
            acme_actor(self.actor, account_id),
            action,
            "acme_account",
            account_id,
            details,
        )


def new_hmac_key() -> bytes:
    return secrets.token_bytes(EAB_KEY_BYTES)


def encrypt_hmac(keys: KeyEncryptor, secret: bytes) -> str:
    return keys.seal(secret)


def decrypt_hmac(keys: KeyEncryptor, token: str) -> bytes:
    return keys.unseal(token)


def eab_key_or_404(repos: Repositories, key_id: int) -> AcmeEabKey:
    key = repos.acme.eab(key_id)
    if key is None:
        raise NotFound(f"EAB key {key_id} not found")
    return key


def _usable_existing(account: AcmeAccount) -> AcmeAccount:
    """The account a new-account request's key already has (RFC 8555 7.3.1: 200 and its
    URL), unless it was deactivated or revoked."""
    if account.status != "valid":
        raise inactive_account(account.status)
    return account
