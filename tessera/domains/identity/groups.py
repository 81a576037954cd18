"""User groups: named sets of permissions that their members hold in addition to their role.

Nobody creates, widens, fills or empties a group that grants more than they hold themselves;
otherwise a user manager could add themselves to an all-powerful group."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tessera.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.domains.identity import permissions
from tessera.storage import models
from tessera.storage.models_accounts import UserGroup, UserGroupMember
from tessera.storage.repositories import Repositories

MEMBER_ROLES = ("member", "owner")  # labels shown in lists; they grant nothing extra


@dataclass(frozen=True)
class GroupFields:
    name: str | None = None
    description: str | None = None
    permissions: list[str] | None = None


class GroupService:
    def __init__(self, repos: Repositories, actor: Actor, now: datetime) -> None:
        self._repos, self._actor, self._now = repos, actor, now

    def search(self, text: str | None) -> Sequence[UserGroup]:
        return self._repos.groups.search(text.strip() if text else None)

    def member_counts(self) -> dict[int, int]:
        return self._repos.groups.member_counts()

    def get(self, group_id: int) -> UserGroup:
        group = self._repos.groups.get(group_id)
        if group is None:
            raise NotFound(f"group {group_id} not found")
        return group

    def create(self, fields: GroupFields) -> UserGroup:
        name = self._free_name(fields.name, None)
        group = UserGroup(
            name=name,
            description=fields.description,
            permissions=self._grantable(fields.permissions or []),
            created_at=self._now,
            updated_at=self._now,
        )
        self._repos.groups.add(group)
        details = {"name": group.name, "permissions": group.permissions}
        audit.record(self._repos.audit, self._actor, "group.create", "group", group.id, details)
        return group

    def update(self, group_id: int, fields: GroupFields) -> UserGroup:
        group = self._manageable(group_id)
        changes: dict[str, object] = {}
        if fields.name is not None:
            group.name = changes["name"] = self._free_name(fields.name, group.id)
        if fields.description is not None:
            group.description = changes["description"] = fields.description
        if fields.permissions is not None:
            granted = self._grantable(fields.permissions)
            if sorted(granted) != sorted(group.permissions or []):
                self._end_member_sessions(group)
            group.permissions = changes["permissions"] = granted
        group.updated_at = self._now
        audit.record(self._repos.audit, self._actor, "group.update", "group", group.id, changes)
        return group

    def delete(self, group_id: int) -> None:
        group = self._manageable(group_id)
        if group.permissions:
            self._end_member_sessions(group)
        self._repos.groups.delete(group)
        audit.record(
            self._repos.audit, self._actor, "group.delete", "group", group.id, {"name": group.name}
        )

    def members(self, group_id: int) -> Sequence[tuple[UserGroupMember, models.User]]:
        return self._repos.groups.members(self.get(group_id).id)

    def add_member(
        self, group_id: int, user_id: int, role: str
    ) -> tuple[UserGroupMember, models.User]:
        group = self._manageable(group_id)
        if role not in MEMBER_ROLES:
            raise InvalidInput(f"member role must be one of {', '.join(MEMBER_ROLES)}")
        user = self._repos.users.get(user_id)  # scoped: another organization's user is 404
        if user is None:
            raise NotFound(f"user {user_id} not found")
        if self._repos.groups.membership(group.id, user.id) is not None:
            raise Conflict(f"user {user_id} is already a member of group {group_id}")
        member = UserGroupMember(group_id=group.id, user_id=user.id, role=role, added_at=self._now)
        if not self._repos.groups.add_member(member):  # another request added it meanwhile
            raise Conflict(f"user {user_id} is already a member of group {group_id}")
        self._new_sessions(group, user.id)
        details = {"user_id": user.id, "username": user.username, "role": role}
        audit.record(self._repos.audit, self._actor, "group.member_add", "group", group.id, details)
        return member, user

    def remove_member(self, group_id: int, user_id: int) -> None:
        group = self._manageable(group_id)
        if self._repos.groups.membership(group.id, user_id) is None:
            raise NotFound(f"user {user_id} is not a member of group {group_id}")
        if not self._repos.groups.remove_member(group.id, user_id):  # removed meanwhile
            raise NotFound(f"user {user_id} is not a member of group {group_id}")
        self._new_sessions(group, user_id)
        audit.record(
            self._repos.audit,
            self._actor,
            "group.member_remove",
            "group",
            group.id,
            {"user_id": user_id},
        )

    def stats(self) -> dict[str, object]:
        groups = self._repos.groups.search(None)
        counts = self._repos.groups.member_counts()
        largest = sorted(groups, key=lambda g: (-counts.get(g.id, 0), g.name))[:5]
        return {
            "total_groups": len(groups),
            "total_memberships": sum(counts.values()),
            "users_in_groups": self._repos.groups.distinct_members(),
            "empty_groups": sum(1 for g in groups if not counts.get(g.id)),
            "largest_groups": [
                {"id": g.id, "name": g.name, "member_count": counts.get(g.id, 0)} for g in largest
            ],
        }

    def of_user(self, user_id: int) -> Sequence[UserGroup]:
        return self._repos.groups.of_user(user_id)

    def _new_sessions(self, group: UserGroup, user_id: int) -> None:
        """A change to what a user's groups grant ends the user's sessions, as a change of
        role does (users.py): a session opened, or stolen, under the old privileges is not
        carried into the new ones. A group granting nothing changes nothing. The session
        making the change is spared (see `_end_member_sessions`)."""
        if group.permissions:
            self._repos.web_sessions.delete_for_user(user_id, keep_id=self._actor.session_id)

    def _end_member_sessions(self, group: UserGroup) -> None:
        """What the group grants changes (or it goes): its members' sessions end, as in
        `_new_sessions`, but the one making the change (an admin in the group), who would
        otherwise be logged out by their own request. Their permissions are read again on
        every request, so the session carries on under the new ones."""
        self._repos.web_sessions.delete_for_group_members(group.id, self._actor.session_id)

    def _free_name(self, name: str | None, own_id: int | None) -> str:
        if not name or not name.strip():
            raise InvalidInput("name is required")
        name = name.strip()
        existing = self._repos.groups.by_name(name)
        if existing is not None and existing.id != own_id:
            raise Conflict(f"group {name!r} already exists")
        return name

    def _grantable(self, requested: list[str]) -> list[str]:
        granted = permissions.check_known(requested)
        if not permissions.covers(self._actor.permissions, granted):
            beyond = [p for p in granted if not permissions.covers(self._actor.permissions, [p])]
            raise PermissionDenied(f"permissions beyond your own: {beyond}")
        return granted

    def _manageable(self, group_id: int) -> UserGroup:
        group = self.get(group_id)
        if not permissions.covers(self._actor.permissions, group.permissions or []):
            raise PermissionDenied(f"group {group_id} grants more permissions than you hold")
        return group
