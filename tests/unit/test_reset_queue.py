"""The password-reset work queue of a process is bounded: with MAX_QUEUED_RESETS requests
waiting (each may wait for an SMTP server's timeout), more are dropped and logged instead of
piling up; the room comes back as queued work finishes."""

import logging
import threading
from typing import Any

import pytest

from tessera.api.v2 import mailing
from tessera.domains.actor import system_actor


def test_a_full_queue_drops_requests_and_frees_room_as_work_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release, done = threading.Event(), threading.Semaphore(0)
    ran: list[str] = []

    def slow_work(_rt: Any, email: str, _policy: Any, _who: Any) -> None:
        release.wait(30)  # a bound on the test, not a timing
        ran.append(email)
        done.release()

    monkeypatch.setattr(mailing, "send_reset_links", slow_work)
    limit = mailing.MAX_QUEUED_RESETS
    who = system_actor(1)
    with caplog.at_level(logging.WARNING, logger="tessera.auth"):
        for index in range(limit + 5):
            mailing.request_reset_links(None, f"user{index}@example.test", None, who)  # type: ignore[arg-type]
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 5
    release.set()
    for _ in range(limit):
        assert done.acquire(timeout=30)
    assert sorted(ran) == sorted(f"user{i}@example.test" for i in range(limit))
    # Room again once the work has ended (the semaphore is released after each one).
    release.clear()
    release.set()
    mailing.request_reset_links(None, "later@example.test", None, who)  # type: ignore[arg-type]
    assert done.acquire(timeout=30) and ran[-1] == "later@example.test"
