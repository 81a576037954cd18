"""Certificate templates: create, update, delete, export and import.

One document shape serves every direction: what export writes is what create, update and
import read (`name`, `description`, `template_type`, `validity_days`, `key_type`, `key_size`,
`key_usage`, `extended_key_usage`, `basic_constraints` {`ca`, `path_length`},
`subject_defaults` {`organization`, `organizational_unit`, `country`, `state`, `locality`}).
The subject defaults may also be given as top-level fields, and `is_ca` / `path_length` /
`key_algorithm` are read as the API's views spell them, so a view can be sent back as is.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.exc import IntegrityError

from tessera.core import jsontext, profile
from tessera.core.errors import Conflict, InvalidInput, NotFound, TesseraError
from tessera.domains import audit, bulk
from tessera.domains.actor import Actor
from tessera.domains.exports import Exported, safe_name
from tessera.domains.issuance import core_template
from tessera.storage import models
from tessera.storage.repositories import Repositories

JSON_TYPE = "application/json"
MAX_IMPORT_ENTRIES = 1000
SUBJECT_KEYS = tuple(profile.SUBJECT_DEFAULTS)
DOCUMENT_KEYS = (
    "name",
    "description",
    "template_type",
    "validity_days",
    "key_type",
    "key_size",
    "key_usage",
    "extended_key_usage",
    "basic_constraints",
    "subject_defaults",
)


@dataclass(frozen=True)
class TemplateFields:
    """A checked template document, ready to be written to a row."""

    name: str
    description: str | None
    template_type: str
    validity_days: int | None
    key_algorithm: str | None
    key_size: int | None
    key_usage: list[str] | None
    extended_key_usage: list[str] | None
    is_ca: bool
    path_length: int | None
    subject_defaults: dict[str, str] | None


@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "skipped": self.skipped,
            "errors": self.errors,
        }


class TemplateService:
    def __init__(self, repos: Repositories, actor: Actor) -> None:
        self._repos = repos
        self._actor = actor

    def all(self) -> Sequence[models.Template]:
        return self._repos.templates.all()

    def get(self, template_id: int) -> models.Template:
        row = self._repos.templates.get(template_id)
        if row is None:
            raise NotFound(f"template {template_id} not found")
        return row

    def create(self, entry: Mapping[str, Any], source: str = "api") -> models.Template:
        fields = read_fields(canonical(entry))
        if self._repos.templates.by_name(fields.name) is not None:
            raise Conflict(f"a template named {fields.name!r} already exists")
        row = models.Template()
        _assign(row, fields)
        self._repos.templates.add(row)
        details = {"name": row.name, "source": source}
        audit.record(self._repos.audit, self._actor, "template.create", "template", row.id, details)
        return row

    def update(
        self, template_id: int, changes: Mapping[str, Any], source: str = "api"
    ) -> models.Template:
        return self._update(self.get(template_id), changes, source)

    def _update(
        self, row: models.Template, changes: Mapping[str, Any], source: str
    ) -> models.Template:
        before = document(row)
        fields = read_fields(canonical(changes, _with_derived_type_open(before, changes)))
        if fields.name != row.name and self._repos.templates.by_name(fields.name) is not None:
            raise Conflict(f"a template named {fields.name!r} already exists")
        _assign(row, fields)
        self._repos.templates.save(row)
        after = document(row)
        changed = sorted(k for k in after if after[k] != before[k])
        details = {"name": row.name, "changed": changed, "source": source}
        audit.record(self._repos.audit, self._actor, "template.update", "template", row.id, details)
        return row

    def delete(self, template_id: int) -> None:
        """Allowed while certificates reference it: they keep their content, and their
        template_id becomes NULL (the foreign key's ON DELETE SET NULL)."""
        row = self.get(template_id)
        unlinked = self._repos.templates.certificate_count(row.id)
        self._repos.templates.delete(row)
        details = {"name": row.name, "certificates_unlinked": unlinked}
        audit.record(self._repos.audit, self._actor, "template.delete", "template", row.id, details)

    def bulk_delete(self, ids: Sequence[int]) -> bulk.BulkResult:
        return bulk.each(self._repos.session, ids, self.delete)

    def export(self, template_id: int) -> Exported:
        row = self.get(template_id)
        content = json.dumps(document(row), indent=2).encode()
        return Exported(content, JSON_TYPE, f"{safe_name(row.name, f'template-{row.id}')}.json")

    def export_all(self) -> Exported:
        content = json.dumps([document(r) for r in self.all()], indent=2).encode()
        return Exported(content, JSON_TYPE, "templates.json")

    def import_documents(self, content: bytes, update_existing: bool) -> ImportReport:
        """Each entry in its own savepoint: a bad one is reported and skipped, and leaves
        nothing behind, while the others are written."""
        report = ImportReport()
        for index, entry in enumerate(parse_import(content)):
            try:
                with self._repos.session.begin_nested():
                    outcome = self._import_one(entry, update_existing)
            except TesseraError as exc:
                report.skipped += 1
                report.errors.append(
                    {"index": index, "name": _name_of(entry), "error": exc.message}
                )
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
        details = {k: v for k, v in report.as_dict().items() if k != "errors"}
        details["errors"] = len(report.errors)
        audit.record(self._repos.audit, self._actor, "template.import", "template", None, details)
        return report

    def _import_one(self, entry: object, update_existing: bool) -> str:
        if not isinstance(entry, Mapping):
            raise InvalidInput("the entry is not a JSON object")
        name = read_fields(canonical(entry)).name
        existing = self._repos.templates.by_name(name)
        if existing is None:
            existing = self._create_imported(entry, name)
            if existing is None:
                return "imported"
        if not update_existing:
            return "skipped"
        self._update(existing, entry, "import")
        return "updated"

    def _create_imported(self, entry: Mapping[str, Any], name: str) -> models.Template | None:
        """None once created; else the template another request created after our check,
        which the import then treats as one that was there before. Found by create's own
        check, or by the unique name when the other insert is not yet committed (PostgreSQL
        waits for it, then refuses ours): in a savepoint, so the import goes on."""
        try:
            with self._repos.session.begin_nested():
                self.create(entry, source="import")
            return None
        except (IntegrityError, Conflict):
            existing = self._repos.templates.by_name(name)
            if existing is None:
                raise
            return existing


def parse_import(content: bytes) -> list[object]:
    """A JSON array of template documents, one document, or {"templates": [...]}."""
    try:
        parsed = jsontext.loads(content)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidInput("the template import is not valid JSON") from exc
    if isinstance(parsed, dict):  # a template has no `templates` field: a wrapper does
        parsed = parsed.get("templates", [parsed])
    if not isinstance(parsed, list):
        raise InvalidInput("the template import must be a JSON array of templates")
    if len(parsed) > MAX_IMPORT_ENTRIES:
        raise InvalidInput(f"at most {MAX_IMPORT_ENTRIES} templates per import")
    return parsed


def document(row: models.Template) -> dict[str, Any]:
    """The template as export writes it and create, update and import read it."""
    return {
        "name": row.name,
        "description": row.description,
        "template_type": row.template_type,
        "validity_days": row.validity_days,
        "key_type": row.key_algorithm,
        "key_size": row.key_size,
        "key_usage": row.key_usage,
        "extended_key_usage": row.extended_key_usage,
        "basic_constraints": {"ca": row.is_ca, "path_length": row.path_length},
        "subject_defaults": dict(row.subject_defaults or {}),
    }


def canonical(entry: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The document `entry` describes, laid over `base` (the current one, for an update).
    basic_constraints merges key by key; a subject_defaults object replaces the old one;
    top-level subject fields set (or, when null, remove) one default each; a new key type
    without a key_size leaves the size open."""
    doc = dict(base or {})
    doc.update({k: entry[k] for k in DOCUMENT_KEYS if k in entry and k != "basic_constraints"})
    if "key_algorithm" in entry and "key_type" not in entry:
        doc["key_type"] = entry["key_algorithm"]
    old_type = _key_type_name((base or {}).get("key_type"))
    if "key_size" not in entry and _key_type_name(doc.get("key_type")) != old_type:
        doc["key_size"] = None  # the size kept was the old type's: the new type's is open
    constraints = dict(_mapping(doc.get("basic_constraints"), "basic_constraints"))
    if "basic_constraints" in entry:
        constraints.update(_mapping(entry["basic_constraints"], "basic_constraints"))
    else:
        if "is_ca" in entry:
            constraints["ca"] = entry["is_ca"]
        if "path_length" in entry:
            constraints["path_length"] = entry["path_length"]
    doc["basic_constraints"] = constraints
    subject = {k: entry[k] for k in SUBJECT_KEYS if k in entry}
    if subject:
        defaults = _mapping(doc.get("subject_defaults"), "subject_defaults")
        doc["subject_defaults"] = {**defaults, **subject}
    return doc


def read_fields(doc: Mapping[str, Any]) -> TemplateFields:
    """Check a document field by field, then let the core check what the template fixes."""
    constraints = _mapping(doc.get("basic_constraints"), "basic_constraints")
    is_ca = _flag(constraints.get("ca"), "basic_constraints.ca")
    key_type = _text(doc.get("key_type"), "key_type", 16)
    # the core refuses every size it does not generate, as for a CA or a certificate
    key_size = _integer(doc.get("key_size"), "key_size", limit=None)
    fields = TemplateFields(
        name=_required_text(doc.get("name"), "name", 200),
        description=_text(doc.get("description"), "description", 4000),
        template_type="",
        validity_days=_integer(doc.get("validity_days"), "validity_days"),
        key_algorithm=key_type,
        key_size=key_size,
        key_usage=_names(doc.get("key_usage"), "key_usage"),
        extended_key_usage=_names(doc.get("extended_key_usage"), "extended_key_usage"),
        is_ca=is_ca,
        path_length=_integer(constraints.get("path_length"), "basic_constraints.path_length"),
        subject_defaults=_subject_defaults(doc.get("subject_defaults")),
    )
    core = core_template(fields)
    assert core is not None
    profile.check_template(core)
    spec = profile.template_key_spec(core)
    kind = _text(doc.get("template_type"), "template_type", 32) or _derived_type(fields)
    if spec is None:
        return replace(fields, template_type=kind)
    size_fixed = fields.key_size is not None or spec.algorithm == "Ed25519"
    return replace(
        fields,
        template_type=kind,
        key_algorithm=spec.algorithm,
        key_size=spec.size if size_fixed else None,
    )


def _assign(row: models.Template, fields: TemplateFields) -> None:
    row.name, row.description = fields.name, fields.description
    row.template_type, row.validity_days = fields.template_type, fields.validity_days
    row.key_algorithm, row.key_size = fields.key_algorithm, fields.key_size
    row.key_usage, row.extended_key_usage = fields.key_usage, fields.extended_key_usage
    row.is_ca, row.path_length = fields.is_ca, fields.path_length
    row.subject_defaults = fields.subject_defaults


def _with_derived_type_open(before: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A type that was derived from the fields is derived again from the changed ones (a
    server template given clientAuth instead becomes a client one); one chosen stays."""
    if "template_type" in changes:
        return before
    try:
        derived = read_fields({**before, "template_type": None}).template_type
    except TesseraError:  # stored under older rules: the update itself will say what is wrong
        return before
    return {**before, "template_type": None} if before["template_type"] == derived else before


def _derived_type(fields: TemplateFields) -> str:
    if fields.is_ca:
        return "ca"
    ekus = set(fields.extended_key_usage or ())
    if {"serverAuth", "clientAuth"} <= ekus:
        return "server_client"
    kinds = (
        ("serverAuth", "server"),
        ("clientAuth", "client"),
        ("codeSigning", "code_signing"),
        ("emailProtection", "email"),
    )
    return next((kind for eku, kind in kinds if eku in ekus), "custom")


def _key_type_name(value: object) -> object:
    """A key type as written, with the spellings that name the same type made one."""
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    return "EC" if name == "ECDSA" else name


def _name_of(entry: object) -> str | None:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return name[:200] if isinstance(name, str) else None


def _mapping(value: object, label: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{label} must be an object")
    return value


def _text(value: object, label: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        raise InvalidInput(f"{label} must be text of at most {limit} characters")
    return value.strip() or None


def _required_text(value: object, label: str, limit: int) -> str:
    text = _text(value, label, limit)
    if text is None:
        raise InvalidInput(f"{label} is required")
    return text


def _integer(value: object, label: str, limit: int | None = 2**31 - 1) -> int | None:
    """`limit`: what the INTEGER column holds, for a value nothing else bounds first."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{label} must be a whole number")
    if limit is not None and abs(value) > limit:
        raise InvalidInput(f"{label} is out of range (at most {limit})")
    return value


def _flag(value: object, label: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{label} must be true or false")
    return value


def _names(value: object, label: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{label} must be a list of names")
    names = list(dict.fromkeys(v.strip() for v in value))
    if any("\x00" in n or len(n) > 64 for n in names):
        raise InvalidInput(f"{label} holds an invalid name")
    return names or None


def _subject_defaults(value: object) -> dict[str, str] | None:
    given = _mapping(value, "subject_defaults")
    defaults = {}
    for key, raw in given.items():
        text = _text(raw, f"subject default {key}", 128)
        if text is not None:
            defaults[str(key)] = text.upper() if key == "country" else text
    return defaults or None
