"""The storage side of the one issuance path: loads the issuer, runs `Authority.issue`, and
writes the certificate (or CA) row and its audit event in the caller's transaction."""

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tessera.core import inspect
from tessera.core.authority import AuditEvent, Authority, Issuer, PublicationURLs, random_serial
from tessera.core.errors import NotFound, PolicyViolation
from tessera.core.formats import cert_pem, load_certificate
from tessera.core.issuer_chain import IssuerChain
from tessera.core.keys import MIN_RSA_BITS, PrivateKey, describe_public_key, enforce_key_floor
from tessera.core.keystore import KeyEncryptor
from tessera.core.lint import check_requested_names
from tessera.core.names import format_san, name_text
from tessera.core.profile import (
    CertificateRequest,
    Template,
    apply_template,
    with_default_sans,
    with_subject_emails,
)
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.serials import SerialPool, claim_one


@dataclass(frozen=True)
class PublicationBase:
    """Builds the CRL and AIA URLs of a CA from the public plain-HTTP base URL."""

    http_base: str
    delta_crls: bool = False  # when on, certificates also point to the delta CRL

    def for_ca(self, ca: models.CertificateAuthority) -> PublicationURLs:
        return PublicationURLs(
            crl=f"{self.http_base}/cdp/{ca.refid}.crl",
            ocsp=f"{self.http_base}/ocsp",
            ca_issuers=f"{self.http_base}/ca/{ca.refid}.cer",
            delta_crl=f"{self.http_base}/cdp/{ca.refid}-delta.crl" if self.delta_crls else None,
        )


# A list in the session's info: issuances append what they have to write to it instead of
# writing it (see _Ledger and write_issued).
DEFERRED = "tessera.issuance.deferred"
IssuedRow = models.Certificate | models.CertificateAuthority


@dataclass
class Issued:
    """What an issuance leaves to write: its row, and its audit event but the row's id (taken
    as the issuance ran: its request's id and status), with its organization's repositories."""

    repos: Repositories
    row: IssuedRow
    event: dict[str, Any]
    vouching: bool = False  # signed by the OCSP responder's CA, which may be disabled

    @property
    def signer_id(self) -> int | None:
        if isinstance(self.row, models.Certificate):
            return self.row.ca_id
        return self.row.parent_id


@contextmanager
def deferred(session_info: dict[str, Any]) -> Iterator[list[Issued]]:
    """Issuances made inside leave their rows and audit events in the list instead of
    writing them; the caller writes them (`write_issued`)."""
    issued: list[Issued] = []
    outer = session_info.get(DEFERRED)
    session_info[DEFERRED] = issued
    try:
        yield issued
    finally:
        if outer is None:
            del session_info[DEFERRED]
        else:  # nested: the enclosing caller's list is back in place
            session_info[DEFERRED] = outer


def write_issued(issued: Sequence[Issued]) -> None:
    """Write the issuances' rows, then their audit rows: per organization one INSERT for the
    certificates and one chain append. A batch of issuances so holds SQLite's write lock for
    a few statements instead of four per certificate."""
    by_org: dict[int, list[Issued]] = {}
    for item in issued:
        by_org.setdefault(item.repos.org_id, []).append(item)
    for org_id in sorted(by_org):  # audit chain heads are locked in id order (see add_many)
        group = by_org[org_id]
        repos = group[0].repos
        _hold_signers(repos, group)
        certificates = [i.row for i in group if isinstance(i.row, models.Certificate)]
        repos.certificates.add_many(certificates)
        for item in group:
            if isinstance(item.row, models.CertificateAuthority):
                repos.cas.add(item.row)
        repos.audit.add_many([{**i.event, "resource_id": str(i.row.id)} for i in group])


