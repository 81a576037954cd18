"""Wire views of accounts objects (never a hash, secret or token)."""

from typing import Any

from tessera.api.v2.envelope import iso
from tessera.api.v2.views import user_view
from tessera.domains.mail import MailConfig
from tessera.storage import models
from tessera.storage.models_accounts import UserGroup, UserGroupMember


def profile_view(
    user: models.User, granted: frozenset[str], groups: list[UserGroup]
) -> dict[str, Any]:
    return {
        **user_view(user),
        "totp_enabled": user.totp_enabled,
        "groups": [{"id": g.id, "name": g.name} for g in groups],
        "permissions": sorted(granted),
    }


def group_view(group: UserGroup, member_count: int) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "permissions": list(group.permissions or []),
        "member_count": member_count,
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }


def member_view(member: UserGroupMember, user: models.User) -> dict[str, Any]:
    return {
        "user_id": user.id,
        "username": user.username,
        "email": user.email,
        "full_name": user.full_name,
        "user_role": user.role,
        "active": user.active,
        "role": member.role,
        "added_at": iso(member.added_at),
    }


def session_view(row: models.WebSession, current_id: int | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "current": row.id == current_id,
    }


def activity_view(row: models.AuditLog) -> dict[str, Any]:
    return {
        "id": row.id,
        "timestamp": iso(row.timestamp),
        "action": row.action,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "success": row.success,
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "details": row.details or {},
    }


def mail_view(config: MailConfig) -> dict[str, Any]:
    return {
        "enabled": config.enabled,
        "smtp_host": config.smtp_host,
        "smtp_port": config.smtp_port,
        "smtp_user": config.smtp_user,
        "smtp_password_set": bool(config.smtp_password),
        "smtp_tls": config.smtp_tls,
        "from_address": config.from_address,
        "configured": config.configured,
    }
