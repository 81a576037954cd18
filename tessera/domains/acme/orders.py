"""ACME orders (RFC 8555 7.4): new-order with its authorizations and challenges, challenge
responses (validated later by the background job), finalize through the one issuance path,
and the administrator's approval when the settings ask for one."""

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from tessera.core import inspect
from tessera.core.clock import wire_time
from tessera.core.errors import (
    Conflict,
    InvalidInput,
    IssuerNotValid,
    NotFound,
    PolicyViolation,
    UnparsableInput,
)
from tessera.core.formats import csr_pem, load_certificate, load_csr, same_public_key
from tessera.core.profile import CertificateRequest
from tessera.domains import audit
from tessera.domains.acme.accounts import acme_actor
from tessera.domains.acme.identifiers import (
    Identifier,
    check_csr_matches,
    identifier,
    identifier_of,
    parse_identifiers,
)
from tessera.domains.acme.issuing import issuing_ca, unavailable
from tessera.domains.issuance import Issuance, deferred, write_issued
from tessera.protocols.acme import jws
from tessera.protocols.acme.problems import (
    AcmeProblem,
    authorization_failed,
    malformed,
    unauthorized,
)
from tessera.storage import models
from tessera.storage.models_acme import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeOrder,
    AcmeSettings,
)
from tessera.storage.repositories import Repositories

ORDER_LIFETIME = timedelta(days=7)
MAX_CSR_BYTES = 16384
ALREADY_REPLACED = "an order already replaces this certificate"