def _hold_signers(repos: Repositories, group: list[Issued]) -> None:
    """The issuing CAs, the CAs above them (and templates) were read before the signing: a
    CA disabled, revoked or deleted since then, or a CA above it revoked, must not have
    certificates written under it now. Each is held (before the rows go in, until commit)
    and refused if it no longer may sign, so that a disabling, revocation or deletion either
    waits for the issuance or is seen by it. All in one pass in id order, signers and the
    CAs above them alike: two batches then never wait for each other in a circle (one
    signing from a root and its intermediate, another from the intermediate alone)."""
    signers = {i.signer_id: i.vouching for i in group if i.signer_id is not None}
    strict = {ca_id for ca_id, vouching in signers.items() if not vouching}
    above = _above(repos, strict)
    for ca_id in sorted(signers.keys() | above.keys()):
        if ca_id in signers and not repos.cas.hold_signer(ca_id, active=ca_id in strict):
            raise PolicyViolation(
                f"CA {ca_id} cannot sign: it was disabled, revoked or deleted meanwhile"
            )
        if ca_id in above and ca_id not in strict and not repos.cas.hold_unrevoked([ca_id]):
            raise PolicyViolation(
                f"CA {above[ca_id]} cannot sign: CA {ca_id} above it was revoked meanwhile"
            )
    # Read after the CAs' hold (on SQLite the write lock): a template deleted since the
    # issuance read it would fail the insert on its foreign key, a generic clash.
    templates = {i.row.template_id for i in group if isinstance(i.row, models.Certificate)}
    wanted = {t for t in templates if t is not None}
    missing = wanted - repos.templates.hold_for_issuance(sorted(wanted)) if wanted else set()
    if missing:
        raise NotFound(f"template {min(missing)} not found")


def _above(repos: Repositories, signer_ids: set[int]) -> dict[int, int]:
    """Each CA above a signer (read before the signing, and found unrevoked: one revoked
    since makes what was signed invalid from the start), with a signer below it. From the
    session: the issuances loaded these chains."""
    above: dict[int, int] = {}
    for ca_id in sorted(signer_ids):
        signer = repos.cas.get(ca_id)
        for row in ca_chain(repos, signer)[1:] if signer else []:
            above.setdefault(row.id, ca_id)
    return above


def signing_refusal(
    ca: models.CertificateAuthority,
    may_use_internal_ca: bool = False,
    now: datetime | None = None,
    vouching: bool = False,
    upcoming: bool = False,
) -> str | None:
    """Why `ca` may not sign here, or None when it may: the one rule, applied at every
    issuance (`Issuance.issuer`) and by the settings that choose a CA for ACME or SCEP (and
    the OCSP responder), so that a CA that cannot sign is refused when it is chosen, not at
    the first enrollment. What the CA certificate allows (CA:TRUE, keyCertSign, validity)
    the authority checks when it signs.

    Only the bootstrap (and the OCSP responders) sign with the internal CA: every client of
    the server trusts it, so a certificate it signed for anyone else would let them pass for
    the server.

    With `now`, a CA that has expired or is not valid yet (an imported one dated ahead) is
    refused too: the settings that choose a CA ask, so that one is not accepted only to fail
    every enrollment, and so does ACME's new-order (at issuance the authority checks the CA
    certificate's validity itself, `IssuerNotValid`). An `upcoming` CA (SCEP's next CA of a
    rollover) may start later: RFC 8894 4.7 has it valid "in the future", once the current
    one ends.

    With `vouching` (the OCSP responder's own signer), a disabled CA may sign too: disabling
    a CA stops issuance to subscribers, not the status of what it issued, which relying
    parties keep asking about (its CRLs keep coming as well)."""
    if ca.internal and not may_use_internal_ca:
        return "it is the internal CA, which signs only the server's own TLS certificate"
    if ca.revoked_at is not None and not vouching:
        return f"its certificate was revoked ({ca.revocation_reason})"
    if not ca.is_active and not vouching:
        return "it is disabled"
    if ca.encrypted_private_key is None:
        return "it has no private key here"
    if under_key_floor(ca) and not vouching:
        # An imported CA: the key floor holds for the key that signs as for the one certified.
        # Not for status: its CRLs are signed with it too, and OCSP `unauthorized` instead
        # would let a soft-failing client take a revoked certificate for good.
        return f"its key is RSA-{ca.key_size}, under the {MIN_RSA_BITS}-bit floor"
    if now is not None and ca.not_after <= now:
        return f"it expired on {ca.not_after.date().isoformat()}"
    if now is not None and ca.not_before > now and not upcoming:
        return f"it is not valid before {ca.not_before.isoformat()}"
    return None


