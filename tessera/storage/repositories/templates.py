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

    def add(self, template: Template) -> Template:
        template.org_id = self._org_id
        self._session.add(template)
        self._session.flush()
        return template