@dataclass
class Orders:
    issuance: Issuance
    now: datetime

    @property
    def repos(self) -> Repositories:
        return self.issuance.repos

    def settings(self) -> AcmeSettings:
        return self.repos.acme.settings()

    # creation
    def new_order(self, account: AcmeAccount, payload: dict[str, Any]) -> AcmeOrder:
        settings = self.settings()
        # Finalize could not issue: say so before the client proves its names for nothing.
        ca = issuing_ca(self.repos, settings, self.now)
        identifiers = parse_identifiers(payload.get("identifiers"))
        profile = self._profile(settings, payload.get("profile"))
        not_before, not_after = self._window(payload, self._max_days(settings, profile))
        _check_end_within(not_after, ca)
        replaces = payload.get("replaces")
        if replaces is not None:
            replaces = self._check_replaces(account, replaces, identifiers)
        added = self.repos.acme.add_order(
            AcmeOrder(
                account_id=account.id,
                status="pending",
                expires_at=self.now + ORDER_LIFETIME,
                identifiers=[i.as_json() for i in identifiers],
                not_before=not_before,
                not_after=not_after,
                profile=profile,
                replaces=replaces,
                awaiting_approval=False,
                created_at=self.now,
            )
        )
        if added is None:  # another new-order replacing it was written first
            raise AcmeProblem("alreadyReplaced", ALREADY_REPLACED, 409)
        order = added
        self._authorizations(order, identifiers)
        self._audit(
            account.id,
            "acme.order.create",
            order.id,
            {
                "identifiers": [i.value for i in identifiers],
                "profile": profile,
            },
        )
        return order

    def _profile(self, settings: AcmeSettings, name: object) -> str | None:
        if name is None:
            return None
        if not isinstance(name, str) or name not in (settings.profiles or {}):
            raise AcmeProblem("invalidProfile", f"unknown profile {str(name)[:64]!r}")
        return name

    def _max_days(self, settings: AcmeSettings, profile: str | None) -> int:
        """The profile's own validity, else its template's, else the server's default; never
        beyond the template issuance applies, which would refuse a longer request."""
        spec = _profile_spec(settings, profile)
        days = spec.get("validity_days")
        asked: int | None
        if isinstance(days, int) and days > 0:
            asked = days
        elif isinstance(spec.get("template_id"), int):
            asked = None  # the profile's template sets the validity
        else:
            asked = settings.validity_days
        template = self._template(settings, profile)
        found = [d for d in (asked, template.validity_days if template else None) if d]
        return min(found) if found else settings.validity_days

    def _template(self, settings: AcmeSettings, profile: str | None) -> models.Template | None:
        """The profile's template when it names one, else the ACME settings' template."""
        template_id = _profile_spec(settings, profile).get("template_id")
        if not isinstance(template_id, int):
            template_id = settings.template_id
        return self.repos.templates.get(template_id) if template_id else None

    def _window(
        self, payload: dict[str, Any], max_days: int
    ) -> tuple[datetime | None, datetime | None]:
        not_before = _timestamp(payload.get("notBefore"), "notBefore")
        not_after = _timestamp(payload.get("notAfter"), "notAfter")
        if not_before is not None and abs(not_before - self.now) > timedelta(minutes=5):
            raise malformed(
                "certificates start when they are issued: a notBefore more than five minutes"
                " from now (in the future or the past) is refused"
            )
        if not_after is not None:
            if not_before is not None and not_after <= not_before:
                raise malformed("notAfter must be later than notBefore")
            if not_after <= self.now:
                raise malformed("notAfter is in the past")
            if not_after > self.now + timedelta(days=max_days):
                raise malformed(f"notAfter is beyond the {max_days} days this server issues for")
        return not_before, not_after

    def _check_replaces(
        self, account: AcmeAccount, certid: object, identifiers: list[Identifier]
    ) -> str:
        """The replaced certificate's identifier, as the renewal information writes it. RFC
        9773 5: a certificate this account ordered, sharing a name with the new order, and
        not replaced by another order yet."""
        from tessera.domains.acme.renewal import certid_of, lookup_certificate

        if not isinstance(certid, str):
            raise malformed("replaces must be an ARI certificate identifier")
        cert = lookup_certificate(self.repos, certid)
        if cert is None:  # a field of the request, not its URL: no 404
            raise malformed("replaces names no certificate issued here")
        order = self.repos.acme.order_for_certificate(cert.id)
        if order is None or order.account_id != account.id:
            raise unauthorized("replaces names a certificate this account did not order")
        if not {(i["type"], i["value"]) for i in order.identifiers} & {
            (i.type, i.value) for i in identifiers
        }:
            raise malformed("the order shares no identifier with the certificate it replaces")
        canonical = certid_of(load_certificate(cert.certificate_pem.encode()))
        replacing = self.repos.acme.replaced(canonical)
        # An order that expired unfinished is invalid (RFC 8555 7.1.6): `refresh` marks it so
        # here, before the cleanup job does, and it no longer holds the certificate.
        if replacing is not None and self.refresh(replacing).status != "invalid":
            raise AcmeProblem("alreadyReplaced", ALREADY_REPLACED, 409)
        return canonical

    def _authorizations(self, order: AcmeOrder, identifiers: list[Identifier]) -> None:
        """One authorization per identifier and its challenges, each kind written in one
        statement: the order's INSERT took SQLite's write lock, held until the commit."""
        authzs = self.repos.acme.add_authorizations(
            [
                AcmeAuthorization(
                    order_id=order.id,
                    account_id=order.account_id,
                    identifier_type=ident.type,
                    identifier_value=ident.base,
                    wildcard=ident.wildcard,
                    status="pending",
                    expires_at=order.expires_at,
                )
                for ident in identifiers
            ]
        )
        self.repos.acme.add_challenges(
            [
                AcmeChallenge(
                    authz_id=authz.id,
                    type=kind,
                    token=secrets.token_urlsafe(32),
                    status="pending",
                    attempts=0,
                )
                for authz, ident in zip(authzs, identifiers, strict=True)
                for kind in _challenge_kinds(ident)
            ]
        )

    # reading, owned by the account
    def order(self, account: AcmeAccount, order_id: int) -> AcmeOrder:
        order = self.repos.acme.order(order_id)
        if order is None:
            raise AcmeProblem("malformed", "no such order", 404)
        if order.account_id != account.id:
            raise unauthorized("this order belongs to another account")
        return order

    def authorization(self, account: AcmeAccount, authz_id: int) -> AcmeAuthorization:
        authz = self.repos.acme.authorization(authz_id)
        if authz is None:
            raise AcmeProblem("malformed", "no such authorization", 404)
        if authz.account_id != account.id:
            raise unauthorized("this authorization belongs to another account")
        if authz.status in ("pending", "valid") and authz.expires_at <= self.now:
            # RFC 8555 7.1.6, as read: the cleanup job that marks it runs only every so often
            authz.status = "expired"
        return authz

    def deactivate(self, account: AcmeAccount, authz: AcmeAuthorization) -> None:
        if authz.status not in ("pending", "valid"):
            raise malformed(f"an authorization that is {authz.status} cannot be deactivated")
        authz.status = "deactivated"
        order = self.repos.acme.order(authz.order_id)
        if order is not None and order.status in ("pending", "ready"):
            order.status = "invalid"
            order.error = _authorization_lost(authz)
        elif order is not None and _awaiting_approval(order):
            # RFC 8555 7.5.2: no longer enough to issue on; an approval may not come first.
            lost = {"status": "invalid", "awaiting_approval": False}
            self.repos.acme.claim_order(order, AWAITING, **lost, error=_authorization_lost(authz))
        self._audit(account.id, "acme.authz.deactivate", authz.id, {})

    def respond(
        self, account: AcmeAccount, challenge_id: int, lease: timedelta
    ) -> tuple[AcmeChallenge, AcmeAuthorization, bool]:
        """The client says it is ready: the challenge goes to the validation job of the
        process that took the request, claimed for it for `lease` (should that process not
        get to it, the lease runs out and any process's job takes it up). The flag says
        whether this request queued it (a repeated POST does not queue it again)."""
        challenge, authz = self.challenge_view(account, challenge_id)
        if challenge.status != "pending" or authz.status != "pending":
            return challenge, authz, False
        if authz.expires_at <= self.now:
            raise malformed("the authorization has expired")
        challenge.status, challenge.next_attempt_at = "processing", self.now + lease
        challenge.attempts += 1  # this claim is the first attempt (the job counts its own)
        self.repos.acme.flush()
        return challenge, authz, True

    def challenge_view(
        self, account: AcmeAccount, challenge_id: int
    ) -> tuple[AcmeChallenge, AcmeAuthorization]:
        found = self.repos.acme.challenge(challenge_id)
        if found is None:
            raise AcmeProblem("malformed", "no such challenge", 404)
        if found[1].account_id != account.id:
            raise unauthorized("this challenge belongs to another account")
        return found

    # finalize
    def finalize(self, account: AcmeAccount, order: AcmeOrder, payload: dict[str, Any]) -> bool:
        """Returns True when a certificate was issued now (False: waiting for approval)."""
        self.refresh(order)
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready", 403)
        issuing_ca(self.repos, self.settings(), self.now)  # before queueing it for an approval
        csr = self._csr(account, order, payload.get("csr"))
        _check_profile_offered(self.settings(), order)
        if self.settings().require_approval:
            waiting = {"status": "processing", "awaiting_approval": True, "csr_pem": csr_pem(csr)}
            if not self.repos.acme.claim_order(order, FINALIZABLE, **waiting):
                raise _finalized_meanwhile()
            self._audit(account.id, "acme.order.await_approval", order.id, {})
            return False
        self.issue(order, csr)
        return True

    def _csr(
        self, account: AcmeAccount, order: AcmeOrder, raw: object
    ) -> x509.CertificateSigningRequest:
        der = jws.b64decode(raw, "csr")
        if not der or len(der) > MAX_CSR_BYTES:
            raise AcmeProblem("badCSR", "the CSR is empty or too large")
        try:
            csr = load_csr(der)
        except (UnparsableInput, InvalidInput, PolicyViolation) as exc:
            raise AcmeProblem("badCSR", exc.message) from exc
        check_csr_matches(csr, [identifier(i["type"], i["value"]) for i in order.identifiers])
        _refuse_must_staple(csr)
        if self._is_account_key(account, csr.public_key()):
            raise AcmeProblem("badCSR", "the certificate key is an ACME account key")
        if self.repos.certificates.key_compromised(inspect.public_key_sha256(csr)):
            raise AcmeProblem("badCSR", "this key was revoked as compromised; it is not certified")
        return csr

    def _is_account_key(self, account: AcmeAccount, key: CertificatePublicKeyTypes) -> bool:
        """RFC 8555 11.1: a CSR must not carry "a public key for any known account key pair":
        the requesting account's (compared as keys), or any other account's, in any status
        (by its RFC 7638 thumbprint)."""
        if same_public_key(key, jws.public_key(account.jwk)):
            return True
        jwk = jws.jwk_of(key)
        return jwk is not None and self.repos.acme.is_account_key(jws.thumbprint(jwk))

    def issue(self, order: AcmeOrder, csr: x509.CertificateSigningRequest) -> models.Certificate:
        """The one issuance path, with the issuing CA's ACME template (or the profile's)."""
        settings = self.settings()
        # Asked again: the CA may have expired, been revoked or disabled since new-order. Its
        # refusal is the same 503 as there, not a `badCSR` the client could do nothing about.
        ca = issuing_ca(self.repos, settings, self.now)
        _check_profile_offered(settings, order)
        _check_end_within(order.not_after, ca)  # the CA may have been changed since new-order
        template = self._template(settings, order.profile)
        idents = [identifier(i["type"], i["value"]) for i in order.identifiers]
        request = CertificateRequest(
            subject=_subject(idents, csr),
            public_key=csr.public_key(),
            sans=tuple(_general_name(i) for i in idents),
            validity_days=self._days(order, settings),
            not_after=order.not_after,
            requester=f"acme:account/{order.account_id}",
            origin="acme",
        )
        self._refuse_lost_authorization(order)
        # Signed first, written after the order is claimed: nothing takes SQLite's write lock
        # during the signing, and a request that loses the claim has written nothing.
        with deferred(self.repos.session.info) as issued:
            try:
                cert = self.issuance.issue_certificate(request, ca, template)
            except IssuerNotValid as exc:  # expired (or started) since issuing_ca looked
                raise unavailable(exc.message) from exc
            except (PolicyViolation, InvalidInput) as exc:
                raise AcmeProblem("badCSR", exc.message) from exc
        done = {"status": "valid", "awaiting_approval": False, "csr_pem": csr_pem(csr)}
        expected = AWAITING if order.awaiting_approval else FINALIZABLE
        if not self.repos.acme.claim_order(order, expected, **done):
            raise _finalized_meanwhile()
        write_issued(issued)
        self.repos.acme.set_order_certificate(order, cert.id)
        self._audit(order.account_id, "acme.order.finalize", order.id, {"certificate_id": cert.id})
        return cert

    def _refuse_lost_authorization(self, order: AcmeOrder) -> None:
        """RFC 8555 7.1.6 and 7.5.2: nothing is issued for an order that has expired or one of
        whose authorizations is no longer valid (deactivated, or past its expiry before the
        cleanup job marked it). Checked right before signing: for an order waiting for an
        administrator's approval that may be days after its finalize."""
        if order.expires_at <= self.now:
            raise AcmeProblem("orderNotReady", "the order has expired", 403)
        for authz in self.repos.acme.order_authorizations(order.id):
            status = "expired" if authz.expires_at <= self.now else authz.status
            if status != "valid":
                name = authz.identifier_value
                raise AcmeProblem("orderNotReady", f"the authorization for {name} is {status}", 403)

    def _days(self, order: AcmeOrder, settings: AcmeSettings) -> int:
        """Whole days, rounded up to cover the asked end (which the authority then sets
        exactly, `not_after`)."""
        days = self._max_days(settings, order.profile)
        if order.not_after is not None:
            days = min(days, max(1, math.ceil((order.not_after - self.now) / timedelta(days=1))))
        return days

    def refresh(self, order: AcmeOrder) -> AcmeOrder:
        """Derive the order's status from its authorizations (RFC 8555 7.1.6). An order
        that expired before it was finalized is invalid, ready or not."""
        if order.expires_at <= self.now:
            if order.status in ("pending", "ready"):
                order.status = "invalid"
            elif _awaiting_approval(order):  # only if no administrator decided meanwhile
                self.repos.acme.claim_order(
                    order, AWAITING, status="invalid", awaiting_approval=False
                )
            return order
        if order.status == "pending":
            authzs = self.repos.acme.order_authorizations(order.id)
            statuses = {a.status for a in authzs}
            if statuses == {"valid"}:
                order.status = "ready"
            elif statuses - {"valid", "pending"}:
                order.status = "invalid"
                lost = next(a for a in authzs if a.status not in ("valid", "pending"))
                order.error = self._authorization_error(lost)
        return order

    def _authorization_error(self, authz: AcmeAuthorization) -> dict[str, Any]:
        """Why an order is invalid because of this authorization (RFC 8555 7.1.3 `error`)."""
        if authz.status == "invalid":
            failed = [c for c in self.repos.acme.authorization_challenges(authz.id) if c.error]
            if failed:
                return authorization_failed(identifier_of(authz), failed[0].error or {})
        return _authorization_lost(authz)

    # administrator decisions (management API)
    def approve(self, order_id: int) -> AcmeOrder:
        order = self._awaiting(order_id)
        if order.csr_pem is None:
            raise InvalidInput("the order has no CSR")
        try:
            self.issue(order, load_csr(order.csr_pem.encode()))
        except AcmeProblem as exc:
            # Decided meanwhile, expired, an authorization lost; the CA cannot issue now, or
            # not for as long as the order asks; its CSR or profile refused now: whatever
            # the client would have been told, the administrator gets the native API's error.
            raise Conflict(f"ACME order {order_id} cannot be issued: {exc.message}") from exc
        return order

    def reject(self, order_id: int, reason: str | None) -> AcmeOrder:
        order = self._awaiting(order_id)
        error = AcmeProblem("unauthorized", reason or "rejected by an administrator", 403)
        rejected = {"status": "invalid", "awaiting_approval": False, "error": error.document()}
        if not self.repos.acme.claim_order(order, AWAITING, **rejected):
            raise Conflict(f"ACME order {order_id} has been decided meanwhile")
        self._audit(order.account_id, "acme.order.reject", order.id, {"reason": reason})
        return order

    def _awaiting(self, order_id: int) -> AcmeOrder:
        order = self.repos.acme.order(order_id)
        if order is None:
            raise NotFound(f"ACME order {order_id} not found")
        if not order.awaiting_approval:
            raise InvalidInput(f"ACME order {order_id} is not waiting for approval")
        return order

    def _audit(
        self, account_id: int, action: str, resource_id: int, details: dict[str, Any]
    ) -> None:
        actor = self.issuance.actor
        if actor.role == "acme" or actor.username == "anonymous":
            actor = acme_actor(actor, account_id)
        audit.record(self.repos.audit, actor, action, "acme_order", resource_id, details)


