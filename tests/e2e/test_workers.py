"""Several server processes on one database; first-start behaviour of `tessera serve`."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import admin_api_key, database, free_port, start_server, stop_server

BACKENDS = ["sqlite", "postgresql"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_issue_concurrently_without_losing_anything(
    backend: str, tmp_path: Path
) -> None:
    with database(backend) as url:
        server = start_server(tmp_path / "data", url, workers=2)
        try:
            server.api_key = admin_api_key(server)
            with server.client() as api:
                ca = api.post(
                    "/api/v2/cas",
                    json={
                        "common_name": "Busy Root",
                        "ca_type": "root",
                        "key_algorithm": "EC",
                        "key_size": 256,
                    },
                )
                assert ca.status_code == 201, ca.text
                ca_id = ca.json()["data"]["id"]

            def issue(i: int) -> tuple[int, str]:
                with server.client() as client:
                    r = client.post(
                        "/api/v2/certificates",
                        json={
                            "common_name": f"host{i}.example.com",
                            "ca_id": ca_id,
                            "key_algorithm": "EC",
                            "key_size": 256,
                        },
                    )
                    return r.status_code, r.json()["data"]["serial_number"]

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(issue, range(48)))
            assert [status for status, _ in results] == [201] * 48
            assert len({serial for _, serial in results}) == 48
            with server.client() as api:
                listed = api.get(f"/api/v2/cas/{ca_id}/certificates", params={"per_page": 100})
                assert listed.json()["meta"]["total"] == 48
        finally:
            stop_server(server)


def test_first_start_prints_the_admin_password_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        k: v for k, v in os.environ.items() if k not in ("TESSERA_ADMIN_PASSWORD", "DATABASE_URL")
    }
    env["TESSERA_DATA_DIR"] = str(data)
    first = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert "Created user 'admin' with password: " in first.stdout
    password = first.stdout.split("password: ", 1)[1].split()[0]
    assert len(password) >= 16
    again = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "password" not in again.stdout
    assert oct((data / "kek").stat().st_mode & 0o777) == "0o600"

    server = start_server(data, None, env={"TESSERA_ADMIN_PASSWORD": ""})
    try:
        with server.client(api_key="") as client:
            ok = client.post(
                "/api/v2/auth/login/password", json={"username": "admin", "password": password}
            )
            assert ok.status_code == 200, ok.text
    finally:
        stop_server(server)


def test_server_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            **os.environ,
            "TESSERA_DATA_DIR": str(tmp_path / "d"),
            "TESSERA_ADMIN_PASSWORD": "x" * 12,
        }
        env.pop("DATABASE_URL", None)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tessera.cli",
                "serve",
                "--port",
                str(port),
                "--http-port",
                str(free_port()),
                "--workers",
                "1",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "in use" in (result.stdout + result.stderr).lower()
