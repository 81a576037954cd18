"""The issuance lane's batches (api/v2/issue_lane.issue_batch): refusals before any write keep
the batch going; a failed write or commit rolls the batch back and redoes the others one by
one, so each issuance is written once or not at all. Signing and writing are replaced by
stand-ins: an issuance leaves one row to write, which the batch's write inserts."""

import asyncio
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tessera.api.v2 import issue_lane
from tessera.core.errors import PermissionDenied


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'batch.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE issued (name TEXT PRIMARY KEY)"))
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    factory = sessionmaker(engine)
    factory.kw["info"] = {"commits": commits}
    yield factory
    engine.dispose()


def fake_sign(pending: Any, session: Session) -> tuple[Any, list[Any]]:
    """ "refuse-*" is refused before writing; "boom-*" fails while writing; anything else is
    issued, its row written by the deferred write."""
    name = cast(str, pending.spec)
    if name.startswith("refuse"):
        return PermissionDenied(f"{name} may not issue"), []

    def write() -> None:
        session.execute(text("INSERT INTO issued (name) VALUES (:name)"), {"name": name})
        if name.startswith("boom"):
            raise RuntimeError("the disk is on fire")

    return name, [write]


def run(sessions: sessionmaker[Session], names: list[str]) -> list[Any]:
    loop = asyncio.new_event_loop()
    try:
        batch = [
            issue_lane._Pending(
                cast(Any, None), cast(Any, n), contextvars.copy_context(), loop.create_future()
            )
            for n in names
        ]
        return list(issue_lane.issue_batch(batch, sessions))
    finally:
        loop.close()


def stored(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(text("SELECT name FROM issued")))


def commits(sessions: sessionmaker[Session]) -> int:
    return len(sessions.kw["info"]["commits"])


def fake_write(issued: list[Any]) -> None:
    for write in issued:
        write()


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(issue_lane, "_sign", fake_sign)
    monkeypatch.setattr(issue_lane, "write_issued", fake_write)


def test_a_batch_is_written_in_one_commit(sessions: sessionmaker[Session]) -> None:
    assert run(sessions, ["a", "b", "c"]) == ["a", "b", "c"]
    assert stored(sessions) == ["a", "b", "c"]
    assert commits(sessions) == 1


def test_a_refusal_before_writing_leaves_the_batch_going(sessions: sessionmaker[Session]) -> None:
    outcomes = run(sessions, ["a", "refuse-1", "b"])
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], PermissionDenied)
    assert stored(sessions) == ["a", "b"]
    assert commits(sessions) == 1


def test_a_failed_write_is_undone_and_the_others_redone_apart(
    sessions: sessionmaker[Session],
) -> None:
    outcomes = run(sessions, ["a", "boom-1", "refuse-1", "b"])
    assert outcomes[0] == "a" and outcomes[3] == "b"
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[2], PermissionDenied)
    assert stored(sessions) == ["a", "b"]
    assert commits(sessions) == 2  # "a" and "b" each in a unit of work of their own


def test_a_database_error_fails_only_its_own_issuance(sessions: sessionmaker[Session]) -> None:
    outcomes = run(sessions, ["dup", "c", "dup"])
    assert outcomes[:2] == ["dup", "c"]
    assert isinstance(outcomes[2], IntegrityError)
    assert stored(sessions) == ["c", "dup"]
