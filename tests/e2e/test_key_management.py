"""System → Security key management: encryption status counts, the master password (and
restarts with and without it), rotate-secrets with every key still usable afterwards, and
a rotation interrupted by a crash that resumes on the next start."""

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tessera.server import CRASH_WINDOW
from tests.conftest import BACKENDS
from tests.e2e.helpers import API, create_root, data, error, issue, unique
from tests.support import Server, admin_api_key, database, start_server, stop_server

SEC = f"{API}/system/security"
FAST = {"TESSERA_KEK_ROTATION_GRACE": "0.5", "TESSERA_KEK_ROTATION_BATCH": "2"}
MASTER = "correct horse battery staple"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    with database(request.param) as url:
        yield url


@contextmanager
def running(data_dir: Path, url: str | None, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = start_server(data_dir, url, env={**FAST, **(env or {})})
    try:
        server.api_key = admin_api_key(server)
        yield server
    finally:
        stop_server(server)


def sql(server: Server, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Straight to the database, as someone with file or database access would."""
    if server.database_url is None:
        with sqlite3.connect(server.data_dir / "tessera.db") as conn:
            return list(conn.execute(statement, params).fetchall())
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        cursor = conn.execute(statement.replace("?", "%s"), params)
        return list(cursor.fetchall()) if cursor.description else []


def make_keys(api: httpx.Client, count: int = 5) -> tuple[dict[str, Any], dict[int, str]]:
    """A CA and `count` certificates with server-generated keys; their exported keys."""
    ca = create_root(api, unique("KM Root"))
    exported = {}
    for i in range(count):
        cert = issue(api, ca["id"], f"km{i}-{unique('h')}.example.com")
        exported[cert["id"]] = export_key(api, cert["id"])
    return ca, exported


def export_key(api: httpx.Client, cert_id: int) -> str:
    return str(data(api.post(f"{API}/certificates/{cert_id}/key"))["private_key"])


def assert_keys_unchanged(api: httpx.Client, ca: dict[str, Any], exported: dict[int, str]) -> None:
    for cert_id, pem in exported.items():
        assert export_key(api, cert_id) == pem
    issue(api, ca["id"], unique("after") + ".example.com")  # the CA key signs


def wait_rotation(api: httpx.Client, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = data(api.get(f"{SEC}/secrets-status"))
        rotation = status["rotation"]
        if rotation and rotation["status"] != "running":
            return dict(status)
        assert time.monotonic() < deadline, f"rotation did not finish: {status}"
        time.sleep(0.3)


def test_encryption_status_counts_every_key_column(backend: str | None, tmp_path: Path) -> None:
    with running(tmp_path / "data", backend) as server, server.client() as api:
        make_keys(api, 2)
        status = data(api.get(f"{SEC}/encryption-status"))
        assert status["enabled"] is True and status["version"] == 1
        assert status["master_password"] is False
        assert status["unencrypted_keys"] == 0
        assert status["encrypted_keys"] >= 4  # internal CA, our root, two leaves
        columns = {(c["table"], c["column"]) for c in status["columns"]}
        for table in ("certificates", "certificate_authorities", "csrs"):
            assert (table, "encrypted_private_key") in columns
        # A key someone wrote in the clear is counted, and the next rotation seals it.
        clear = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        target = max(row[0] for row in sql(server, "SELECT id FROM certificates"))
        sql(
            server,
            "UPDATE certificates SET encrypted_private_key = ? WHERE id = ?",
            (clear.decode(), target),
        )
        assert data(api.get(f"{SEC}/encryption-status"))["unencrypted_keys"] == 1
        data(api.post(f"{SEC}/rotate-secrets", json={}), 202)
        assert wait_rotation(api)["rotation"]["status"] == "finished"
        after = data(api.get(f"{SEC}/encryption-status"))
        assert after["unencrypted_keys"] == 0 and after["version"] == 2
        key = serialization.load_pem_private_key(export_key(api, target).encode(), None)
        der = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
        original = serialization.load_pem_private_key(clear, None)
        none = serialization.NoEncryption()
        assert key.private_bytes(*der, none) == original.private_bytes(*der, none)


def test_generate_key_and_bad_rotation_input(tmp_path: Path) -> None:
    with running(tmp_path / "data", None) as server, server.client() as api:
        generated = data(api.get(f"{SEC}/generate-key"))
        Fernet(generated["key"])  # a usable Fernet key, not stored anywhere by the server
        assert generated["key"].encode() not in (server.data_dir / "kek").read_bytes()
        for bad in ({"new_key": "short"}, {"new_key": "x" * 44}, {"unknown": 1}):
            assert api.post(f"{SEC}/rotate-secrets", json=bad).status_code in (400, 422)
        current = (server.data_dir / "kek").read_bytes().strip().decode()
        error(api.post(f"{SEC}/rotate-secrets", json={"new_key": current}), 400)
        assert data(api.get(f"{SEC}/secrets-status"))["rotation"] is None


def test_rotate_secrets_keeps_every_key_and_restarts(backend: str | None, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running(data_dir, backend) as server, server.client() as api:
        ca, exported = make_keys(api)
        old_kek = (data_dir / "kek").read_bytes().strip()
        new_key = data(api.get(f"{SEC}/generate-key"))
        started = data(api.post(f"{SEC}/rotate-secrets", json={"new_key": new_key["key"]}), 202)
        assert started["new_kek_fingerprint"] == new_key["fingerprint"]
        error(api.post(f"{SEC}/rotate-secrets", json={}), 409)  # one at a time
        status = wait_rotation(api)
        assert status["rotation"]["status"] == "finished", status
        assert status["rotation"]["rotated"] >= 7 and status["keys_in_ring"] == 1
        assert status["rotated_at"] and status["next_rotation"] > status["rotated_at"]
        assert (data_dir / "kek").read_bytes().strip() == new_key["key"].encode()
        assert_keys_unchanged(api, ca, exported)
        # Nothing in the database opens with the old KEK any more.
        tokens = [
            r[0]
            for r in sql(
                server,
                "SELECT encrypted_private_key FROM certificates "
                "WHERE encrypted_private_key IS NOT NULL",
            )
        ]
        for token in tokens:
            Fernet(new_key["key"].encode()).decrypt(token.encode())
            with pytest.raises(Exception):  # noqa: B017 - InvalidToken
                Fernet(old_kek).decrypt(token.encode())
    # A restart reads the new KEK and the TLS key file re-encrypted under it.
    with running(data_dir, backend) as server, server.client() as api:
        assert_keys_unchanged(api, ca, exported)


def test_master_password_protects_the_kek(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running(data_dir, None) as server, server.client() as api:
        ca, exported = make_keys(api, 2)
        kek = (data_dir / "kek").read_bytes().strip()
        error(api.post(f"{SEC}/enable-encryption", json={"master_password": "short"}), 400)
        error(api.post(f"{SEC}/disable-encryption", json={"master_password": MASTER}), 409)
        data(api.post(f"{SEC}/enable-encryption", json={"master_password": MASTER}))
        error(api.post(f"{SEC}/enable-encryption", json={"master_password": MASTER}), 409)
        sealed = (data_dir / "kek").read_bytes()
        assert kek not in sealed and json.loads(sealed)["protection"] == "argon2id"
        assert data(api.get(f"{SEC}/encryption-status"))["master_password"] is True
        assert_keys_unchanged(api, ca, exported)  # this process keeps its keys in memory
    # Without the password, or with a wrong one, the server refuses to start.
    for env in ({}, {"TESSERA_MASTER_PASSWORD": "not the password"}):
        with pytest.raises(RuntimeError) as failed:
            start_server(data_dir, None, env={**FAST, **env})
        assert "master password" in str(failed.value)
    password_file = tmp_path / "master-password"
    password_file.write_text(MASTER + "\n")
    password_file.chmod(0o600)
    from_file = {"TESSERA_MASTER_PASSWORD_FILE": str(password_file)}
    with running(data_dir, None, from_file) as server, server.client() as api:
        assert_keys_unchanged(api, ca, exported)
    with_password = {"TESSERA_MASTER_PASSWORD": MASTER}
    with running(data_dir, None, with_password) as server, server.client() as api:
        # Rotation works under a sealed KEK and keeps it sealed.
        data(api.post(f"{SEC}/rotate-secrets"), 202)
        status = wait_rotation(api)
        assert status["rotation"]["status"] == "finished"
        rotation = status["rotation"]
        for moment in (status["rotated_at"], rotation["started_at"], rotation["finished_at"]):
            assert moment.endswith("Z") and len(moment) == 20, status  # as every API date
        assert json.loads((data_dir / "kek").read_bytes())["protection"] == "argon2id"
        assert_keys_unchanged(api, ca, exported)
        error(api.post(f"{SEC}/disable-encryption", json={"master_password": "wrong!"}), 400)
        report = data(api.get(f"{SEC}/anomalies", params={"hours": 1}))
        assert any(a["type"] == "failed_master_password" for a in report["anomalies"])
        for anomaly in report["anomalies"]:
            assert anomaly["first_seen"].endswith("Z") and anomaly["last_seen"].endswith("Z")
        assert report["since"].endswith("Z"), report
        assert api.get(f"{SEC}/anomalies", params={"hours": 0}).status_code == 422
        data(api.post(f"{SEC}/disable-encryption", json={"master_password": MASTER}))
        assert len((data_dir / "kek").read_bytes().strip()) == 44
    with running(data_dir, None) as server, server.client() as api:
        assert_keys_unchanged(api, ca, exported)


def _crash(server: Server) -> None:
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


def test_rotation_resumes_after_a_crash_mid_sweep(backend: str | None, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # A long grace keeps the rotation waiting, so the crash lands before the sweep...
    server = start_server(data_dir, backend, env={**FAST, "TESSERA_KEK_ROTATION_GRACE": "600"})
    try:
        server.api_key = admin_api_key(server)
        with server.client() as api:
            ca, exported = make_keys(api, 6)
            data(api.post(f"{SEC}/rotate-secrets"), 202)
    finally:
        _crash(server)
    ring = json.loads((data_dir / "kek").read_bytes())
    assert ring["protection"] == "none" and len(ring["keys"]) == 2  # new first, old kept
    # ...and the sweep's first part is done by hand, as a crashed sweep would have left it:
    # rows up to `middle` re-encrypted and that progress committed.
    both = MultiFernet([Fernet(k.encode()) for k in ring["keys"]])
    rows = sql(
        server,
        "SELECT id, encrypted_private_key FROM certificates "
        "WHERE encrypted_private_key IS NOT NULL ORDER BY id",
    )
    middle = rows[len(rows) // 2][0]
    for row_id, token in rows:
        if row_id <= middle:
            rotated = both.rotate(token.encode()).decode()
            sql(
                server,
                "UPDATE certificates SET encrypted_private_key = ? WHERE id = ?",
                (rotated, row_id),
            )
    progress = json.dumps({"certificates.encrypted_private_key": middle})
    sql(server, "UPDATE kek_rotations SET progress = ? WHERE status = 'running'", (progress,))
    # The restarted server claims the abandoned rotation (its claim went stale) and ends it.
    with running(data_dir, backend) as again, again.client() as api:
        status = wait_rotation(api)
        assert status["rotation"]["status"] == "finished", status
        assert status["keys_in_ring"] == 1
        assert (data_dir / "kek").read_bytes().strip() == ring["keys"][0].encode()
        assert_keys_unchanged(api, ca, exported)
        assert data(api.get(f"{SEC}/encryption-status"))["unencrypted_keys"] == 0


def _workers(server: Server) -> list[int]:
    """The supervisor's worker processes: its children (forked at the start, spawned when
    restarted), but multiprocessing's resource tracker, which a spawn starts."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if stat[0] == "Z" or int(stat[1]) != server.process.pid:  # state, parent
            continue
        if b"resource_tracker" not in cmdline:
            found.append(int(pid))
    return found


def test_a_worker_restarted_after_a_rotation_opens_the_tls_key(tmp_path: Path) -> None:
    """The TLS key file follows the KEK; a worker the supervisor restarts later must open it
    with the KEK of now, not the one the server started with."""
    with running(tmp_path / "data", None) as server, server.client() as api:
        # A worker dying right after its start makes the supervisor give up: wait that out.
        # Its window opens when the supervisor hands it the bootstrap's TLS files, before it
        # answered, so counting from its first answer waits at least that long.
        answered = time.monotonic()
        ca, exported = make_keys(api, 1)
        data(api.post(f"{SEC}/rotate-secrets"), 202)
        assert wait_rotation(api)["rotation"]["status"] == "finished"
        (worker,) = _workers(server)
        time.sleep(max(0.0, CRASH_WINDOW + 1 - (time.monotonic() - answered)))
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (_workers(server) and _workers(server) != [worker]):
            assert server.process.poll() is None, server.log()
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.2)
        # The new worker loads the TLS key as it starts listening (seconds, under load):
        # the server must stay up and answer through it.
        deadline = time.monotonic() + 60
        while not _answers(server):
            assert server.process.poll() is None, f"the server stopped:\n{server.log()}"
            assert time.monotonic() < deadline, f"no answer from the new worker:\n{server.log()}"
            time.sleep(0.2)
        with server.client() as again:
            assert_keys_unchanged(again, ca, exported)


def _answers(server: Server) -> bool:
    try:
        ready = f"{server.url}/api/v2/health/ready"
        return httpx.get(ready, verify=server.ssl_context(), timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_concurrent_rotation_requests_start_one_rotation(
    backend: str | None, tmp_path: Path
) -> None:
    """Two admins (or a double click) at once: one rotation starts, the others get 409, and
    no KEK written to the file in between is dropped by another request's write."""
    with running(tmp_path / "data", backend) as server, server.client() as api:
        ca, exported = make_keys(api, 2)
        barrier = threading.Barrier(6)

        def rotate(_: int) -> int:
            with server.client() as own:
                barrier.wait()
                return own.post(f"{SEC}/rotate-secrets", json={}).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(rotate, range(6)))
        assert codes == [202] + [409] * 5, codes
        status = wait_rotation(api)
        assert status["rotation"]["status"] == "finished" and status["keys_in_ring"] == 1
        assert_keys_unchanged(api, ca, exported)
