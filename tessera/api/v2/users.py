"""Users: /api/v2/users."""

from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, now, repositories, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2 import views
from tessera.api.v2.account_schemas import AdminResetPassword, ImportUsers
from tessera.api.v2.auth import throttle_policy
from tessera.api.v2.envelope import iso, ok
from tessera.api.v2.mailing import (
    link_policy,
    mail_config,
    notify_after_commit,
    send_after_commit,
)
from tessera.api.v2.params import RowId
from tessera.api.v2.schemas import CreateUser, UpdateUser
from tessera.core.errors import InvalidInput
from tessera.domains.actor import Actor
from tessera.domains.identity import throttle
from tessera.domains.identity.users import UserFields, UserService

router = PrefixRouter(prefix="/users", tags=["Users"])
Reader = Annotated[Actor, Depends(require("read:users"))]
Writer = Annotated[Actor, Depends(require("write:users"))]
Deleter = Annotated[Actor, Depends(require("delete:users"))]


def _service(request: Request, session: UnitOfWork, actor: Actor) -> UserService:
    return UserService(repositories(session, actor), actor, now(request))


@router.get("")
def list_users(request: Request, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok([views.user_view(u) for u in _service(request, session, actor).all()])


@router.post("", status_code=201)
def create_user(
    request: Request, body: CreateUser, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    fields = UserFields(body.username, body.email, body.password, body.role, body.full_name)
    user = _service(request, session, actor).create(fields)
    return ok(views.user_view(user), "User created successfully", status=201)


@router.post("/import")
def import_users(
    request: Request,
    body: ImportUsers,
    session: UnitOfWork,
    actor: Writer,
    background: BackgroundTasks,
) -> JSONResponse:
    """Creates each listed user (or reports why not); with send_invites, each gets a mailed
    set-your-password link."""
    repos = repositories(session, actor)
    config = mail_config(request, repos)
    if body.send_invites and not config.configured:
        raise InvalidInput("send_invites needs email to be configured (settings/email)")
    rows = [UserFields(u.username, u.email, u.password, u.role, u.full_name) for u in body.users]
    result = _service(request, session, actor).import_users(
        rows, body.send_invites, link_policy(request)
    )
    send_after_commit(background, config, result.messages)
    data = {
        "imported": len(result.created),
        "failed": len(result.errors),
        "invites_sent": len(result.messages),
        "users": [views.user_view(u) for u in result.created],
        "errors": result.errors,
    }
    return ok(data, f"Imported {len(result.created)} users")


@router.get("/{user_id}")
def get_user(request: Request, user_id: RowId, session: UnitOfWork, actor: Reader) -> JSONResponse:
    return ok(views.user_view(_service(request, session, actor).get(user_id)))


@router.put("/{user_id}")
def update_user(
    request: Request,
    user_id: RowId,
    body: UpdateUser,
    session: UnitOfWork,
    actor: Writer,
    background: BackgroundTasks,
) -> JSONResponse:
    fields = UserFields(
        email=body.email,
        password=body.password,
        role=body.role,
        full_name=body.full_name,
        active=body.active,
    )
    service = _service(request, session, actor)
    user = service.update(user_id, fields)
    notify_after_commit(request, repositories(session, actor), background, service.outbox)
    return ok(views.user_view(user), "User updated successfully")


@router.patch("/{user_id}/toggle")
def toggle_user(
    request: Request, user_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    user = _service(request, session, actor).toggle(user_id)
    state = "activated" if user.active else "deactivated"
    return ok(views.user_view(user), f"User {state}")


@router.get("/{user_id}/login-throttle")
def get_login_throttle(
    request: Request, user_id: RowId, session: UnitOfWork, actor: Reader
) -> JSONResponse:
    """Not in the seed: whether the user's password logins are throttled (docs/accounts.md)."""
    policy = throttle_policy(runtime(request).settings)
    state = _service(request, session, actor).login_throttle(user_id, policy)
    retry = (
        throttle.retry_after_seconds(state.locked_until - now(request)) if state.locked_until else 0
    )
    data = {
        "throttled": state.locked_until is not None,
        "locked_until": iso(state.locked_until),
        "retry_after": retry,
        "failures": state.failures,
    }
    return ok(data)


@router.delete("/{user_id}/login-throttle")
def clear_login_throttle(
    request: Request, user_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    """Not in the seed: the user's password logins are let through again at once."""
    cleared = _service(request, session, actor).clear_login_throttle(user_id)
    return ok({"cleared": cleared}, "Login throttle cleared" if cleared else "Not throttled")


@router.post("/{user_id}/2fa/reset")
def reset_user_two_factor(
    request: Request, user_id: RowId, session: UnitOfWork, actor: Writer
) -> JSONResponse:
    """Not in the seed: a user who lost the authenticator and the recovery codes would
    otherwise be locked out for good."""
    user = _service(request, session, actor).reset_two_factor(user_id)
    return ok(views.user_view(user), "Two-factor authentication reset; the user signs in anew")


@router.post("/{user_id}/reset-password")
def reset_user_password(
    request: Request,
    user_id: RowId,
    body: AdminResetPassword,
    session: UnitOfWork,
    actor: Writer,
    background: BackgroundTasks,
) -> JSONResponse:
    """Sets new_password; without one, mails the user a reset link (email must be set up)."""
    repos = repositories(session, actor)
    config = mail_config(request, repos)
    if body.new_password is None and not config.configured:
        raise InvalidInput("give new_password, or configure email to send a reset link")
    message = _service(request, session, actor).reset_password(
        user_id, body.new_password, link_policy(request)
    )
    if message is not None:
        send_after_commit(background, config, [message])
        return ok({"email_sent": True}, "A reset link was sent to the user")
    return ok({"email_sent": False}, "Password reset; the user's sessions were ended")


@router.delete("/{user_id}", status_code=204)
def delete_user(request: Request, user_id: RowId, session: UnitOfWork, actor: Deleter) -> Response:
    _service(request, session, actor).delete(user_id)
    return Response(status_code=204)
