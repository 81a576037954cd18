"""Email settings: /api/v2/settings/email (stored in the database, so every server process
sends with the same ones), and a test mail."""

import smtplib
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse

from tessera.api.deps import UnitOfWork, now, repositories, require_system, runtime
from tessera.api.errors import v2_error as error
from tessera.api.routing import PrefixRouter
from tessera.api.v2.account_schemas import EmailSettings, TestEmail
from tessera.api.v2.account_views import mail_view
from tessera.api.v2.envelope import ok
from tessera.api.v2.mailing import mail_config
from tessera.domains import audit, mail
from tessera.domains.actor import Actor
from tessera.domains.identity.users import check_email

router = PrefixRouter(prefix="/settings/email", tags=["Settings"])
# One set of email settings serves every organization: the default organization's alone.
Admin = Annotated[Actor, Depends(require_system("admin:system"))]
# Whoever says where mail goes receives every account's reset and invitation links, so can
# take any account: changing it needs everything ('*'), not just admin:system (which a group
# or a narrowed API key may carry without '*').
Everything = Annotated[Actor, Depends(require_system("*"))]


@router.get("")
def get_email_settings(request: Request, session: UnitOfWork, actor: Admin) -> JSONResponse:
    return ok(mail_view(mail_config(request, repositories(session, actor))))


@router.patch("")
def update_email_settings(
    request: Request, body: EmailSettings, session: UnitOfWork, actor: Everything
) -> JSONResponse:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("from_address"):
        changes["from_address"] = check_email(changes["from_address"])
    for name in ("smtp_port", "enabled", "smtp_tls"):
        if name in changes and changes[name] is None:
            changes.pop(name)  # not nullable: null means "leave as is"
    rt = runtime(request)
    config = mail.update_settings(
        repositories(session, actor), rt.keys, actor, rt.settings, changes, now(request)
    )
    return ok(mail_view(config), "Email settings updated")


@router.post("/test")
def test_email(request: Request, body: TestEmail, session: UnitOfWork, actor: Admin) -> Response:
    """Sends right away (this endpoint runs in a worker thread) and says whether it worked."""
    repos = repositories(session, actor)
    config = mail_config(request, repos)
    recipient = check_email(body.to) or ""
    if not config.configured:
        return error(400, "email is not configured")
    message = mail.Message(recipient, "Tessera test mail", "Email from Tessera works.\n")
    try:
        mail.send(config, message)
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        audit.record(
            repos.audit,
            actor,
            "settings.email_test",
            "settings",
            "email",
            {"to": recipient, "error": str(exc)[:200]},
            False,
        )
        return error(502, f"sending failed: {exc}"[:300])
    audit.record(repos.audit, actor, "settings.email_test", "settings", "email", {"to": recipient})
    return ok({"sent": True, "to": recipient}, "Test email sent")
