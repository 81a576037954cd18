"""Issuer groups: the CA rows of an organization that are one issuer to relying parties.

An organization may hold several rows with the same subject and the same key: a root
re-issued with a new validity and imported again is a new CA (`CAService.store_imported`).
What either row issued chains to both certificates, an OCSP CertID (hashes of the issuer's
name and key) cannot tell the rows apart, and a CRL names only its issuer and its key
identifier. So revocation is published per group, not per row: OCSP answers for what every
row of the group issued, and every row's distribution point serves one CRL of the whole
group, numbered in one sequence (docs/ocsp.md, docs/crl.md). Rows of different
organizations are never one group: a tenant's revocations are its own.
"""

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache

from tessera.core.formats import load_certificate
from tessera.core.inspect import issuer_identity
from tessera.storage import models
from tessera.storage.repositories.cas import CARepository

CA = models.CertificateAuthority


def group_of(cas: CARepository, ca: CA) -> list[CA]:
    """Every row of `ca`'s group, `ca` included, oldest (lowest id) first. `cas` is the
    repository of `ca`'s organization."""
    alike = {row.id: row for row in cas.with_subject(ca.subject)}
    alike[ca.id] = ca
    mine = _identity(ca)
    members = [row for row in alike.values() if row.id == ca.id or _identity(row) == mine]
    return sorted(members, key=_row_id)


def groups(cas: Iterable[CA]) -> list[list[CA]]:
    """The rows in their groups, each oldest first, the groups in the order of their oldest
    row. Only rows sharing an organization and a subject with another are parsed: for all
    others the answer is known without."""
    named: dict[tuple[int, str], list[CA]] = defaultdict(list)
    for ca in cas:
        named[(ca.org_id, ca.subject)].append(ca)
    found: list[list[CA]] = []
    for rows in named.values():
        if len(rows) == 1:
            found.append(rows)
            continue
        alike: dict[tuple[bytes, str], list[CA]] = defaultdict(list)
        for row in rows:
            alike[_identity(row)].append(row)
        found.extend(sorted(group, key=_row_id) for group in alike.values())
    return sorted(found, key=lambda group: group[0].id)


def holds_key(ca: CA) -> bool:
    return ca.encrypted_private_key is not None


def signing_order(
    group: Sequence[CA], now: datetime, usable: Callable[[CA], bool] = holds_key
) -> list[CA]:
    """The rows of a group that may sign for it (`usable`), the preferred first: valid now,
    not revoked, enabled, then the longest-lived, then the oldest. Any of them signs what
    relying parties accept (one name, one key); the preference is for what the signature
    points to: a CRL's caIssuers, the issuer of a delegated OCSP signer (whose validity is
    clamped to it)."""
    return sorted((ca for ca in group if usable(ca)), key=lambda ca: _preference(ca, now))


def _preference(ca: CA, now: datetime) -> tuple[bool, bool, bool, float, int]:
    valid_now = ca.not_before <= now < ca.not_after
    revoked = ca.revoked_at is not None
    return (not valid_now, revoked, not ca.is_active, -ca.not_after.timestamp(), ca.id)


def identity_digests(ca: CA) -> tuple[str, str]:
    """The group's identity as stored (the CRL number it reached outlives its rows): the
    SHA-256 of its name's DER and of its SubjectPublicKeyInfo, in hex."""
    name_der, spki_sha256 = _identity(ca)
    return hashlib.sha256(name_der).hexdigest(), spki_sha256


def _row_id(ca: CA) -> int:
    return ca.id


def _identity(ca: CA) -> tuple[bytes, str]:
    return _identity_of(ca.certificate_pem)


@lru_cache(maxsize=4096)
def _identity_of(certificate_pem: str) -> tuple[bytes, str]:
    """A CA certificate never changes: parsed once per process (OCSP regroups every minute)."""
    return issuer_identity(load_certificate(certificate_pem.encode()))
