"""The native API's response envelope: {"data", "message", "meta"}."""

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse, Response

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


def page_meta(page: int, per_page: int, total: int) -> dict[str, int]:
    return {"page": page, "per_page": per_page, "total": total}


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def download(exported: Exported) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{exported.filename}"'}
    return Response(exported.content, media_type=exported.media_type, headers=headers)
