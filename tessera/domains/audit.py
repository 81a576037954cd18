"""Every state change writes one audit row in the same transaction as the change."""

from typing import Any

from tessera.domains.actor import Actor
from tessera.storage.repositories.audit import AuditRepository


def record(
    audit: AuditRepository,
    actor: Actor,
    action: str,
    resource_type: str | None = None,
    resource_id: object = None,
    details: dict[str, Any] | None = None,
    success: bool = True,
) -> None:
    audit.add(
        org_id=actor.org_id,
        user_id=actor.user_id,
        username=actor.username,
        action=action,
        resource_type=resource_type,
        resource_id=None if resource_id is None else str(resource_id),
        details=details or {},
        ip_address=actor.ip_address,
        user_agent=actor.user_agent,
        success=success,
    )
