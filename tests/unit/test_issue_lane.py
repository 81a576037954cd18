"""Which requests the issuance lane takes for itself, and that everything else reaches FastAPI
whole (tests/e2e/test_issue_lane.py checks the answers through a real server)."""

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import pytest
from starlette.types import Message, Receive, Scope, Send

from tessera.api.v2 import issue_lane
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


# --- how waiting requests are formed into batches -------------------------------------------


def _pending(loop: asyncio.AbstractEventLoop) -> issue_lane._Pending:
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(sessions=None)))
    request = cast(Any, SimpleNamespace(app=app))
    return issue_lane._Pending(
        request, cast(Any, None), contextvars.copy_context(), loop.create_future()
    )


def test_waiting_requests_fill_every_lane_thread_and_the_rest_follow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst larger than a batch takes both lane threads at once; requests that arrive while
    both are busy start as soon as one batch is done; every request is answered once."""
    sizes: list[int] = []
    gates = [threading.Event() for _ in range(3)]
    taking = threading.Lock()

    def held_batch(batch: list[Any], _sessions: Any) -> list[Any]:
        with taking:
            gate = gates[len(sizes)]
            sizes.append(len(batch))
        gate.wait(10)
        return ["issued"] * len(batch)

    monkeypatch.setattr(issue_lane, "issue_batch", held_batch)

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        lane = IssuanceLane(cast(Any, None))
        burst = [_pending(loop) for _ in range(issue_lane.MAX_BATCH + 4)]
        lane._waiting.extend(burst)
        lane._start_waiting()
        assert lane._batches == 2 and lane._waiting == []
        later = [_pending(loop) for _ in range(3)]
        lane._waiting.extend(later)
        lane._start_waiting()  # both threads busy: they wait
        assert lane._batches == 2 and len(lane._waiting) == 3
        while len(sizes) < 2:
            await asyncio.sleep(0.01)
        gates[0].set()
        while len(sizes) < 3:
            await asyncio.sleep(0.01)
        gates[1].set()
        gates[2].set()
        return list(await asyncio.gather(*(p.outcome for p in burst + later)))

    outcomes = asyncio.run(scenario())
    assert sorted(sizes[:2]) == [4, issue_lane.MAX_BATCH] and sizes[2] == 3
    assert outcomes == ["issued"] * (issue_lane.MAX_BATCH + 7)


def test_a_stopped_pool_answers_each_waiting_request(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = ThreadPoolExecutor(1)
    stopped.shutdown()
    monkeypatch.setattr(issue_lane, "LANE_POOL", stopped)

    async def scenario() -> tuple[list[Any], int]:
        lane = IssuanceLane(cast(Any, None))
        waiting = [_pending(asyncio.get_running_loop()) for _ in range(20)]
        lane._waiting.extend(waiting)
        lane._start_waiting()
        return list(await asyncio.gather(*(p.outcome for p in waiting))), lane._batches

    outcomes, running = asyncio.run(scenario())
    assert running == 0
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
