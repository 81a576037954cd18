"""The background job runner (tessera/jobs.py): each job runs once per process. A second
start (both listeners of a worker once ran the app's lifespan) would run every job twice at
once, racing on the jobs' own state (the CRL builder was seen failing so)."""

import asyncio
import threading

import pytest

from tessera.jobs import Jobs


def test_a_second_start_is_refused_and_a_restart_after_stop_works() -> None:
    ran = threading.Event()

    async def scenario() -> None:
        jobs = Jobs()
        jobs.every("probe", 3600.0, ran.set)
        await jobs.start()
        assert await asyncio.to_thread(ran.wait, 10)  # once at start
        with pytest.raises(RuntimeError, match="running already"):
            await jobs.start()
        await jobs.stop()
        await jobs.start()  # a lifespan that ends and starts again
        await jobs.stop()

    asyncio.run(scenario())
