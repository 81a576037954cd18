from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate, Template


class TemplateRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def get(self, template_id: int) -> Template | None:
        return self._session.scalar(
            select(Template).where(Template.id == template_id, Template.org_id == self._org_id)
        )

    def by_name(self, name: str) -> Template | None:
        return self._session.scalar(
            select(Template).where(Template.name == name, Template.org_id == self._org_id)
        )

    def all(self) -> Sequence[Template]:
        query = select(Template).where(Template.org_id == self._org_id).order_by(Template.id)
        return self._session.scalars(query).all()

    def exists(self) -> bool:
        query = select(Template.id).where(Template.org_id == self._org_id).limit(1)
        return self._session.scalar(query) is not None

    def add(self, template: Template) -> Template:
        template.org_id = self._org_id
        self._session.add(template)
        self._session.flush()
        return template

    def save(self, template: Template) -> Template:
        """Write pending changes now, so a clash (such as a taken name) surfaces here."""
        self._session.flush()
        return template

    def certificate_count(self, template_id: int) -> int:
        query = select(func.count()).where(
            Certificate.org_id == self._org_id, Certificate.template_id == template_id
        )
        return self._session.scalar(query) or 0

    def hold_for_issuance(self, template_ids: Sequence[int]) -> set[int]:
        """Which of the templates are still there, each then kept from deletion until the
        transaction ends (PostgreSQL: FOR KEY SHARE, which an edit of the template does not
        wait for; SQLite: the caller holds the database's write lock already)."""
        query = (
            select(Template.id)
            .where(Template.id.in_(sorted(template_ids)), Template.org_id == self._org_id)
            .order_by(Template.id)
            .with_for_update(read=True, key_share=True)
        )
        return set(self._session.scalars(query))

    def delete(self, template: Template) -> None:
        """Certificates issued with it keep their content; their template_id becomes NULL."""
        self._session.execute(
            delete(Template).where(Template.id == template.id, Template.org_id == self._org_id)
        )
