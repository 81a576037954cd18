"""Background work of one server process: periodic tasks that can also be kicked to run soon.

Every server process runs the same jobs. A job that must not run in two processes at once
takes a lock itself (the database is the place to coordinate: a claimed row, an advisory
lock), because the processes may one day be on several hosts. Jobs run in a worker thread
so a slow one never blocks request handling; one job never overlaps with itself in a process.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("tessera.jobs")


@dataclass
class _Job:
    name: str
    interval: float
    work: Callable[[], None]
    kicked: asyncio.Event = field(default_factory=asyncio.Event)


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def every(self, name: str, seconds: float, work: Callable[[], None]) -> None:
        """Run `work` every `seconds` (and once at start), and whenever kicked."""
        if name in self._jobs:
            raise ValueError(f"job {name!r} is already registered")
        self._jobs[name] = _Job(name, seconds, work)

    def kick(self, name: str) -> None:
        """Ask for a run soon. Kicks that arrive before the run starts make one run, so a
        burst of events costs one run, not one each. Safe to call from any thread."""
        job = self._jobs[name]
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(job.kicked.set)

    async def start(self) -> None:
        if self._tasks:  # two runs of each job would race on their own state
            raise RuntimeError("the background jobs are running already")
        self._loop = asyncio.get_running_loop()
        for job in self._jobs.values():
            job.kicked = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(job), name=f"job:{job.name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._loop = None

    async def _run(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job.kicked.clear()
            try:
                await asyncio.to_thread(job.work)
            except Exception:
                # A failing job is logged and retried on its next turn; it must not stop
                # the server or the other jobs.
                log.exception("background job %s failed", job.name)
            # The turn comes as a kick: a timer handle is cheaper than wait_for's task and
            # timeout scope, and the OCSP follower waits five times a second in every process.
            turn = loop.call_later(job.interval, job.kicked.set)
            try:
                await job.kicked.wait()
            finally:
                turn.cancel()
