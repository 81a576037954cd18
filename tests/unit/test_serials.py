"""Serial claims on both backends: clashes are skipped, the pool hands out only claimed
serials, and an empty pool falls back to a claim in the caller's transaction."""

import pytest
from sqlalchemy import Engine, func, select

from tessera.core.errors import PolicyViolation
from tessera.storage.db import session_factory
from tessera.storage.models import IssuedSerial
from tessera.storage.repositories.serials import SerialPool, SerialRepository, claim_one


def _claimed(engine: Engine) -> set[str]:
    with session_factory(engine)() as session:
        return set(session.scalars(select(IssuedSerial.serial_number)))


def test_reserve_skips_serials_already_claimed(engine: Engine) -> None:
    with session_factory(engine)() as session, session.begin():
        assert SerialRepository(session).reserve([5, 6]) == [5, 6]
    with session_factory(engine)() as session, session.begin():
        assert SerialRepository(session).reserve([6, 7, 5, 8]) == [7, 8]
    assert _claimed(engine) == {"5", "6", "7", "8"}


def test_claim_one_retries_a_clash_and_gives_up_when_every_draw_clashes(engine: Engine) -> None:
    draws = iter([5, 5, 9])
    with session_factory(engine)() as session, session.begin():
        repo = SerialRepository(session)
        repo.reserve([5])
        assert claim_one(repo, lambda: next(draws)) == 9
        with pytest.raises(PolicyViolation, match="serial"):
            claim_one(repo, lambda: 5)


def test_the_pool_hands_out_claimed_serials_and_asks_for_more_when_low(engine: Engine) -> None:
    counter = iter(range(1000, 2000))
    pool = SerialPool(session_factory(engine), lambda: next(counter), size=8, low=3)
    kicks: list[bool] = []
    pool.wanted = lambda: kicks.append(True)
    pool.refill()
    with session_factory(engine)() as session:
        repo = SerialRepository(session)
        taken = [pool.take(repo) for _ in range(6)]
    assert len(set(taken)) == 6
    assert {format(s, "X") for s in taken} <= _claimed(engine)
    assert kicks, "running low asks for a refill"
    pool.refill()
    with session_factory(engine)() as session:
        count = session.scalar(select(func.count()).select_from(IssuedSerial))
    assert count == 8 + 6  # topped up to 8 free again; nothing claimed twice


def test_an_empty_pool_claims_in_the_callers_transaction(engine: Engine) -> None:
    pool = SerialPool(session_factory(engine), lambda: 77, size=4, low=1)
    with session_factory(engine)() as session, session.begin():
        assert pool.take(SerialRepository(session)) == 77
    assert _claimed(engine) == {"4D"}
