"""The SCEP request queue as administrators read it: the requests by status, and counts."""

from collections.abc import Sequence

from tessera.core.errors import InvalidInput
from tessera.domains.scep.enrollment import PKCS_REQ, RENEWAL_REQ
from tessera.storage.models_scep import ScepRequest
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.scep import ISSUED, PENDING, REJECTED

STATUSES = (PENDING, ISSUED, REJECTED)
# UCM names a request whose certificate was issued "approved"; its clients filter and count
# by that name, so it is read as `issued` (docs/scep.md).
UCM_APPROVED = "approved"


def listing(
    repos: Repositories, status: str | None, page: int, per_page: int
) -> tuple[Sequence[ScepRequest], int]:
    if status == UCM_APPROVED:
        status = ISSUED
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    return repos.scep.requests(status, page, per_page)


def stats(repos: Repositories) -> dict[str, object]:
    counts = repos.scep.counts()
    by_type = repos.scep.counts_by_type()
    return {
        "total": sum(counts.values()),
        "pending": counts.get(PENDING, 0),
        "issued": counts.get(ISSUED, 0),
        UCM_APPROVED: counts.get(ISSUED, 0),
        "rejected": counts.get(REJECTED, 0),
        "enrollments": by_type.get(PKCS_REQ, 0),
        "renewals": by_type.get(RENEWAL_REQ, 0),
        "profiles": len(repos.scep.profiles()),
    }
