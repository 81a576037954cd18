"""SCEP management: /api/v2/scep (config, stats, requests, approve/reject, challenges), as
the UCM seed's "SCEP" section writes it, plus /scep/profiles for the per-profile URLs."""

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from tessera.api.deps import UnitOfWork, issuance, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import iso, ok, page_meta
from tessera.api.v2.params import Page, PerPage20, RowId
from tessera.api.v2.schemas import NO_BOOL, Strict
from tessera.api.v2.schemas import RowId as BodyRowId
from tessera.core.errors import NotFound
from tessera.domains.actor import Actor
from tessera.domains.identity.permissions import grants
from tessera.domains.scep import queue
from tessera.domains.scep.challenges import ChallengeService, ShownChallenge
from tessera.domains.scep.enrollment import EnrollmentService
from tessera.domains.scep.profiles import (
    DEFAULT_SLUG,
    ProfileDefaults,
    ProfileService,
    profile_path,
)
from tessera.storage.models_scep import ScepProfile, ScepRequest

router = PrefixRouter(prefix="/scep", tags=["SCEP"])
Reader = Annotated[Actor, Depends(require("read:scep"))]
WRITE_SCEP = require("write:scep")
Writer = Annotated[Actor, Depends(WRITE_SCEP)]
# Approving issues a certificate, so it also needs the right to issue one.
ISSUES_CERTIFICATES = [Depends(WRITE_SCEP), Depends(require("write:certificates"))]
# A CSR carries its challengePassword in clear (its signature covers it, so it cannot be cut
# out): only who may see the challenges themselves gets the CSR.
SEES_CHALLENGES = "write:scep"


Hours = Annotated[int, Field(ge=1, le=8760, description="hours"), NO_BOOL]


class ScepConfigIn(Strict):
    """PATCH /scep/config: the seed's fields, and the profile settings beyond them."""

    enabled: bool | None = None
    ca_id: BodyRowId | None = None
    ca_ident: str | None = Field(None, max_length=200)
    auto_approve: bool | None = None
    challenge_validity: Annotated[int, Field(ge=1, le=8760), NO_BOOL] | None = Field(
        None, description="hours"
    )
    challenge_type: Literal["static", "dynamic"] | None = None
    queue_without_challenge: bool | None = Field(
        None, description="queue requests without a valid challenge for approval"
    )
    template_id: BodyRowId | None = None
    next_ca_id: BodyRowId | None = Field(
        None, description="the CA that replaces ca_id (served by GetNextCACert)"
    )
    use_ra: bool | None = Field(None, description="false: an RSA CA answers without an RA")

    @model_validator(mode="after")
    def _settings_not_null(self) -> Self:
        """None is "unchanged" for these; a null sent for one is a mistake to name, not a
        database constraint failure answered as a conflict."""
        sent_null = [
            n for n in _NOT_NULL if n in self.model_fields_set and getattr(self, n) is None
        ]
        if sent_null:
            raise ValueError(f"{', '.join(sent_null)} cannot be null")
        return self


# The settings every profile has, as the table says (ca_id, template_id, next_ca_id and
# ca_ident may be cleared with null).
_NOT_NULL = tuple(
    name for name in ScepConfigIn.model_fields if not ScepProfile.__table__.c[name].nullable
)


class ScepProfileIn(ScepConfigIn):
    slug: str = Field(min_length=1, max_length=64)


class RejectIn(Strict):
    reason: str | None = Field(None, max_length=1000)


def _profiles(request: Request, session: UnitOfWork, actor: Actor) -> ProfileService:
    ra_days = runtime(request).settings.scep_ra_days
    return ProfileService(issuance(request, session, actor), now(request), ra_days)


def _changes(body: ScepConfigIn) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True, exclude={"slug"})


def profile_view(request: Request, profile: ScepProfile | ProfileDefaults) -> dict[str, Any]:
    path = profile_path(profile.slug)
    return {
        "enabled": profile.enabled,
        "url": path,
        "ca_id": profile.ca_id,
        "ca_ident": profile.ca_ident,
        "auto_approve": profile.auto_approve,
        "challenge_validity": profile.challenge_validity,
        "slug": profile.slug,
        "http_url": f"{runtime(request).settings.http_base}{path}",
        "challenge_type": profile.challenge_type,
        "queue_without_challenge": profile.queue_without_challenge,
        "template_id": profile.template_id,
        "next_ca_id": profile.next_ca_id,
        "use_ra": profile.use_ra,
        "ra_certificate_id": profile.ra_certificate_id,
        "next_ra_certificate_id": profile.next_ra_certificate_id,
    }


def request_views(
    service: EnrollmentService, rows: Sequence[ScepRequest], actor: Actor
) -> list[dict[str, Any]]:
    sees = grants(actor.permissions, SEES_CHALLENGES)
    return [request_view(row, service.csr_pem(row) if sees else None) for row in rows]


