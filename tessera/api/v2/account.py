"""The caller's own account: profile, password, 2FA, API keys, sessions, activity."""

from typing import Annotated

from fastapi import BackgroundTasks, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from tessera.api.deps import (
    SESSION_COOKIE,
    CurrentActor,
    UnitOfWork,
    commit_before_answering,
    now,
    repositories,
    runtime,
)
from tessera.api.errors import v2_error as error
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import account_views, views
from tessera.api.v2.account_schemas import ChangePassword, TotpCode, UpdateProfile
from tessera.api.v2.auth import throttle_policy, throttled
from tessera.api.v2.envelope import iso, ok
from tessera.api.v2.mailing import notify_after_commit
from tessera.api.v2.params import RowId
from tessera.api.v2.schemas import CreateApiKey, UpdateApiKey
from tessera.domains.actor import Actor
from tessera.domains.identity import passwords, throttle
from tessera.domains.identity.account import AccountService
from tessera.domains.identity.secrets import token_digest
from tessera.domains.identity.service import ApiKeyService
from tessera.domains.identity.twofactor import TwoFactor

router = PrefixRouter(prefix="/account", tags=["Account Management"])


def _service(request: Request, session: UnitOfWork, actor: Actor) -> ApiKeyService:
    return ApiKeyService(repositories(session, actor), actor, now(request))


def _account(request: Request, session: Session, actor: Actor) -> AccountService:
    return AccountService(repositories(session, actor), actor, now(request))


