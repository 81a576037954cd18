from dataclasses import dataclass


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


def system_actor(org_id: int) -> Actor:
    return Actor(None, "system", org_id, "admin", frozenset({"*"}))