def ca_chain(
    repos: Repositories, ca: models.CertificateAuthority
) -> list[models.CertificateAuthority]:
    """The CA and its parents held here up to the root, nearest first (a loop in the links,
    which no import makes, ends the walk)."""
    chain, seen = [ca], {ca.id}
    while chain[-1].parent_id is not None and chain[-1].parent_id not in seen:
        parent = repos.cas.get(chain[-1].parent_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.id)
    return chain


def issuer_chain(repos: Repositories, ca: models.CertificateAuthority) -> IssuerChain:
    return _chain_of(ca_chain(repos, ca))


def _chain_of(rows: list[models.CertificateAuthority]) -> IssuerChain:
    return IssuerChain(tuple(_issuer_certificate(row.certificate_pem) for row in rows))


def chain_refusal(repos: Repositories, ca: models.CertificateAuthority) -> str | None:
    """Why nothing `ca` signs would validate under the chain held here (a CA above it
    revoked, a path length above it spent, or the CA itself outside the name constraints
    above it), or None. Asked by the settings that choose a CA, like `signing_refusal`, so
    such a CA is refused when chosen."""
    rows = ca_chain(repos, ca)
    return revoked_above(rows) or _chain_of(rows).broken()


def revoked_above(chain: list[models.CertificateAuthority]) -> str | None:
    """A CA above the first of `chain` whose certificate was revoked: relying parties refuse
    every path through it."""
    for row in chain[1:]:
        if row.revoked_at is not None:
            return f"CA {row.id} above it was revoked ({row.revocation_reason})"
    return None


def under_key_floor(ca: models.CertificateAuthority) -> bool:
    return ca.key_algorithm == "RSA" and ca.key_size < MIN_RSA_BITS