def _check_profile_offered(settings: AcmeSettings, order: AcmeOrder) -> None:
    """The order's profile is still offered: one withdrawn since the order was created would
    otherwise be issued under the server's defaults while the order names the profile."""
    if order.profile and order.profile not in (settings.profiles or {}):
        raise AcmeProblem("invalidProfile", f"the profile {order.profile!r} is no longer offered")


def _check_end_within(not_after: datetime | None, ca: models.CertificateAuthority) -> None:
    """RFC 8555 7.4: the server "MUST NOT issue a certificate with contents other than those
    requested", and a certificate ends with its issuer at the latest (the authority cuts it
    there): a notAfter past the issuing CA's end is refused, not issued ending earlier."""
    if not_after is not None and not_after > ca.not_after:
        end = wire_time(ca.not_after)
        raise malformed(f"notAfter is beyond the end of the issuing CA's validity ({end})")


def _refuse_must_staple(csr: x509.CertificateSigningRequest) -> None:
    """RFC 8555 7.4: the server "MUST NOT issue a certificate with contents other than those
    requested". OCSP Must-Staple (the TLS Feature extension, RFC 7633) is the one request
    of a CSR beyond its names whose silent omission its subscriber would not notice, and
    the authority does not issue it: refused rather than dropped, as Let's Encrypt does."""
    try:
        csr.extensions.get_extension_for_class(x509.TLSFeature)
    except x509.ExtensionNotFound:
        return
    except ValueError as exc:
        raise AcmeProblem("badCSR", "the CSR's extensions cannot be read") from exc
    raise AcmeProblem(
        "badCSR", "the CSR asks for OCSP Must-Staple (TLS Feature), which this CA does not issue"
    )


