"""Reading an uploaded object either as multipart (file + fields) or as a JSON body."""

from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile

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


async def read_upload(request: Request, text_fields: tuple[str, ...]) -> Upload:
    """Multipart: the `file` part. JSON: the first of `text_fields` present, as text. In both,
    a `private_key` field is kept apart, to be read as a key."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _multipart(request)
    body = await request.body()
    if len(body) > MAX_UPLOAD:
        raise InvalidInput("upload too large")
    try:
        payload = jsontext.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
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


async def _multipart(request: Request) -> Upload:
    form = await request.form(max_part_size=MAX_UPLOAD)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("a 'file' part is required")
    content = await upload.read(MAX_UPLOAD + 1)
    if len(content) > MAX_UPLOAD:
        raise InvalidInput("upload too large")
    key_part = form.get(KEY_FIELD)
    key: bytes | None
    if isinstance(key_part, UploadFile):
        key = await key_part.read(MAX_UPLOAD + 1)
        if len(key) > MAX_UPLOAD:
            raise InvalidInput("upload too large")
        key = key if key.strip() else None
    else:
        key = _key_bytes(key_part if isinstance(key_part, str) else None)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k != KEY_FIELD}
    return Upload(content, _checked(fields), {}, key)


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