@dataclass
class Issuance:
    """Everything issuance needs beyond the request; built once per unit of work."""

    repos: Repositories
    authority: Authority
    keys: KeyEncryptor
    publication: PublicationBase
    actor: Actor
    serials: SerialPool | None = None  # the process's pre-claimed serials, when it has one
    may_use_internal_ca: bool = False  # see signing_refusal
    vouching: bool = False  # the OCSP responder's signer: see signing_refusal

    def issuer(self, ca: models.CertificateAuthority, upcoming: bool = False) -> Issuer:
        """`upcoming`: the next CA of a SCEP rollover, which signs its RA before it is valid
        (the authority refuses any other CA outside its validity; see signing_refusal)."""
        refusal = signing_refusal(ca, self.may_use_internal_ca, vouching=self.vouching)
        if refusal is not None:
            raise PolicyViolation(f"CA {ca.id} cannot sign: {refusal}")
        assert ca.encrypted_private_key is not None  # a CA without its key was refused
        rows = ca_chain(self.repos, ca)
        above = None if self.vouching else revoked_above(rows)
        if above is not None:
            raise PolicyViolation(f"CA {ca.id} cannot sign: {above}")
        certificate, *ancestors = _chain_of(rows).certificates
        return Issuer(
            certificate=certificate,
            key=self.keys.decrypt(ca.encrypted_private_key),
            urls=self.publication.for_ca(ca),
            ancestors=tuple(ancestors),
            upcoming=upcoming,
        )

    def issuer_chain(self, ca: models.CertificateAuthority) -> IssuerChain:
        """The CA's certificate and its issuers held here, whose name constraints and path
        lengths relying parties apply to what it signs (core/issuer_chain.py)."""
        return issuer_chain(self.repos, ca)

    def issue_certificate(
        self,
        request: CertificateRequest,
        ca: models.CertificateAuthority,
        template: models.Template | None = None,
        private_key: PrivateKey | None = None,
        fresh_key: bool = False,
        upcoming: bool = False,
    ) -> models.Certificate:
        """Every leaf, from any front end. One that asks for no SAN gets its host-like CN as
        one here, before signing, so that the row's names are the ones signed. A key that
        came from outside (`fresh_key` False: a CSR's, an attached one) is never certified
        again once revoked as compromised, whatever the path (SCEP, CSR signing, the API)."""
        if not fresh_key:
            self._refuse_compromised(request.public_key)
        request = with_default_sans(request)

        def prepare(cert: x509.Certificate) -> IssuedRow:
            # The names it was asked to sign are what it signed (core/authority.py puts them
            # in the extension as given, then the signed subject's emailAddresses, which a
            # template's subject defaults may have added); reading them back would parse
            # every extension.
            signed = with_subject_emails(replace(request, subject=cert.subject))
            row = certificate_row(cert, self.keys, private_key, imported=False, names=signed.sans)
            row.ca_id, row.origin, row.created_by = ca.id, request.origin, self.actor.username
            row.template_id = template.id if template else None
            rows.append(row)
            return row

        rows: list[models.Certificate] = []
        ledger = self._ledger(prepare)
        issuer = self.issuer(ca, upcoming)
        self.authority.issue(request, issuer, ledger, core_template(template))
        return rows[0]

    def check_signable(
        self,
        request: CertificateRequest,
        ca: models.CertificateAuthority | None,
        template: models.Template | None,
    ) -> None:
        """Refuse now, for a request to be queued for an approval, what no approval could
        get signed: a key under the floor or revoked as compromised, names beyond RFC 5280's
        limits, a conflict with the template, names the name constraints of the CA (or of a
        CA above it) exclude. The rest (the CA's state, validity) is decided when it is
        signed."""
        enforce_key_floor(request.public_key)
        self._refuse_compromised(request.public_key)
        check_requested_names(request.subject, request.sans)
        request = apply_template(request, core_template(template))
        # As the authority will: a subject emailAddress (the template's too) is a SAN then,
        # refused when it is no mailbox.
        request = with_subject_emails(request)
        if ca is not None:
            self.issuer_chain(ca).check_names(request.subject, request.sans, request.is_ca)

    def _refuse_compromised(self, public_key: object) -> None:
        if self.repos.certificates.key_compromised(inspect.key_sha256(public_key)):
            raise PolicyViolation("this key was revoked as compromised; it is not certified again")

    def issue_ca(
        self,
        request: CertificateRequest,
        name: str,
        private_key: PrivateKey,
        parent: models.CertificateAuthority | None,
        internal: bool = False,
        template: models.Template | None = None,
    ) -> models.CertificateAuthority:
        def prepare(cert: x509.Certificate) -> IssuedRow:
            row = ca_row(cert, self.keys.encrypt(private_key), name, parent)
            row.internal = internal
            rows.append(row)
            return row

        rows: list[models.CertificateAuthority] = []
        issuer = self.issuer(parent) if parent else Issuer(None, private_key)
        self.authority.issue(request, issuer, self._ledger(prepare), core_template(template))
        return rows[0]

    def _ledger(self, prepare: Callable[[x509.Certificate], IssuedRow]) -> "_Ledger":
        return _Ledger(self.repos, self.actor, prepare, self.serials, self.vouching)


class _Ledger:
    """Writes what the authority signed: `prepare` builds the row from the certificate, which
    is written with its audit row (`write_issued`). Where the unit of work asks for it
    (`DEFERRED` in its session's info), they wait in that list until the caller writes them,
    so that several issuances can be signed before any of them takes SQLite's write lock."""

    def __init__(
        self,
        repos: Repositories,
        actor: Actor,
        prepare: Callable[[x509.Certificate], IssuedRow],
        pool: SerialPool | None,
        vouching: bool = False,
    ) -> None:
        self._repos, self._actor, self._prepare, self._pool = repos, actor, prepare, pool
        self._vouching = vouching

    def reserve_serial(self) -> int:
        if self._pool is not None:
            return self._pool.take(self._repos.serials)
        return claim_one(self._repos.serials, random_serial)

    def record(self, certificate: x509.Certificate, event: AuditEvent) -> None:
        row = self._prepare(certificate)
        kind = "ca" if isinstance(row, models.CertificateAuthority) else "certificate"
        fields = audit.event(self._actor, event.action, kind, details=event.details)
        issued = Issued(self._repos, row, fields, self._vouching)
        deferred: list[Issued] | None = self._repos.session.info.get(DEFERRED)
        if deferred is None:
            write_issued([issued])
        else:
            deferred.append(issued)


@lru_cache(maxsize=128)
def _issuer_certificate(pem: str) -> x509.Certificate:
    """CA certificates are read on every issuance and never change for a given PEM."""
    return load_certificate(pem.encode())


