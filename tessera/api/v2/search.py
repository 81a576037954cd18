"""Global search: /api/v2/search."""

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from tessera.api.deps import CurrentActor, UnitOfWork, now, repositories
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import views
from tessera.api.v2.envelope import ok
from tessera.api.v2.params import empty_is
from tessera.domains.search.service import DEFAULT_LIMIT, MAX_LIMIT, MAX_TERM, SearchService

router = PrefixRouter(prefix="/search", tags=["Search"])


@router.get("")
def search(
    request: Request,
    session: UnitOfWork,
    actor: CurrentActor,
    q: Annotated[str, Query(min_length=1, max_length=MAX_TERM)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT), empty_is(DEFAULT_LIMIT)] = DEFAULT_LIMIT,
) -> JSONResponse:
    """Each kind is searched only when the caller may read it (read:certificates, read:cas,
    read:csrs, read:users); the others come back empty. Holding none of them is a 403.
    Each row is shaped as its own listing's (GET /certificates, /cas, /csrs, /users)."""
    found = SearchService(repositories(session, actor), actor).search(q, limit)
    moment = now(request)
    return ok(
        {
            "certificates": [views.certificate_view(c, moment) for c in found.certificates],
            "cas": [views.ca_view(c, found.ca_certificate_counts.get(c.id, 0)) for c in found.cas],
            "csrs": [views.csr_view(c) for c in found.csrs],
            "users": [views.user_view(u) for u in found.users],
        }
    )
