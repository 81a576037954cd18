"""Roles and permission strings, as the native API's Permissions table names them."""

from tessera.core.errors import InvalidInput, PermissionDenied

PERMISSIONS: dict[str, str] = {
    "*": "Full access (admin only)",
    "read:*": "Read access to all resources",
    "read:certificates": "Read certificates",
    "write:certificates": "Create/update certificates",
    "delete:certificates": "Delete/revoke certificates",
    "read:cas": "Read CAs",
    "write:cas": "Create/update CAs",
    "delete:cas": "Delete CAs",
    "read:users": "Read users",
    "write:users": "Create/update users",
    "delete:users": "Delete users",
    "read:audit": "View audit logs",
    "delete:audit": "Cleanup audit logs",
    "admin:system": "System administration",
    # Beyond the seed's table: the inventory sections it documents need their own grants.
    "read:csrs": "Read certificate signing requests",
    "write:csrs": "Upload, import and sign CSRs",
    "delete:csrs": "Delete CSRs",
    "read:templates": "Read certificate templates",
    "write:templates": "Create/update/import templates",
    "delete:templates": "Delete templates",
    "read:truststore": "Read the trust store",
    "write:truststore": "Add, import and sync trusted certificates",
    "delete:truststore": "Remove trusted certificates",
    # ACME server: settings, accounts, orders and approvals, EAB keys, early renewal.
    "read:acme": "Read ACME settings, accounts, orders and EAB keys",
    "write:acme": "Change ACME settings, approve orders, manage accounts and EAB keys",
    # SCEP server: settings and profiles, challenge passwords, the approval queue.
    "read:scep": "Read SCEP settings, profiles, statistics and requests",
    "write:scep": "Change SCEP settings, see and rotate challenges, approve or reject requests",
}

ROLE_PERMISSIONS: dict[str, list[str]] = {
    "admin": ["*"],
    "operator": [
        "read:*",
        "write:certificates",
        "delete:certificates",
        "write:cas",
        "write:csrs",
        "delete:csrs",
        "write:templates",
        "write:truststore",
        "write:scep",
    ],
    "auditor": ["read:*"],
    "viewer": [
        "read:certificates",
        "read:cas",
        "read:csrs",
        "read:templates",
        "read:truststore",
    ],
}
ROLES = tuple(ROLE_PERMISSIONS)

ROLE_DESCRIPTIONS = {
    "admin": "Full access, including users and system settings",
    "operator": "Issues, renews and revokes certificates and manages CAs",
    "auditor": "Reads everything, including the audit log and users; changes nothing",
    "viewer": "Reads certificates, CAs, CSRs, templates and the trust store",
}


def grants(held: frozenset[str] | set[str], needed: str) -> bool:
    """'*' grants everything; 'read:*' grants every read; otherwise an exact match."""
    if "*" in held or needed in held:
        return True
    action, _, _ = needed.partition(":")
    return f"{action}:*" in held


def role_permissions(role: str) -> frozenset[str]:
    return frozenset(ROLE_PERMISSIONS.get(role, ()))


def narrow(owner: frozenset[str], requested: list[str] | None) -> list[str]:
    """An API key may carry fewer permissions than its owner, never more."""
    if requested is None:
        return sorted(owner)
    if not requested:
        raise InvalidInput("permissions cannot be empty; leave it out to inherit your own")
    unknown = [p for p in requested if p not in PERMISSIONS]
    if unknown:
        raise InvalidInput(f"unknown permissions: {unknown}")
    beyond = [p for p in requested if not grants(owner, p) and p != "*"]
    if beyond or ("*" in requested and "*" not in owner):
        raise PermissionDenied(f"permissions beyond your role: {beyond or ['*']}")
    return sorted(set(requested))


def effective(key_permissions: list[str], owner: frozenset[str]) -> frozenset[str]:
    """What a key may do now: its own list, cut to what its owner still holds. A wildcard the
    owner no longer holds ('*', 'read:*') shrinks to the owner's permissions it covers."""
    kept: set[str] = set()
    for permission in key_permissions:
        if grants(owner, permission):
            kept.add(permission)
        else:
            kept.update(p for p in owner if grants(frozenset({permission}), p))
    return frozenset(kept)


def of_user(role: str, group_grants: list[str] | frozenset[str]) -> frozenset[str]:
    """A user's effective permissions: their role's plus every group's they belong to."""
    return role_permissions(role) | frozenset(group_grants)


def covers(held: frozenset[str], wanted: list[str] | frozenset[str]) -> bool:
    """Whether `held` includes every grant in `wanted` ('*' only by '*' itself)."""
    return all(grants(held, p) if p != "*" else "*" in held for p in wanted)


def check_known(requested: list[str]) -> list[str]:
    unknown = [p for p in requested if p not in PERMISSIONS]
    if unknown:
        raise InvalidInput(f"unknown permissions: {unknown}")
    return sorted(set(requested))
