"""Which requests the issuance lane takes for itself, and that everything else reaches FastAPI
whole (tests/e2e/test_issue_lane.py checks the answers through a real server)."""

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from tessera.api.v2.issue_lane import PATH, IssuanceLane, _is_issuance


def scope(method: str = "POST", path: str = PATH, content_type: bytes | None = None) -> Scope:
    headers = [(b"host", b"localhost")]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    return {"type": "http", "method": method, "path": path, "headers": headers}


@pytest.mark.parametrize(
    ("method", "path", "content_type", "taken"),
    [
        ("POST", PATH, b"application/json", True),
        ("POST", PATH, b"application/json; charset=utf-8", True),
        ("POST", PATH, b"APPLICATION/JSON", True),
        ("POST", PATH, b"text/plain", False),
        ("POST", PATH, b"application/jsonx", False),
        ("POST", PATH, None, False),
        ("POST", PATH + "/", b"application/json", False),
        ("POST", PATH + "/import", b"application/json", False),
        ("GET", PATH, b"application/json", False),
    ],
)
def test_takes_only_json_posts_to_the_route(
    method: str, path: str, content_type: bytes | None, taken: bool
) -> None:
    assert _is_issuance(scope(method, path, content_type)) is taken


@pytest.mark.parametrize(
    "body", [b"", b'{"ca_id": 1,', b"[1]", b'{"common_name": "x"}', b'{"ca_id": "x"}']
)
def test_a_body_the_model_refuses_reaches_fastapi_whole(body: bytes) -> None:
    """Sent in two chunks: what the next app reads is the whole body, once."""
    chunks: list[Message] = [
        {"type": "http.request", "body": body[:3], "more_body": True},
        {"type": "http.request", "body": body[3:], "more_body": False},
    ]
    seen: list[bytes] = []

    async def receive() -> Message:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def next_app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["more_body"] is False
        seen.append(message["body"])
        assert (await receive())["type"] == "http.disconnect"

    async def send(message: Message) -> None:
        raise AssertionError("the lane must not answer a body it did not take")

    lane = IssuanceLane(next_app)
    asyncio.run(lane(scope(content_type=b"application/json"), receive, send))
    assert seen == [body]
