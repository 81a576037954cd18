"""Reading an uploaded object either as multipart (file + fields) or as a JSON body."""

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile

from tessera.core import jsontext
from tessera.core.errors import InvalidInput

MAX_UPLOAD = 5 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    content: bytes
    fields: dict[str, str]

    def flag(self, name: str, default: bool) -> bool:
        value = self.fields.get(name)
        if value is None:
            return default
        return value.strip().lower() in ("1", "true", "yes", "on")


async def read_upload(request: Request, text_fields: tuple[str, ...]) -> Upload:
    """Multipart: the `file` part. JSON: the first of `text_fields` present, as text."""
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
        raise InvalidInput(f"one of {list(text_fields)} is required")
    extra = "\n".join(v for k, v in payload.items() if k == "private_key" and isinstance(v, str))
    fields = _checked({k: _as_text(v) for k, v in payload.items() if v is not None})
    return Upload((text + "\n" + extra).encode(), fields)


async def _multipart(request: Request) -> Upload:
    form = await request.form(max_part_size=MAX_UPLOAD)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("a 'file' part is required")
    content = await upload.read(MAX_UPLOAD + 1)
    if len(content) > MAX_UPLOAD:
        raise InvalidInput("upload too large")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return Upload(content, _checked(fields))


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


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
