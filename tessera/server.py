"""Process model: the supervisor claims both ports (tessera/ports.py), then runs N worker
processes. Each worker opens its own HTTPS and plain-HTTP listeners with SO_REUSEPORT, so the
kernel spreads connections evenly, and serves both from one uvloop event loop with uvicorn."""

import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
import uvloop

from tessera import ports
from tessera.bootstrap import TLSFiles
from tessera.config import Settings
from tessera.core.keystore import Keyring
from tessera.domains.security.tls import opening_password
from tessera.ports import Claim, tcp_socket

log = logging.getLogger("tessera.server")
CRASH_WINDOW = 10.0  # seconds: a worker dying this soon will not do better on a restart
LOOPBACK_OF_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def listen(host: str, port: int) -> socket.socket:
    sock = tcp_socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted sockets inherit it: without it a response written in two parts waits for the
    # client's delayed ACK (about 40 ms) on every reused connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class _Server(uvicorn.Server):
    """Signals are handled once per worker for both listeners, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _worker(settings_json: str, tls: TLSFiles) -> None:
    from tessera.app import create_app, public_only

    settings = Settings.model_validate_json(settings_json)
    _log_to_stderr(settings.log_level)
    app = create_app(settings)
    tls = _current_tls(tls, app.state.runtime.keys.ring)
    _tune_gc()
    common: dict[str, Any] = {
        # uvicorn's own lines below warning are its start-up banners, once per listener and
        # worker: noise. Its levels are global, so both listeners get the same.
        "log_level": max(settings.log_level, "warning", key=_severity),
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; the rate limiter
        # applies TRUSTED_PROXY_IPS instead (tessera/api/ratelimit.py).
        "proxy_headers": False,
    }
    https = uvicorn.Config(
        app,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        ssl_keyfile_password=tls.key_password,
        **common,
    )
    listeners = [(_Server(https), listen(settings.host, settings.port))]
    if settings.http_port:
        # The app's lifespan (the background jobs) runs once, with the HTTPS listener's.
        plain = uvicorn.Config(public_only(app), **{**common, "lifespan": "off"})
        listeners.append((_Server(plain), listen(settings.host, settings.http_port)))
    uvloop.run(_serve(listeners))


def _severity(level: str) -> int:
    return logging.getLevelNamesMapping()[level.upper()]


def _log_to_stderr(level: str) -> None:
    """Tessera's own messages, from TESSERA_LOG_LEVEL up (without a handler, Python shows
    warnings only, whatever the level)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("tessera")
    logger.addHandler(handler)
    logger.setLevel(_severity(level))
    logger.propagate = False


def _current_tls(tls: TLSFiles, ring: Keyring) -> TLSFiles:
    """The supervisor derived the key file's passphrase from the KEK at start; a KEK rotation
    since then re-encrypted the file under the new KEK, and a worker restarted later must
    open it with that one, or it dies at once and the supervisor stops the server."""
    password = opening_password(tls.key, ring)
    if password is None or password == tls.key_password:
        return tls
    return dataclasses.replace(tls, key_password=password)


def _tune_gc() -> None:
    """What start-up built (modules, routes, mappers, caches) lives as long as the process:
    frozen, the collector stops walking it on every full collection (tens of ms at a time,
    visible as p99 outliers)."""
    gc.collect()
    gc.freeze()


async def _serve(listeners: list[tuple[_Server, socket.socket]]) -> None:
    def stop_all() -> None:
        for server, _ in listeners:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in listeners))


def _wait_listening(
    settings: Settings, workers: list[BaseProcess], stopping: Callable[[], bool]
) -> bool:
    """Whether a worker listens on both ports: workers bind them only once their application
    is built, seconds after the start, and the start-up line must not send a newcomer's first
    request to a closed port. False if a worker died first (the caller deals with it)."""
    host = LOOPBACK_OF_WILDCARD.get(settings.host, settings.host)
    ports = [port for port in (settings.port, settings.http_port) if port]
    while not stopping() and all(process.is_alive() for process in workers):
        if all(_accepts(host, port) for port in ports):
            return True
        time.sleep(0.1)
    return False


def _accepts(host: str, port: int) -> bool:
    with tcp_socket(host) as probe:
        return probe.connect_ex((host, port)) == 0


def _start_warnings(settings: Settings) -> list[str]:
    """Said once by the supervisor: every worker would otherwise repeat them."""
    warnings = []
    if not settings.trusted_proxy_ips:
        warnings.append(
            "TRUSTED_PROXY_IPS is not set: X-Forwarded-For is ignored, and clients behind a "
            "proxy are rate-limited under the proxy's address"
        )
    if settings.acme_insecure_always_valid:
        warnings.append(
            "TESSERA_ACME_INSECURE_ALWAYS_VALID is set: ACME challenges are NOT checked"
        )
    return warnings


def _start_line(settings: Settings, count: int) -> str:
    """Where the sockets are, which a newcomer connects to; the public URLs, when set, are
    what certificates and protocol documents name instead."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    line = f"Tessera listening on https://{host}:{settings.port} ({count} worker"
    line += "s)" if count != 1 else ")"
    if settings.http_port:
        line += f", plain HTTP on http://{host}:{settings.http_port}"
    if settings.public_url or settings.public_http_url:
        line += f"; public URLs {settings.https_base}, {settings.http_base}"
    return line


def claim_ports(settings: Settings) -> Claim:
    """Both ports, for the server's life: another Tessera of this user on them (even one
    starting at the same moment) or anything listening there stops this one."""
    return ports.claim(settings.host, [p for p in (settings.port, settings.http_port) if p])


def run(settings: Settings, tls: TLSFiles, claim: Claim) -> None:
    """Serve until SIGTERM/SIGINT, holding `claim` (released as the process ends): workers
    restarted meanwhile bind ports no other server could take."""
    count = settings.worker_count
    context = multiprocessing.get_context("spawn")
    payload = settings.model_dump_json()
    stopping = failed = False
    started: dict[int, float] = {}

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(payload, tls), daemon=False)
        process.start()
        started[id(process)] = time.monotonic()
        return process

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for warning in _start_warnings(settings):
        print(warning, file=sys.stderr, flush=True)
    workers = [start() for _ in range(count)]
    if _wait_listening(settings, workers, lambda: stopping):
        print(_start_line(settings, count), flush=True)
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
    claim.release()  # only now: no worker of this server listens any more
    sys.exit(1 if failed else 0)
