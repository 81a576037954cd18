from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from tessera.storage.models import Template


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
