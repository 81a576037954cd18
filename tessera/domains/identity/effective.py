"""A user's effective permissions: role plus groups, read fresh on every request so a role or
group change applies at once to sessions and API keys."""

from sqlalchemy.orm import Session

from tessera.core.errors import PermissionDenied
from tessera.domains.actor import Actor
from tessera.domains.identity import permissions
from tessera.storage.models import User
from tessera.storage.repositories.groups import group_permissions


def user_permissions(session: Session, user: User) -> frozenset[str]:
    return permissions.of_user(user.role, group_permissions(session, user.id, user.org_id))


def require_full_access(session: Session, actor: Actor, user: User) -> None:
    """Changing how an account signs in (password, second factor, email, sessions) needs all
    of the account's permissions: a session, or an API key not narrowed. Otherwise a leaked
    read-only key could, say, mint recovery codes or redirect password resets."""
    if not permissions.covers(actor.permissions, user_permissions(session, user)):
        raise PermissionDenied(
            "this needs all of your permissions: use a session or an unrestricted API key"
        )
