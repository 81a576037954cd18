"""Global search across the inventory: each kind only for callers who may read it."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from tessera.core.errors import InvalidInput, PermissionDenied
from tessera.core.inspect import serial_named_by
from tessera.domains.actor import Actor
from tessera.domains.identity.permissions import grants
from tessera.storage import models
from tessera.storage.repositories import Repositories

MAX_TERM = 200
DEFAULT_LIMIT = 5
MAX_LIMIT = 50

# kind of result -> the permission that reveals it
KINDS = {
    "certificates": "read:certificates",
    "cas": "read:cas",
    "csrs": "read:csrs",
    "users": "read:users",
}


@dataclass(frozen=True)
class SearchResults:
    certificates: Sequence[models.Certificate] = field(default_factory=list)
    cas: Sequence[models.CertificateAuthority] = field(default_factory=list)
    csrs: Sequence[models.CertificateRequestRow] = field(default_factory=list)
    users: Sequence[models.User] = field(default_factory=list)
    # certificates per CA found (the seed's certificates_count on every CA shown)
    ca_certificate_counts: dict[int, int] = field(default_factory=dict)


class SearchService:
    def __init__(self, repos: Repositories, actor: Actor) -> None:
        self._repos = repos
        self._actor = actor

    def readable(self) -> set[str]:
        return {kind for kind, needed in KINDS.items() if grants(self._actor.permissions, needed)}

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> SearchResults:
        term = query.strip()
        if not term:
            raise InvalidInput("q must not be empty")
        if len(term) > MAX_TERM:
            raise InvalidInput(f"q is limited to {MAX_TERM} characters")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        kinds = self.readable()
        if not kinds:
            raise PermissionDenied("search needs read access to certificates, CAs, CSRs or users")
        found = self._repos.search
        serial = serial_named_by(term)  # a serial as openssl or a browser prints it
        cas = found.cas(term, limit, serial) if "cas" in kinds else []
        counts = self._repos.cas.certificate_counts([c.id for c in cas]) if cas else {}
        certificates = found.certificates(term, limit, serial) if "certificates" in kinds else []
        return SearchResults(
            certificates=certificates,
            cas=cas,
            csrs=found.csrs(term, limit) if "csrs" in kinds else [],
            users=found.users(term, limit) if "users" in kinds else [],
            ca_certificate_counts=counts,
        )
