"""Process model: the supervisor binds the HTTPS and plain-HTTP sockets once, then runs N
worker processes; each worker serves both sockets from one event loop with uvicorn."""

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Generator
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

from tessera.bootstrap import TLSFiles
from tessera.config import Settings

log = logging.getLogger("tessera.server")
CRASH_WINDOW = 10.0  # seconds: a worker dying this soon will not do better on a restart


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """Signals are handled once per worker for both listeners, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _worker(settings_json: str, tls: TLSFiles, sockets: list[socket.socket]) -> None:
    from tessera.app import create_app, public_only

    settings = Settings.model_validate_json(settings_json)
    app = create_app(settings)
    common: dict[str, Any] = {
        "log_level": settings.log_level,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }
    servers = [
        _Server(
            uvicorn.Config(
                app,
                ssl_certfile=str(tls.cert),
                ssl_keyfile=str(tls.key),
                ssl_keyfile_password=tls.key_password,
                **common,
            )
        )
    ]
    if len(sockets) > 1:
        # One start-up banner per worker is enough: the second listener logs warnings only.
        quiet = {**common, "log_level": "warning"}
        servers.append(_Server(uvicorn.Config(public_only(app), **quiet)))

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        def stop_all() -> None:
            for server in servers:
                server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_all)
        await asyncio.gather(*(s.serve(sockets=[k]) for s, k in zip(servers, sockets, strict=True)))

    asyncio.run(serve())


def run(settings: Settings, tls: TLSFiles) -> None:
    sockets = [bind(settings.host, settings.port)]
    if settings.http_port:
        sockets.append(bind(settings.host, settings.http_port))
    count = settings.worker_count
    context = multiprocessing.get_context("spawn")
    payload = settings.model_dump_json()
    stopping = failed = False

    started: dict[int, float] = {}

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(payload, tls, sockets), daemon=False)
        process.start()
        started[id(process)] = time.monotonic()
        return process

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = [start() for _ in range(count)]
    print(
        f"Tessera listening on {settings.https_base} ({count} workers)"
        + (f", plain HTTP on {settings.http_base}" if settings.http_port else ""),
        flush=True,
    )
    while not stopping:
        time.sleep(0.5)
        for i, process in enumerate(workers):
            if process.is_alive() or stopping:
                continue
            if time.monotonic() - started[id(process)] < CRASH_WINDOW:
                print(
                    f"worker exited with {process.exitcode} right after start; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                stopping, failed = True, True
                break
            log.warning("worker %s exited with %s; restarting", process.pid, process.exitcode)
            workers[i] = start()
    for process in workers:
        if process.is_alive() and process.pid:
            process.terminate()
    for process in workers:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    for sock in sockets:
        sock.close()
    sys.exit(1 if failed else 0)
