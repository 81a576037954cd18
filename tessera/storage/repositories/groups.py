"""User groups of one organization and their members."""

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tessera.storage.models import User
from tessera.storage.models_accounts import UserGroup, UserGroupMember


class GroupRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def add(self, group: UserGroup) -> UserGroup:
        group.org_id = self._org_id
        self._session.add(group)
        self._session.flush()
        return group

    def get(self, group_id: int) -> UserGroup | None:
        return self._session.scalar(
            select(UserGroup).where(UserGroup.id == group_id, UserGroup.org_id == self._org_id)
        )

    def by_name(self, name: str) -> UserGroup | None:
        return self._session.scalar(
            select(UserGroup).where(UserGroup.name == name, UserGroup.org_id == self._org_id)
        )

    def search(self, text: str | None) -> Sequence[UserGroup]:
        query = select(UserGroup).where(UserGroup.org_id == self._org_id)
        if text:
            pattern = f"%{_escape(text.lower())}%"
            query = query.where(
                func.lower(UserGroup.name).like(pattern, escape="\\")
                | func.lower(func.coalesce(UserGroup.description, "")).like(pattern, escape="\\")
            )
        return self._session.scalars(query.order_by(UserGroup.name, UserGroup.id)).all()

    def delete(self, group: UserGroup) -> None:
        self._session.execute(
            delete(UserGroup).where(UserGroup.id == group.id, UserGroup.org_id == self._org_id)
        )

    def member_counts(self) -> dict[int, int]:
        rows = self._session.execute(
            select(UserGroupMember.group_id, func.count())
            .join(UserGroup, UserGroup.id == UserGroupMember.group_id)
            .where(UserGroup.org_id == self._org_id)
            .group_by(UserGroupMember.group_id)
        ).all()
        return {int(group_id): int(count) for group_id, count in rows}

    def distinct_members(self) -> int:
        count = self._session.scalar(
            select(func.count(func.distinct(UserGroupMember.user_id)))
            .join(UserGroup, UserGroup.id == UserGroupMember.group_id)
            .where(UserGroup.org_id == self._org_id)
        )
        return int(count or 0)

    def members(self, group_id: int) -> Sequence[tuple[UserGroupMember, User]]:
        rows = self._session.execute(
            select(UserGroupMember, User)
            .join(User, User.id == UserGroupMember.user_id)
            .where(UserGroupMember.group_id == group_id, User.org_id == self._org_id)
            .order_by(User.username)
        ).all()
        return [(row[0], row[1]) for row in rows]

    def membership(self, group_id: int, user_id: int) -> UserGroupMember | None:
        return self._session.get(UserGroupMember, (group_id, user_id))

    def add_member(self, member: UserGroupMember) -> bool:
        """False when the membership was there already: made by another request after the
        caller's check (the primary key refuses the second; in a savepoint, so the
        transaction goes on). Any other refusal (the user deleted meanwhile) is raised."""
        try:
            with self._session.begin_nested():
                self._session.add(member)
        except IntegrityError:
            if self.membership(member.group_id, member.user_id) is None:
                raise
            return False
        return True

    def remove_member(self, group_id: int, user_id: int) -> bool:
        """False when there was none to remove (another request removed it meanwhile)."""
        removed = self._session.execute(
            delete(UserGroupMember).where(
                UserGroupMember.group_id == group_id, UserGroupMember.user_id == user_id
            )
        )
        return bool(getattr(removed, "rowcount", 0))

    def of_user(self, user_id: int) -> Sequence[UserGroup]:
        return self._session.scalars(
            select(UserGroup)
            .join(UserGroupMember, UserGroupMember.group_id == UserGroup.id)
            .where(UserGroupMember.user_id == user_id, UserGroup.org_id == self._org_id)
            .order_by(UserGroup.name)
        ).all()


def group_permissions(session: Session, user_id: int, org_id: int) -> list[str]:
    """Every permission the user's groups grant (one indexed query on each request)."""
    lists = session.scalars(
        select(UserGroup.permissions)
        .join(UserGroupMember, UserGroupMember.group_id == UserGroup.id)
        .where(UserGroupMember.user_id == user_id, UserGroup.org_id == org_id)
    ).all()
    return sorted({p for granted in lists for p in (granted or [])})


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
