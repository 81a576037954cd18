"""Authentication: password login (with a TOTP second step when enabled), verify, logout,
forgot and reset password, email configuration."""

from datetime import timedelta

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import (
    SESSION_COOKIE,
    CurrentActor,
    UnitOfWork,
    anonymous,
    commit_before_answering,
    now,
    runtime,
)
from tessera.api.errors import v2_error as error
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import views
from tessera.api.v2.account_schemas import ForgotPassword, LoginSecondFactor, ResetPassword
from tessera.api.v2.envelope import iso, ok
from tessera.api.v2.mailing import link_policy, mail_config, request_reset_links
from tessera.api.v2.schemas import AuthMethodsQuery, Login
from tessera.config import Settings
from tessera.domains.identity import passwords, service, throttle, twofactor
from tessera.domains.identity.effective import user_permissions
from tessera.domains.identity.secrets import token_digest
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import find_login_user, load_user

router = PrefixRouter(prefix="/auth", tags=["Authentication"])
RESET_REQUESTED = "If an account with that address exists, a reset link has been sent"
TOTP_LOCKED = (
    "too many wrong codes for this account: only a recovery code is accepted until "
    f"{twofactor.ACCOUNT_FAILURE_WINDOW.seconds // 60} minutes pass without wrong ones"
)


@router.post("/login/password")
def login(request: Request, body: Login, session: UnitOfWork) -> Response:
    who = anonymous(request)
    repos = Repositories(session, who.org_id)
    moment = now(request)
    policy = throttle_policy(runtime(request).settings)
    wait = throttle.admit(repos, body.username, policy, moment)
    if wait is not None:
        # Refused unchecked, right password or not, known name or not: the same answer.
        service.refuse_throttled(repos, body.username, who)
        return throttled(wait)
    # The attempt is counted for every process before its password is checked (and before
    # the slow hash: the row and, on SQLite, the write lock are not held through it).
    commit_before_answering(session)
    user = service.authenticate(repos, body.username, body.password, moment, who)
    if user is None:
        # Returned, not raised: the failed-login audit row must still be committed.
        return error(401, "invalid username or password")
    throttle.succeeded(repos, body.username)
    if user.totp_enabled:
        seconds = runtime(request).settings.login_2fa_seconds
        pending = twofactor.start_login(repos, user, moment, seconds)
        data = {
            "requires_2fa": True,
            "pending_token": pending.token,
            "expires_at": iso(pending.expires_at),
            "methods": ["totp", "recovery_code"],
        }
        return ok(data, "Two-factor authentication required")
    return _open_session(request, repos, user, "password")


def throttle_policy(settings: Settings) -> throttle.ThrottlePolicy:
    return throttle.ThrottlePolicy(
        failures=settings.login_throttle_failures,
        window=timedelta(seconds=settings.login_throttle_window_seconds),
        base=timedelta(seconds=settings.login_throttle_base_seconds),
        cap=timedelta(seconds=settings.login_throttle_max_seconds),
    )


def throttled(wait: timedelta) -> Response:
    seconds = throttle.retry_after_seconds(wait)
    refused = error(429, f"too many failed logins for this username; try again in {seconds} s")
    refused.headers["Retry-After"] = str(seconds)
    return refused


@router.post("/login/2fa")
def login_second_factor(request: Request, body: LoginSecondFactor, session: UnitOfWork) -> Response:
    """Beyond the seed: completes a password login with a TOTP or recovery code."""
    who = anonymous(request)
    repos = Repositories(session, who.org_id)
    keys = runtime(request).keys
    step = twofactor.finish_login(repos, keys, body.pending_token, body.code, now(request), who)
    if step.user is None or step.factor is None:
        # Returned, not raised: the failed attempt's audit row must still be committed.
        return error(401, TOTP_LOCKED if step.totp_locked else "invalid or expired code")
    return _open_session(request, repos, step.user, f"password+{step.factor}")


def _open_session(
    request: Request, repos: Repositories, user: models.User, method: str
) -> Response:
    """A brand-new session id on every login (no fixation): a session the client came with is
    ended, never promoted."""
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        repos.web_sessions.delete_by_hash(token_digest(previous))
    settings = runtime(request).settings
    minutes = settings.session_minutes
    opened = service.open_session(repos, user, now(request), minutes, anonymous(request))
    data = {
        "user": views.user_view(user),
        "role": user.role,
        "permissions": sorted(user_permissions(repos.session, user)),
        "auth_method": method,
        "csrf_token": opened.csrf_token,
        "expires_at": iso(opened.expires_at),
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
def methods(session: UnitOfWork, body: AuthMethodsQuery | None = None) -> JSONResponse:
    """`totp_enabled` is the named account's (as the seed shows); for an unknown name it is
    false, like for an account without TOTP, so only accounts with TOTP are distinguishable.
    The body is optional: a login page asks before it knows the username (as UCM allows)."""
    username = body.username if body else None
    user = find_login_user(session, username) if username else None
    data = {
        "password": True,
        "webauthn": False,
        "webauthn_credentials": 0,
        "mtls": False,
        "mtls_status": "not_present",
        "totp_enabled": bool(user and user.active and user.totp_enabled),
    }
    return ok(data)


@router.post("/forgot-password")
def forgot_password(request: Request, body: ForgotPassword) -> JSONResponse:
    """The same answer, as fast, whether or not the address belongs to an account: the
    lookup and all it leads to run apart from the request (`mailing.send_reset_links`)."""
    who = anonymous(request)
    request_reset_links(runtime(request), body.email, link_policy(request), who)
    return ok(None, RESET_REQUESTED)


@router.post("/reset-password")
def reset_password(request: Request, body: ResetPassword, session: UnitOfWork) -> Response:
    """Redeems a reset link or an invitation link (both set the password)."""
    who = anonymous(request)
    repos = Repositories(session, who.org_id)
    user = passwords.redeem(repos, body.token, body.password, now(request), who)
    if user is None:
        return error(400, "invalid or expired token")
    return ok(None, "Password has been reset; log in with the new password")


@router.get("/email-configured")
def email_configured(request: Request, session: UnitOfWork) -> JSONResponse:
    config = mail_config(request, Repositories(session, anonymous(request).org_id))
    return ok({"configured": config.configured})
