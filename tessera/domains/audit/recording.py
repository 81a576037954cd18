"""Every state change writes one audit row in the same transaction as the change."""

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

from tessera.domains.actor import Actor
from tessera.domains.audit.context import REQUEST_ID, SUCCESS_STATUS
from tessera.storage.repositories.audit import AuditRepository


def actor_type(actor: Actor) -> str:
    """user | system | anonymous (an Actor may name its own kind, e.g. api_key)."""
    named = getattr(actor, "actor_type", None)
    if isinstance(named, str) and named:
        return named[:16]
    if actor.user_id is not None:
        return "user"
    return "system" if actor.username == "system" else "anonymous"


def event(
    actor: Actor,
    action: str,
    resource_type: str | None = None,
    resource_id: object = None,
    details: dict[str, Any] | None = None,
    success: bool = True,
    status_code: int | None = None,
) -> dict[str, Any]:
    """An audit row's fields, taken where the event happens (its request's id and status).
    `status_code` is the HTTP status the event answers with: given by the caller where it
    knows better (a failed login passes 401), else, for a success, the status its request's
    route answers with."""
    if status_code is None and success:
        status_code = SUCCESS_STATUS.get()
    return {
        "org_id": actor.org_id,
        "user_id": actor.user_id,
        "username": actor.username,
        "actor_type": actor_type(actor),
        "action": action,
        "resource_type": resource_type,
        "resource_id": None if resource_id is None else str(resource_id),
        "details": details or {},
        "ip_address": actor.ip_address,
        "user_agent": actor.user_agent,
        "success": success,
        "request_id": REQUEST_ID.get(),
        "status_code": status_code,
    }


P = ParamSpec("P")


def _appending(
    fields: Callable[Concatenate[Actor, P], dict[str, Any]],
) -> Callable[Concatenate[AuditRepository, Actor, P], None]:
    def append(audit: AuditRepository, actor: Actor, /, *args: P.args, **kwargs: P.kwargs) -> None:
        audit.add(**fields(actor, *args, **kwargs))

    return append


# Append one chained audit row: record(audit, actor, action, ...), with `event`'s parameters.
record = _appending(event)
