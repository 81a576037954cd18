"""Process model: the supervisor claims both ports (tessera/ports.py), then runs N worker
processes. Each worker opens its own HTTPS and plain-HTTP listeners with SO_REUSEPORT, so the
kernel spreads connections evenly, and serves both from one uvloop event loop with uvicorn."""

import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, SpawnContext
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


def _worker(settings_json: str, bootstrapped: Connection, supervisor: int) -> None:
    """Waits for the bootstrap's TLS files (None: it failed, and the supervisor said why),
    then serves. A worker spawned as a restart imports the application first."""
    from tessera.domains.identity.secrets import dummy_hash

    # Ctrl-C reaches the whole process group: the supervisor stops the workers, and a
    # worker still starting would only print a traceback. Serving, it handles it itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The unknown-user login's hash, made while the worker waits for the bootstrap (argon2
    # runs outside the GIL), not during the first such login.
    threading.Thread(target=dummy_hash, name="dummy-hash", daemon=True).start()
    from tessera.app import create_app, public_only

    tls = _bootstrapped(bootstrapped, supervisor)
    if tls is None:
        return
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


def _bootstrapped(pipe: Connection, supervisor: int) -> TLSFiles | None:
    """What the supervisor hands over; None also if it died meanwhile (no one else would
    stop a worker forked before the bootstrap and waiting for it). A forked worker holds
    the sending ends of its own pipe and its elder siblings' too, so it sees no EOF: the
    parent check is what notices."""
    while not pipe.poll(0.5):
        if os.getppid() != supervisor:
            return None
    try:
        tls: TLSFiles | None = pipe.recv()
    except EOFError:
        return None
    return tls


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
        _pause(workers)
    return False


def _pause(workers: list[BaseProcess]) -> None:
    """A tenth of a second, or less if a worker ends meanwhile. Waiting on the workers'
    sentinels (poll) rather than in `time.sleep`, whose clock_nanosleep libfaketime (with
    a real monotonic clock, as tests/e2e/test_scep_renewal_window.py runs servers) refuses
    with EINVAL: the supervisor's loop ended there in an exception, and its workers served
    on unsupervised."""
    wait([process.sentinel for process in workers], timeout=0.1)


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


class Workers:
    """The worker processes, started before the bootstrap and handed its TLS files when it
    is done (`hand`); a bootstrap that fails (an exception in the `with`) lets them go.

    The first ones are forked from the supervisor once it has imported the application and
    before the bootstrap opens anything: one import (1.5-2 s of CPU) serves every worker,
    and no database connection or thread is there to be inherited (the port claim is, see
    docs/process-model.md). A worker restarted later is spawned, a fresh interpreter: by
    then the bootstrap has run in the supervisor (database files opened, perhaps the audit
    forwarder's thread), which must not cross a fork."""

    def __init__(self, settings: Settings) -> None:
        import tessera.app  # noqa: F401 - inherited by the forked workers

        self._spawn = multiprocessing.get_context("spawn")
        self._payload = settings.model_dump_json()
        self._pipes: dict[int, Connection] = {}
        self.started: dict[int, float] = {}
        # Forking is safe only without threads (one may hold a lock the child would wait on
        # for ever); none runs here unless a library started one. The children do inherit
        # the port-claim descriptors (docs/process-model.md).
        first = multiprocessing.get_context("fork") if threading.active_count() == 1 else None
        self.processes: list[BaseProcess] = []
        try:
            for _ in range(settings.worker_count):
                self.processes.append(self.start(first))
        except BaseException:  # a fork refused (EAGAIN, ENOMEM): let the others go
            self.let_go()
            raise

    def start(self, fork: ForkContext | None = None) -> BaseProcess:
        context: ForkContext | SpawnContext = fork or self._spawn
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, args=(self._payload, receiving, os.getpid()), daemon=False
        )
        process.start()
        receiving.close()
        self._pipes[id(process)] = sending
        return process

    def hand(self, process: BaseProcess, tls: TLSFiles | None) -> None:
        """Let a started worker build its application and serve (None: let it go)."""
        self.started[id(process)] = time.monotonic()  # its crash window starts now
        pipe = self._pipes.pop(id(process))
        with contextlib.suppress(OSError):  # it died meanwhile: the supervisor sees to it
            pipe.send(tls)
        pipe.close()

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:  # `run` never returns; a failure before or in it gets here
            self.let_go()

    def let_go(self) -> None:
        """Stop every worker: one still waiting for the bootstrap is handed None, one
        serving is terminated. Otherwise the exit (which joins them) would wait for ever."""
        for process in self.processes:
            if id(process) in self._pipes:
                self.hand(process, None)
            elif process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join()


def run(settings: Settings, tls: TLSFiles, claim: Claim, workers: Workers) -> None:
    """Serve until SIGTERM/SIGINT, holding `claim` (released as the process ends): workers
    restarted meanwhile bind ports no other server could take."""
    stopping = failed = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for warning in _start_warnings(settings):
        print(warning, file=sys.stderr, flush=True)
    for process in workers.processes:
        workers.hand(process, tls)
    if _wait_listening(settings, workers.processes, lambda: stopping):
        print(_start_line(settings, len(workers.processes)), flush=True)
    while not stopping:
        _pause(workers.processes)  # SIGTERM sets `stopping`; this is how soon it is acted on
        for i, process in enumerate(workers.processes):
            if process.is_alive() or stopping:
                continue
            if time.monotonic() - workers.started[id(process)] < CRASH_WINDOW:
                print(
                    f"worker exited with {process.exitcode} right after start; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                stopping, failed = True, True
                break
            log.warning("worker %s exited with %s; restarting", process.pid, process.exitcode)
            workers.processes[i] = workers.start()
            workers.hand(workers.processes[i], tls)
    for process in workers.processes:
        if process.is_alive() and process.pid:
            process.terminate()
    for process in workers.processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    claim.release()  # only now: no worker of this server listens any more
    # Nothing is left to write; the interpreter's teardown of every module the bootstrap
    # loaded would hold the exit another third of a second.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)