def _profile_spec(settings: AcmeSettings, profile: str | None) -> dict[str, Any]:
    spec = (settings.profiles or {}).get(profile) if profile else None
    return spec if isinstance(spec, dict) else {}


def _timestamp(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed(f"{name} must be an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise malformed(f"{name} must be an RFC 3339 timestamp") from exc
    if moment.tzinfo is None:
        raise malformed(f"{name} needs a time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 1 at +14:00
        raise malformed(f"{name} is out of range") from exc


def _subject(idents: list[Identifier], csr: x509.CertificateSigningRequest) -> x509.Name:
    """A DNS name as CN when one fits (CAs still often read CN); else no subject and the SAN
    extension becomes critical (RFC 5280 4.2.1.6). The CSR's CN when it is one of the
    order's DNS names (in the order's form): the identifiers are a set (RFC 8555 7.4), so
    their order in new-order is no choice of the client's, the CN of its CSR is. Otherwise
    the first DNS identifier."""
    fitting = [i.value for i in idents if i.type == "dns" and len(i.value) <= 64]
    asked = [
        str(attribute.value).lower()
        for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    chosen = next((cn for cn in asked if cn in fitting), fitting[0] if fitting else None)
    if chosen is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, chosen)])


def _general_name(ident: Identifier) -> x509.GeneralName:
    import ipaddress

    if ident.type == "ip":
        return x509.IPAddress(ipaddress.ip_address(ident.value))
    return x509.DNSName(ident.value)


def _challenge_kinds(ident: Identifier) -> list[str]:
    if ident.wildcard:
        return ["dns-01"]  # RFC 8555 7.1.3: only dns-01 proves a wildcard
    if ident.type == "ip":
        return ["http-01", "tls-alpn-01"]  # RFC 8738: no dns-01 for addresses
    return ["http-01", "dns-01", "tls-alpn-01"]


def _authorization_lost(authz: AcmeAuthorization) -> dict[str, Any]:
    cause = AcmeProblem("unauthorized", f"the authorization is {authz.status}", 403)
    return authorization_failed(identifier_of(authz), cause.document())


# The stored statuses an order may be claimed from (AcmeRepository.claim_order): a finalize
# finds it ready, stored as pending (readiness is derived when read) or as ready; an
# administrator's decision finds it processing, waiting for the approval.
FINALIZABLE = ("pending", "ready")
AWAITING = ("processing",)


def _awaiting_approval(order: AcmeOrder) -> bool:
    return order.status == "processing" and bool(order.awaiting_approval)


def _finalized_meanwhile() -> AcmeProblem:
    return AcmeProblem("orderNotReady", "the order has been finalized by another request", 403)