def request_view(row: ScepRequest, csr: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "profile_id": row.profile_id,
        "transaction_id": row.transaction_id,
        "message_type": row.message_type,
        "status": row.status,
        "subject": row.subject,
        "common_name": row.common_name,
        "challenge": row.challenge,
        "certificate_id": row.certificate_id,
        "reason": row.reason,
        "client_ip": row.client_ip,
        "csr": csr,
        "created_at": iso(row.created_at),
        "decided_at": iso(row.decided_at),
        "decided_by": row.decided_by,
    }


def _challenge_view(shown: ShownChallenge) -> dict[str, Any]:
    return {
        "ca_id": shown.ca_id,
        "challenge": shown.challenge,
        "challenge_type": shown.challenge_type,
        "expires_at": iso(shown.expires_at),
    }


@router.get("/config")
def get_config(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(profile_view(request, _profiles(request, session, actor).get(DEFAULT_SLUG)))


@router.patch("/config")
def update_config(
    request: Request, body: ScepConfigIn, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    profile = _profiles(request, session, actor).update(DEFAULT_SLUG, _changes(body))
    return ok(profile_view(request, profile), "SCEP configuration updated")


@router.get("/stats")
def stats(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(queue.stats(repositories(session, actor)))


@router.get("/requests")
def list_requests(
    request: Request,
    session: UnitOfWork,
    actor: Reader,
    status: str | None = None,
    page: Page = 1,
    per_page: PerPage20 = 20,
) -> JSONResponse:
    service = EnrollmentService(issuance(request, session, actor), now(request))
    rows, total = queue.listing(repositories(session, actor), status or None, page, per_page)
    return ok(request_views(service, rows, actor), meta=page_meta(page, per_page, total))


@router.post("/{request_id}/approve", dependencies=ISSUES_CERTIFICATES)
def approve(
    request: Request, request_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    service = EnrollmentService(issuance(request, session, actor), now(request))
    row = service.approve(request_id)
    return ok(request_views(service, [row], actor)[0], "SCEP request approved")


@router.post("/{request_id}/reject")
def reject(
    request: Request,
    request_id: RowId,
    session: UnitOfWork,
    actor: Writer,
    body: RejectIn | None = None,
) -> JSONResponse:
    service = EnrollmentService(issuance(request, session, actor), now(request))
    row = service.reject(request_id, body.reason if body else None)
    return ok(request_views(service, [row], actor)[0], "SCEP request rejected")


def _challenges(request: Request, session: UnitOfWork, actor: Actor) -> ChallengeService:
    rt = runtime(request)
    return ChallengeService(issuance(request, session, actor).repos, rt.keys, actor, now(request))


def _challenge_setting(
    request: Request, session: UnitOfWork, actor: Actor, ca_id: int
) -> tuple[str, int]:
    """The challenge type and validity of the profile that uses this CA (an enabled one
    first, which is what enrolls with it, then the default profile); a CA no profile uses
    yet gets a static challenge."""
    profiles = _profiles(request, session, actor)
    if issuance(request, session, actor).repos.cas.get(ca_id) is None:
        raise NotFound(f"CA {ca_id} not found")
    candidates = sorted(profiles.listing(), key=lambda p: (not p.enabled, p.slug != DEFAULT_SLUG))
    for profile in candidates:
        if profile.ca_id == ca_id:
            return profile.challenge_type, profile.challenge_validity
    return "static", 24


@router.get("/challenge/{ca_id}")
def get_challenge(
    request: Request, ca_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    kind, hours = _challenge_setting(request, session, actor, ca_id)
    shown = _challenges(request, session, actor).show(ca_id, kind, hours)
    return ok(_challenge_view(shown))


@router.post("/challenge/{ca_id}/regenerate")
def regenerate_challenge(
    request: Request, ca_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    kind, hours = _challenge_setting(request, session, actor, ca_id)
    shown = _challenges(request, session, actor).regenerate(ca_id, kind, hours)
    return ok(_challenge_view(shown), "challenge password regenerated")


# Profiles beyond the seed: one SCEP URL each (/scep/{slug}/pkiclient.exe).
@router.get("/profiles")
def list_profiles(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    rows = _profiles(request, session, actor).listing()
    return ok([profile_view(request, p) for p in rows])


@router.post("/profiles", status_code=201)
def create_profile(
    request: Request, body: ScepProfileIn, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    profile = _profiles(request, session, actor).create(body.slug, _changes(body))
    return ok(profile_view(request, profile), "SCEP profile created", status=201)


@router.get("/profiles/{slug}")
def get_profile(request: Request, slug: str, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(profile_view(request, _profiles(request, session, actor).require(slug)))


@router.patch("/profiles/{slug}")
def update_profile(
    request: Request, slug: str, body: ScepConfigIn, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    profile = _profiles(request, session, actor).update(slug, _changes(body))
    return ok(profile_view(request, profile), "SCEP profile updated")


@router.delete("/profiles/{slug}")
def delete_profile(request: Request, slug: str, session: UnitOfWork, actor: Writer) -> JSONResponse:
    _profiles(request, session, actor).delete(slug)
    return ok(None, "SCEP profile deleted")
