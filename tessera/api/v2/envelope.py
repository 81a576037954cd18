"""The native API's response envelope: {"data", "message", "meta"}."""

import unicodedata
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi.responses import JSONResponse, Response

from tessera.core.clock import wire_time
from tessera.domains.bulk import BulkResult
from tessera.domains.exports import Exported


def ok(
    data: Any = None,
    message: str | None = None,
    meta: dict[str, Any] | None = None,
    status: int = 200,
) -> JSONResponse:
    body: dict[str, Any] = {"data": data}
    if message is not None:
        body["message"] = message
    if meta is not None:
        body["meta"] = meta
    return JSONResponse(body, status_code=status)


def bulk_answer(result: BulkResult, message: str, **more: Any) -> JSONResponse:
    """A bulk operation's answer: the seed's {"success", "failed"}, with why each failed."""
    data = {"success": result.success, "failed": result.failed, "errors": result.errors}
    return ok({**data, **more}, message)


def page_meta(page: int, per_page: int, total: int) -> dict[str, int]:
    return {"page": page, "per_page": per_page, "total": total}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else wire_time(moment)


def download(exported: Exported) -> Response:
    headers = {"Content-Disposition": content_disposition(exported.filename)}
    return Response(exported.content, media_type=exported.media_type, headers=headers)


def content_disposition(filename: str) -> str:
    """An attachment header for any file name. Header values are bytes (Latin-1 at most, and
    only ASCII is safe), so a name outside printable ASCII travels as RFC 8187 `filename*`
    (UTF-8, percent-encoded), after an ASCII `filename` for clients that ignore it (RFC 6266
    4.3). An ASCII name keeps the one plain parameter."""
    if _plain(filename):
        return f'attachment; filename="{filename}"'
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{_ascii_fallback(filename)}\"; filename*=UTF-8''{encoded}"


def _plain(text: str) -> bool:
    """Fits a quoted-string as it is: printable ASCII without quote or backslash."""
    return all(" " <= c <= "~" and c not in '"\\' for c in text)


def _ascii_fallback(filename: str) -> str:
    """Accents dropped (Köln -> Koln), any other character outside plain ASCII made `_`."""
    folded = unicodedata.normalize("NFKD", filename)
    kept = "".join(c for c in folded if not unicodedata.combining(c))
    return "".join(c if _plain(c) else "_" for c in kept)
