"""Reading an uploaded object either as multipart (file + fields) or as a JSON body, and
describing such a body in the OpenAPI document (`upload_body`)."""

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from tessera.api.openapi import Schema, request_body
from tessera.api.v2.params import MAX_ROW_ID
from tessera.core import jsontext
from tessera.core.errors import InvalidInput

MAX_UPLOAD = 5 * 1024 * 1024
KEY_FIELD = "private_key"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NAME_MAX = 200  # the name columns' width


@dataclass(frozen=True)
class Upload:
    """`content` is the uploaded object; `private_key` the separate key field, if one was
    given (it must then be read as a key, never dropped). Of the other fields, `texts` holds
    the strings; `others` the JSON values that are not (booleans, numbers, objects, arrays),
    which only the readers that take them accept: a flag, a number, never text."""

    content: bytes
    texts: dict[str, str]
    others: dict[str, object] = field(default_factory=dict)
    private_key: bytes | None = None

    def text(self, name: str) -> str | None:
        if name in self.others:
            raise InvalidInput(f"{name} must be text")
        return self.texts.get(name)

    def display_name(self) -> str | None:
        """The `name` field: what the imported object is listed as (None: its own name)."""
        name = (self.text("name") or "").strip()
        if len(name) > NAME_MAX:
            raise InvalidInput(f"name must be at most {NAME_MAX} characters")
        return name or None

    def flag(self, name: str, default: bool) -> bool:
        value = self.others.get(name)
        if isinstance(value, bool):
            return value
        if name in self.others:
            if isinstance(value, int) and value in (0, 1):
                return value == 1
            raise InvalidInput(f"{name} must be true or false")
        text = self.texts.get(name)
        if text is None:
            return default
        word = text.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:  # a typo must not quietly mean false
            raise InvalidInput(f"{name} must be true or false")
        return word in TRUE_WORDS

    def number_text(self, name: str) -> str | None:
        """A field that holds an integer, given as a JSON number or as text (still unchecked)."""
        if name in self.others:
            value = self.others[name]
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            raise InvalidInput(f"{name} must be an integer")
        return self.texts.get(name)


async def read_upload(
    request: Request, text_fields: tuple[str, ...], fields: Collection[str]
) -> Upload:
    """Multipart: the `file` part. JSON: the first of `text_fields` present, as text. In both,
    a `private_key` field is kept apart, to be read as a key. `fields` names the other fields
    the endpoint reads (its `upload_body` fields): a multipart part by any other name, or one
    given twice, is refused rather than ignored (a second file would go unread)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _multipart(request, fields)
    body = await request.body()
    if len(body) > MAX_UPLOAD:
        raise InvalidInput("upload too large")
    try:
        payload = jsontext.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        # curl -d sends this type: JSON sent so is read as JSON, but a form's fields are not.
        if content_type.startswith("application/x-www-form-urlencoded"):
            told = "a URL-encoded form is not read here: send multipart/form-data or JSON"
            raise InvalidInput(told) from exc
        raise InvalidInput("malformed JSON body") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("the JSON body must be an object")
    text = next((payload[f] for f in text_fields if isinstance(payload.get(f), str)), None)
    if text is None:
        # Given as another JSON type (a template array, a number): say so, not "missing".
        wrong = next((f for f in text_fields if payload.get(f) is not None), None)
        if wrong is not None:
            raise InvalidInput(f"{wrong} must be text (the file's content as a JSON string)")
        raise InvalidInput(f"one of {list(text_fields)} is required")
    given = {k: v for k, v in payload.items() if v is not None}
    key = given.pop(KEY_FIELD, None)
    if key is not None and not isinstance(key, str):
        raise InvalidInput(f"{KEY_FIELD} must be text (a PEM private key)")
    texts = _checked({k: v for k, v in given.items() if isinstance(v, str)})
    others = {k: v for k, v in given.items() if not isinstance(v, str)}
    return Upload(text.encode(), texts, others, _key_bytes(key))


async def _multipart(request: Request, fields: Collection[str]) -> Upload:
    form = await request.form(max_part_size=MAX_UPLOAD)
    _one_of_each_part(form, fields)
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        content = await upload.read(MAX_UPLOAD + 1)
        if len(content) > MAX_UPLOAD:
            raise InvalidInput("upload too large")
    elif isinstance(upload, str):
        # A part without a file name arrives as a text field: `curl -F 'file=<cert.pem'`
        # (the file's text, where `file=@` sends the file) or a form's pasted text. Text:
        # PEM or base64, as in JSON; a binary file goes as a file part.
        content = upload.encode("utf-8")
    else:
        raise InvalidInput("a 'file' part is required")
    key_part = form.get(KEY_FIELD)
    key: bytes | None
    if isinstance(key_part, UploadFile):
        key = await key_part.read(MAX_UPLOAD + 1)
        if len(key) > MAX_UPLOAD:
            raise InvalidInput("upload too large")
        key = key if key.strip() else None
    else:
        key = _key_bytes(key_part if isinstance(key_part, str) else None)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k not in (KEY_FIELD, "file")}
    return Upload(content, _checked(fields), {}, key)


def _one_of_each_part(form: FormData, fields: Collection[str]) -> None:
    """One file, and each field the endpoint reads at most once: of two, which was meant
    cannot be told (a second file used to replace the first silently). Other fields are
    ignored, as in JSON bodies: UCM's own web client sends `format=auto` with its imports."""
    names = [name for name, _ in form.multi_items()]
    if "file" not in names:
        raise InvalidInput("a 'file' part is required")
    if names.count("file") > 1:
        raise InvalidInput("only one file is accepted: the upload has several 'file' parts")
    for name in fields:
        if names.count(name) > 1:
            raise InvalidInput(f"field {name!r} is given more than once")


