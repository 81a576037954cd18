from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Actor:
    """Who is acting, from where, and what they may do."""

    user_id: int | None
    username: str
    org_id: int
    role: str
    permissions: frozenset[str]
    ip_address: str | None = None
    user_agent: str | None = None
    # When the API key the request came with expires (None: no key, or one that never does):
    # what such a key creates must not outlive it.
    credential_expires_at: datetime | None = None
    # The web session the request came with (None: an API key, or no user): a change that
    # ends sessions spares this one, so the change's own author is not logged out by it.
    session_id: int | None = None


def system_actor(org_id: int) -> Actor:
    return Actor(None, "system", org_id, "admin", frozenset({"*"}))


class UserLike(Protocol):
    id: int
    username: str
    org_id: int
    role: str


def as_user(user: UserLike, origin: Actor) -> Actor:
    """The user an unauthenticated request is about (a login step, a reset link), at the
    request's address: whom its audit rows name. It grants nothing."""
    return Actor(
        user.id,
        user.username,
        user.org_id,
        user.role,
        frozenset(),
        origin.ip_address,
        origin.user_agent,
    )
