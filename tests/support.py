"""Test helpers: free ports, a real `tessera serve` process, throwaway databases."""

import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
    from sqlalchemy import Engine

PG_ADMIN_URL = os.environ.get("TESSERA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_PASSWORD = "admin-password-for-tests"
UNLIMITED = {
    f"TESSERA_RATE_LIMIT_{kind}_PER_MINUTE".replace("_DEFAULT", ""): "1000000"
    for kind in ("DEFAULT", "AUTH", "EXPORT", "PROTOCOL")
} | {"TESSERA_LOGIN_THROTTLE_FAILURES": "1000000"}  # suites fail logins on purpose, often


def group_cpu(pgid: int) -> float:
    """User + system CPU seconds of the live processes in one process group (a server and its
    workers), for the benchmarks: less sensitive to other load on the machine than rates."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) if int(fields[2]) == pgid else 0
    return total / os.sysconf("SC_CLK_TCK")


def loopback_certificate(
    directory: Path, name: str, key: "CertificateIssuerPrivateKeyTypes | None" = None
) -> Path:
    """`<name>.pem`, a self-signed certificate for `key` (a new P-256 key by default) valid a
    day for 127.0.0.1, and `<name>.key`, its key unencrypted: a peer's TLS or a throwaway CA
    in the benchmarks. Returns the certificate's path; the key's is beside it."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    plain, pkcs8 = serialization.NoEncryption(), serialization.PrivateFormat.PKCS8
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, pkcs8, plain)
    )
    return directory / f"{name}.pem"


# Ports come from a block of their own per pytest-xdist worker, below the kernel's ephemeral
# range: a port the kernel handed to one worker was free again for another a moment later,
# and two servers (which listen with SO_REUSEPORT) then shared it, each answering part of the
# other's connections with its own certificate.
PORT_BLOCK = 2500
_next_port = [0]


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1...; none without xdist
    block = int(worker[2:]) + 1 if worker.startswith("gw") else 0
    base = 12000 + block * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = base + _next_port[0] % PORT_BLOCK
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + PORT_BLOCK - 1}")


@contextmanager
def database(kind: str) -> Iterator[str | None]:
    """None for SQLite (the server makes its own in the data directory), or a fresh
    PostgreSQL database that is dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    import psycopg

    name = f"tessera_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic(engine: "Engine", action: str, revision: str) -> None:
    """`alembic upgrade|downgrade <revision>` on one connection, in one transaction, as
    storage.db.migrate runs the migrations."""
    from alembic import command
    from alembic.config import Config

    from tessera.storage.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


@dataclass
class Server:
    data_dir: Path
    port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str | None
    api_key: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ca_bundle(self) -> Path:
        return self.data_dir / "tls" / "server.pem"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def client(self, api_key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"X-API-Key": api_key if api_key is not None else self.api_key}
        if api_key == "":
            headers = {}
        return httpx.Client(
            base_url=self.url, verify=self.ssl_context(), headers=headers, timeout=60, **kwargs
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# What a server says when a port found free was taken first: bound by another process, or
# claimed by another Tessera server starting at the same moment (tessera/ports.py).
ADDRESS_IN_USE = "Address already in use"
PORT_TAKEN = (ADDRESS_IN_USE, "in use by another Tessera server")


def start_server(
    data_dir: Path, database_url: str | None, workers: int = 1, env: dict[str, str] | None = None
) -> Server:
    """A `tessera serve` on free ports. A port found free can be taken by another process
    (another test worker's server or client) before the server binds it: then again, on
    other ports, a few times."""
    for attempt in range(3):
        try:
            return _start_server(data_dir, database_url, workers, env)
        except ServerExitedEarly as exc:
            if not any(taken in str(exc) for taken in PORT_TAKEN) or attempt == 2:
                raise
    raise AssertionError("unreachable")


class ServerExitedEarly(RuntimeError):
    pass


def _start_server(
    data_dir: Path, database_url: str | None, workers: int, env: dict[str, str] | None
) -> Server:
    port, http_port = free_port(), free_port()
    environment = {
        **os.environ,
        "TESSERA_DATA_DIR": str(data_dir),
        "TESSERA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "TESSERA_LOG_LEVEL": "warning",
        # Suites fire many requests from one address: limits far above the defaults, which
        # only the rate-limit tests keep (they pass their own values in `env`).
        **UNLIMITED,
        **(env or {}),
    }
    environment.pop("DATABASE_URL", None)
    if database_url:
        environment["DATABASE_URL"] = database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tessera.cli",
                "serve",
                "--port",
                str(port),
                "--http-port",
                str(http_port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(data_dir, port, http_port, process, log_path, database_url)
    _wait_ready(server)
    return server


def _wait_ready(server: Server, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerExitedEarly(f"server exited early:\n{server.log()}")
        if server.ca_bundle.exists():
            try:
                with httpx.Client(verify=server.ssl_context(), timeout=2) as client:
                    if client.get(f"{server.url}/api/v2/health/ready").status_code == 200:
                        return
            except (httpx.HTTPError, ssl.SSLError, OSError):
                pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


def stop_server(server: Server) -> None:
    stop_process_group(server.process)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM to a server's whole process group (supervisor and workers), SIGKILL after
    `timeout` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def admin_api_key(server: Server) -> str:
    with server.client(api_key="") as client:
        login = client.post(
            "/api/v2/auth/login/password", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        login.raise_for_status()
        csrf = login.json()["data"]["csrf_token"]
        created = client.post(
            "/api/v2/account/apikeys", json={"name": "tests"}, headers={"X-CSRF-Token": csrf}
        )
        created.raise_for_status()
        return str(created.json()["data"]["key"])


@contextmanager
def module_server(
    backend: str, data_dir: Path, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[Server]:
    """A server for a test module on `backend` (sqlite or postgresql), with an admin API key,
    stopped (and its PostgreSQL database dropped) afterwards."""
    with database(backend) as url:
        running = start_server(data_dir, url, workers=workers, env=env)
        try:
            running.api_key = admin_api_key(running)
            yield running
        finally:
            stop_server(running)