def _key_bytes(key: str | None) -> bytes | None:
    """A key field that is empty (or blank) counts as not given."""
    if key is None or not key.strip():
        return None
    _checked({KEY_FIELD: key})
    return key.encode()


def _checked(fields: dict[str, str]) -> dict[str, str]:
    """No NUL (PostgreSQL text cannot hold one) and valid Unicode: JSON can carry lone
    surrogates, which cannot be encoded and would fail later, as a 500."""
    if any("\x00" in value for value in fields.values()):
        raise InvalidInput("form fields must not contain NUL characters")
    try:
        for value in fields.values():
            value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput("text must be valid Unicode (no lone surrogates)") from exc
    return fields


# The OpenAPI document's description of such a body. The handlers parse it themselves (above),
# so FastAPI knows nothing of it: each upload route passes `upload_body(...)` as its
# `openapi_extra`, naming the fields its handler reads.


@dataclass(frozen=True)
class Described:
    """One field of an upload: its schema in a JSON body and as a multipart part."""

    json: Schema
    form: Schema


def text(description: str, max_length: int | None = None) -> Described:
    schema: Schema = {"type": "string", "description": description}
    if max_length is not None:
        schema["maxLength"] = max_length
    return Described(schema, schema)


def flag(default: bool, description: str) -> Described:
    """`Upload.flag`: JSON true/false (or 0/1, or the words), a word in a form."""
    told = f"{description} (default {str(default).lower()}; the words are read in any case)"
    words: Schema = {"type": "string", "enum": list(TRUE_WORDS + FALSE_WORDS)}
    json_schema: Schema = {
        "anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}, words],
        "description": told,
    }
    return Described(json_schema, {**words, "description": told})


def row_id(description: str) -> Described:
    """`Upload.number_text`: a row id as a JSON number or as text holding one (empty: none)."""
    digits: Schema = {"type": "string", "pattern": r"^\s*[0-9]*\s*$"}
    number: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}
    return Described(
        {"anyOf": [number, digits], "description": description},
        {**digits, "description": description},
    )


PASSWORD = text("opens a PKCS#12 file or an encrypted private key")
NAME = text("what the imported object is listed as (empty: its own name)", NAME_MAX)
PRIVATE_KEY = Described(
    {"type": "string", "description": "a PEM private key for the certificate (blank: none)"},
    {
        "type": "string",
        "description": "a PEM private key for the certificate, as a text field or a file part",
    },
)
FILE: Schema = {"type": "string", "contentMediaType": "application/octet-stream"}


def upload_body(what: str, content_fields: tuple[str, ...], **fields: Described) -> Schema:
    """`openapi_extra` for a route that reads `read_upload(request, content_fields)`: JSON
    with the object as text in one of `content_fields`, or multipart with a `file` part;
    `fields` are the other fields its handler reads. In JSON, a field sent as null counts as
    not sent, and fields the handler does not read are ignored; in multipart they are refused
    (`read_upload`)."""
    as_text = f"{what}, as text"
    properties = {
        name: _nullable({"type": "string", "description": as_text}) for name in content_fields
    }
    properties |= {name: _nullable(described.json) for name, described in fields.items()}
    json_schema: Schema = {"type": "object", "properties": properties}
    if len(content_fields) == 1:
        json_schema["required"] = list(content_fields)
        properties[content_fields[0]] = {"type": "string", "description": as_text}
    else:  # one of them, as text
        json_schema["anyOf"] = [
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in content_fields
        ]
    form_properties = {"file": {**FILE, "description": what}}
    form_properties |= {name: described.form for name, described in fields.items()}
    form: Schema = {"type": "object", "properties": form_properties, "required": ["file"]}
    content = {"multipart/form-data": form, "application/json": json_schema}
    told = f"{what}; as a multipart upload (its `file` part) or as JSON (the content as text)"
    return request_body(told, content)


def _nullable(schema: Schema) -> Schema:
    description = schema.get("description")
    bare: dict[str, Any] = {k: v for k, v in schema.items() if k != "description"}
    wrapped: Schema = {"anyOf": [*bare.get("anyOf", [bare]), {"type": "null"}]}
    if description is not None:
        wrapped["description"] = description
    return wrapped