class TemplateFieldsLike(Protocol):
    """A stored template row or a template being validated: the same fields either way."""

    @property
    def name(self) -> str: ...

    @property
    def validity_days(self) -> int | None: ...

    @property
    def key_algorithm(self) -> str | None: ...

    @property
    def key_size(self) -> int | None: ...

    @property
    def key_usage(self) -> list[str] | None: ...

    @property
    def extended_key_usage(self) -> list[str] | None: ...

    @property
    def is_ca(self) -> bool: ...

    @property
    def path_length(self) -> int | None: ...

    @property
    def subject_defaults(self) -> dict[str, str] | None: ...


def find_template(repos: Repositories, template_id: int | None) -> models.Template | None:
    """The template a request names (in the caller's organization), or none asked for."""
    if template_id is None:
        return None
    template = repos.templates.get(template_id)
    if template is None:
        raise NotFound(f"template {template_id} not found")
    return template


def core_template(row: TemplateFieldsLike | None) -> Template | None:
    if row is None:
        return None
    return Template(
        name=row.name,
        validity_days=row.validity_days,
        key_algorithm=row.key_algorithm,
        key_size=row.key_size,
        key_usage=tuple(row.key_usage) if row.key_usage is not None else None,
        extended_key_usage=(
            tuple(row.extended_key_usage) if row.extended_key_usage is not None else None
        ),
        is_ca=row.is_ca,
        path_length=row.path_length,
        subject_defaults=tuple((row.subject_defaults or {}).items()),
    )


def certificate_row(
    cert: x509.Certificate,
    keys: KeyEncryptor,
    private_key: PrivateKey | None,
    imported: bool = True,
    names: Sequence[x509.GeneralName] | None = None,
) -> models.Certificate:
    key = _key_facts(cert)
    if imported:  # what this authority signs is storable by construction
        _check_storable(cert)
    sans = inspect.sans(cert) if names is None else [format_san(n) for n in names]
    subject = cert.subject  # parsed anew on every access
    return models.Certificate(
        refid=str(uuid.uuid4()),
        serial_number=inspect.serial_hex(cert.serial_number),
        common_name=inspect.common_name(subject)[:200],
        subject=name_text(subject),
        issuer=name_text(cert.issuer),
        san_text=" ".join(sans),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        status="active",
        key_algorithm=key[0],
        key_size=key[1],
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        certificate_pem=cert_pem(cert),
        encrypted_private_key=keys.encrypt(private_key) if private_key is not None else None,
    )


def ca_row(
    cert: x509.Certificate,
    encrypted_key: str | None,
    name: str,
    parent: models.CertificateAuthority | None,
) -> models.CertificateAuthority:
    key = _key_facts(cert)
    _check_storable(cert)
    return models.CertificateAuthority(
        refid=str(uuid.uuid4()),
        name=name[:200],
        common_name=inspect.common_name(cert.subject)[:200],
        ca_type="intermediate" if parent or cert.issuer != cert.subject else "root",
        parent_id=parent.id if parent else None,
        serial_number=inspect.serial_hex(cert.serial_number),
        subject=name_text(cert.subject),
        issuer=name_text(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_algorithm=key[0],
        key_size=key[1],
        signature_algorithm=inspect.signature_algorithm(cert)[:64],
        subject_key_id=inspect.key_identifier(cert),
        certificate_pem=cert_pem(cert),
        encrypted_private_key=encrypted_key,
    )


def _check_storable(cert: x509.Certificate) -> None:
    """Imported certificates come from anywhere: refuse what RFC 5280 forbids and the columns
    cannot hold, rather than failing in the INSERT."""
    if cert.serial_number.bit_length() > 8 * 32:
        raise PolicyViolation("the serial number is longer than RFC 5280 allows")
    key_id = inspect.key_identifier(cert)
    if key_id is not None and len(key_id) > 128:
        raise PolicyViolation("the subject key identifier is implausibly long")


def _key_facts(cert: x509.Certificate) -> tuple[str, int]:
    try:
        spec = describe_public_key(cert.public_key())
    except (PolicyViolation, ValueError):
        return "unknown", 0
    return spec.algorithm, spec.size