def _current_session_id(request: Request, session: Session, actor: Actor) -> int | None:
    """The web session this request came with, if it is the caller's."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    found = repositories(session, actor).web_sessions.by_hash(token_digest(cookie), now(request))
    return found.id if found and found.user_id == actor.user_id else None


# --- profile and password ---------------------------------------------------------------------


@router.get("/profile")
def get_profile(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    account = _account(request, session, actor)
    user = account.user()
    groups = list(repositories(session, actor).groups.of_user(user.id))
    return ok(account_views.profile_view(user, actor.permissions, groups))


@router.patch("/profile")
def update_profile(
    request: Request,
    body: UpdateProfile,
    session: UnitOfWork,
    actor: CurrentActor,
    background: BackgroundTasks,
) -> Response:
    """Changing the address needs `current_password` (not in the seed): password-reset links
    go to it, so a stolen session must not be able to point them elsewhere."""
    account = _account(request, session, actor)
    guard = _password_guard(request, session)
    user = account.update_profile(body.full_name, body.email, body.current_password, guard)
    if isinstance(user, throttle.Checked):
        return _refused(user)
    repos = repositories(session, actor)
    notify_after_commit(request, repos, background, account.outbox)
    groups = list(repos.groups.of_user(user.id))
    return ok(account_views.profile_view(user, actor.permissions, groups), "Profile updated")


@router.post("/password")
def change_password(
    request: Request, body: ChangePassword, session: UnitOfWork, actor: CurrentActor
) -> Response:
    keep = _current_session_id(request, session, actor)
    repos = repositories(session, actor)
    guard = _password_guard(request, session)
    checked = passwords.change(repos, actor, body.current_password, body.new_password, keep, guard)
    if not checked.right:
        return _refused(checked)
    return ok(None, "Password changed; your other sessions were ended")


def _password_guard(request: Request, session: Session) -> throttle.Guard:
    """A current password is checked under the name's login throttle, its count committed
    before the slow hash (as a login's: no lock held through it)."""
    policy = throttle_policy(runtime(request).settings)
    return throttle.Guard(policy, now(request), lambda: commit_before_answering(session))


def _refused(checked: throttle.Checked) -> Response:
    """Returned, not raised: the failed attempt's audit row must be committed."""
    if checked.wait is not None:
        return throttled(checked.wait)
    return error(400, "current password is incorrect")


# --- two-factor authentication ----------------------------------------------------------------


def _two_factor(request: Request, session: Session, actor: Actor) -> TwoFactor:
    return TwoFactor(repositories(session, actor), runtime(request).keys, actor, now(request))


@router.post("/2fa/enable")
def enable_2fa(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    enrolment = _two_factor(request, session, actor).enable()
    data = {
        "secret": enrolment.secret,
        "qr_code": enrolment.qr_code,
        "uri": enrolment.uri,
    }
    return ok(data, "Scan the QR code, then confirm with a code from the app")


@router.post("/2fa/confirm")
def confirm_2fa(
    request: Request, body: TotpCode, session: UnitOfWork, actor: CurrentActor
) -> Response:
    codes = _two_factor(request, session, actor).confirm(body.code)
    if codes is None:
        return error(400, "invalid code")
    data = {"enabled": True, "recovery_codes": codes}
    return ok(data, "Two-factor authentication enabled; store the recovery codes safely")


@router.post("/2fa/disable")
def disable_2fa(
    request: Request, body: TotpCode, session: UnitOfWork, actor: CurrentActor
) -> Response:
    if not _two_factor(request, session, actor).disable(body.code):
        return error(400, "invalid code")
    return ok({"enabled": False}, "Two-factor authentication disabled")


@router.get("/2fa/recovery-codes")
def recovery_codes(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    """Codes are stored hashed: they are shown once (confirm, regenerate); this tells how many
    are left."""
    status = _two_factor(request, session, actor).recovery_status()
    status["generated_at"] = iso(status["generated_at"])  # type: ignore[arg-type]
    return ok(status)


@router.post("/2fa/recovery-codes/regenerate")
def regenerate_recovery_codes(
    request: Request, session: UnitOfWork, actor: CurrentActor, body: TotpCode | None = None
) -> Response:
    """Not in the seed, which sends no body: a second factor is asked for, as to disable."""
    codes = _two_factor(request, session, actor).regenerate(body.code if body else None)
    if codes is None:
        return error(400, "invalid code")
    return ok({"recovery_codes": codes}, "New recovery codes; the old ones no longer work")


# --- API keys ---------------------------------------------------------------------------------


@router.get("/apikeys")
def list_keys(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    return ok([views.api_key_view(k) for k in _service(request, session, actor).mine()])


@router.post("/apikeys", status_code=201)
def create_key(
    request: Request, body: CreateApiKey, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    key, secret = _service(request, session, actor).create(
        body.name, body.expires_days, body.permissions
    )
    data = {**views.api_key_view(key), "key": secret}
    return ok(data, "API key created; it is shown only once", status=201)


@router.get("/apikeys/{key_id}")
def get_key(
    request: Request, key_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    return ok(views.api_key_view(_service(request, session, actor).get(key_id)))


@router.patch("/apikeys/{key_id}")
def update_key(
    request: Request, key_id: RowId, body: UpdateApiKey, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    key = _service(request, session, actor).update(key_id, body.name, body.enabled)
    return ok(views.api_key_view(key), "API key updated")


@router.post("/apikeys/{key_id}/regenerate")
def regenerate_key(
    request: Request, key_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    key, secret = _service(request, session, actor).regenerate(key_id)
    return ok({**views.api_key_view(key), "key": secret}, "API key regenerated")


@router.delete("/apikeys/{key_id}", status_code=204)
def delete_key(
    request: Request, key_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> Response:
    _service(request, session, actor).delete(key_id)
    return Response(status_code=204)


# --- sessions and activity --------------------------------------------------------------------


@router.get("/sessions")
def list_sessions(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    current = _current_session_id(request, session, actor)
    rows = _account(request, session, actor).sessions()
    return ok([account_views.session_view(r, current) for r in rows])


@router.delete("/sessions/{session_id}")
def revoke_session(
    request: Request, session_id: RowId, session: UnitOfWork, actor: CurrentActor
) -> JSONResponse:
    _account(request, session, actor).revoke_session(session_id)
    return ok(None, "Session revoked")


@router.post("/sessions/revoke-all")
def revoke_all_sessions(request: Request, session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    keep = _current_session_id(request, session, actor)
    revoked = _account(request, session, actor).revoke_other_sessions(keep)
    return ok({"revoked": revoked}, "All other sessions revoked")


@router.get("/activity")
def activity(
    request: Request,
    session: UnitOfWork,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    rows = _account(request, session, actor).activity(limit)
    return ok([account_views.activity_view(r) for r in rows])
