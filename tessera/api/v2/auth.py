"""Authentication: password login with a session cookie and CSRF token, verify, logout."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import (
    SESSION_COOKIE,
    CurrentActor,
    UnitOfWork,
    anonymous,
    now,
    runtime,
)
from tessera.api.errors import v2_error as error
from tessera.api.v2 import views
from tessera.api.v2.envelope import ok
from tessera.api.v2.schemas import AuthMethodsQuery, Login
from tessera.domains.identity import permissions, service
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import find_login_user, load_user

router = APIRouter(prefix="/auth", tags=["Authentication"])


@router.post("/login/password")
def login(request: Request, body: Login, session: UnitOfWork) -> Response:
    who = anonymous(request)
    repos = Repositories(session, who.org_id)
    moment = now(request)
    user = service.authenticate(repos, body.username, body.password, moment, who)
    if user is None:
        # Returned, not raised: the failed-login audit row must still be committed.
        return error(401, "invalid username or password")
    minutes = runtime(request).settings.session_minutes
    opened = service.open_session(repos, user, moment, minutes, who)
    data = {
        "user": views.user_view(user),
        "role": user.role,
        "permissions": sorted(permissions.role_permissions(user.role)),
        "auth_method": "password",
        "csrf_token": opened.csrf_token,
        "expires_at": opened.expires_at.isoformat(),
    }
    response = ok(data, "Login successful")
    response.set_cookie(
        SESSION_COOKIE,
        opened.token,
        max_age=minutes * 60,
        httponly=True,
        secure=True,
        samesite="strict",
        path="/",
    )
    return response


@router.get("/verify")
def verify(session: UnitOfWork, actor: CurrentActor) -> JSONResponse:
    user = load_user(session, actor.user_id) if actor.user_id else None
    data = {
        "authenticated": True,
        "user": views.user_view(user) if user else None,
        "role": actor.role,
        "permissions": sorted(actor.permissions),
    }
    return ok(data)


@router.post("/logout")
def logout(request: Request, session: UnitOfWork, actor: CurrentActor) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        service.close_session(Repositories(session, actor.org_id), token, actor)
    response = ok(None, "Logged out")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/methods")
def methods(body: AuthMethodsQuery, session: UnitOfWork) -> JSONResponse:
    # The same answer for unknown users, so the endpoint cannot be used to list accounts.
    if body.username:
        find_login_user(session, body.username)
    data = {
        "password": True,
        "webauthn": False,
        "webauthn_credentials": 0,
        "mtls": False,
        "mtls_status": "not_present",
        "totp_enabled": False,
    }
    return ok(data)
