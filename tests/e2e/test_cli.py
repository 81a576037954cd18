"""The command line as a newcomer meets it: `tessera serve --help` agrees with the README's
configuration table, and bad settings stop `tessera serve`/`init` with one clear line and a
non-zero exit, never a traceback, and without echoing a secret."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.support import free_port, start_server, stop_server

README = Path(__file__).resolve().parents[2] / "README.md"
GOOD_PASSWORD = "a-good-admin-password"


def start(*args: str, data_dir: Path, **env: str) -> subprocess.Popen[str]:
    """`tessera ARGS` with only the settings given here (and a good admin password)."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TESSERA_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    environment.update(TESSERA_DATA_DIR=str(data_dir), TESSERA_ADMIN_PASSWORD=GOOD_PASSWORD)
    environment.update(COLUMNS="200", **env)
    return subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def tessera(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    process = start(*args, data_dir=data_dir, **env)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # A `serve` that should have refused to start and did not: its workers go with it.
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line the command stopped with."""
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output and "Error:" not in output, output
    assert len(output.splitlines()) == 1, output
    return output


def readme_variables() -> set[str]:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def test_serve_help_lists_exactly_the_variables_the_readme_documents(tmp_path: Path) -> None:
    result = tessera("serve", "--help", data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^\W*([A-Z][A-Z0-9_]+): ", result.stdout, re.MULTILINE))
    assert "DATABASE_URL" in listed and "REDIS_URL" in listed
    assert listed == readme_variables()


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["serve", "--port", "99999"], {}, "--port"),
        (["serve", "--http-port", "-1"], {}, "--http-port"),
        (["serve", "--workers", "-2"], {}, "--workers"),
        (["serve"], {"TESSERA_PORT": "https"}, "TESSERA_PORT"),
        (["init"], {"TESSERA_SESSION_MINUTES": "1"}, "TESSERA_SESSION_MINUTES"),
        (["serve", "--port", "18443", "--http-port", "18443"], {}, "ports must differ"),
        (["serve"], {"TESSERA_PORT": "9443", "TESSERA_HTTP_PORT": "9443"}, "ports must differ"),
        (["serve"], {"TESSERA_TOOLS_DNS_SERVERS": "127.0.0.1:0"}, "TESSERA_TOOLS_DNS_SERVERS"),
        (["serve"], {"TESSERA_ACME_DNS_SERVERS": "dns.google:53"}, "TESSERA_ACME_DNS_SERVERS"),
        (["serve"], {"TESSERA_LOG_LEVEL": "verbose"}, "TESSERA_LOG_LEVEL"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    line = refused(tessera(*args, data_dir=tmp_path / "data", **env))
    assert line.startswith("invalid configuration") and named in line
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_a_data_directory_that_cannot_be_one_is_refused(tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory\n")
    for data_dir, reason in ((in_the_way, "not a directory"), (in_the_way / "data", "directory")):
        line = refused(tessera("init", data_dir=data_dir))
        assert line.startswith(f"cannot use the data directory {data_dir}") and reason in line


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://tessera:db-secret-xyz@127.0.0.1:{free_port()}/tessera"
    line = refused(tessera("init", data_dir=tmp_path / "data", DATABASE_URL=url))
    assert line.startswith("cannot reach the database postgresql://tessera:***@127.0.0.1:")
    assert "db-secret-xyz" not in line


def test_serve_whose_bootstrap_fails_says_why_once_and_leaves_no_worker(tmp_path: Path) -> None:
    """`serve` starts its workers before the bootstrap (docs/process-model.md): one that
    fails lets them go, with its one line and nothing of theirs."""
    url = f"postgresql://tessera@127.0.0.1:{free_port()}/tessera"
    port, http_port = str(free_port()), str(free_port())
    process = start("serve", "--port", port, "--http-port", http_port, "--workers", "2",
                    data_dir=tmp_path / "data", DATABASE_URL=url)  # fmt: skip
    try:
        out, err = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        assert refused(result).startswith("cannot reach the database postgresql://tessera@")
        # No worker stays (one waiting for a bootstrap that never ends would stay for good).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and group_alive(process.pid):
            time.sleep(0.1)
        assert not group_alive(process.pid)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("url", ["mysqlx://tessera@127.0.0.1/tessera", "not a url"])
def test_a_database_url_tessera_cannot_use_is_one_line(tmp_path: Path, url: str) -> None:
    line = refused(tessera("init", data_dir=tmp_path / "data", DATABASE_URL=url))
    assert line.startswith("cannot use DATABASE_URL")


def test_an_unreadable_master_password_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    line = refused(
        tessera("init", data_dir=tmp_path / "data", TESSERA_MASTER_PASSWORD_FILE=str(missing))
    )
    assert line == (
        "cannot unlock the key-encryption key: cannot read TESSERA_MASTER_PASSWORD_FILE "
        f"{missing}: No such file or directory"
    )


def test_a_weak_admin_password_is_refused_and_not_echoed(tmp_path: Path) -> None:
    weak = "Sh0rt!"
    line = refused(tessera("init", data_dir=tmp_path / "data", TESSERA_ADMIN_PASSWORD=weak))
    assert line == "TESSERA_ADMIN_PASSWORD: password must be at least 8 characters"
    # Nothing was created with it: the next start with a good password makes the admin.
    again = tessera("init", data_dir=tmp_path / "data")
    assert again.returncode == 0, again.stderr
    assert "Created user 'admin' with the password from TESSERA_ADMIN_PASSWORD" in again.stdout


def test_the_chosen_admin_password_is_in_no_output_and_no_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = tessera("init", data_dir=data_dir, TESSERA_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr
    assert GOOD_PASSWORD not in result.stdout + result.stderr
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name == "tessera.db" for path in files)
    for path in files:
        assert GOOD_PASSWORD.encode() not in path.read_bytes(), path


def test_the_start_up_line_comes_once_both_ports_answer(tmp_path: Path) -> None:
    """Workers bind the ports once their application is built, seconds after the start: the
    line telling a newcomer where to connect must not come before."""
    port, http_port = free_port(), free_port()
    args = ("serve", "--port", str(port), "--http-port", str(http_port), "--workers", "1")
    process = start(*args, data_dir=tmp_path / "data")
    try:
        start_up_line(process)
        for listening in (port, http_port):
            socket.create_connection(("127.0.0.1", listening), timeout=10).close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def start_up_line(process: subprocess.Popen[str]) -> str:
    """The line telling where the server listens, once it comes (what came before is read)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Tessera listening on"):
            return line
    raise AssertionError(f"no start-up line: {process.stderr and process.stderr.read()}")


def start_up_output(tmp_path: Path, workers: int, **env: str) -> str:
    """Everything `tessera serve` says up to and including its start-up line, and until it
    has stopped (every worker has spoken by then)."""
    port, http_port = free_port(), free_port()
    args = ("serve", "--port", str(port), "--http-port", str(http_port))
    process = start(*args, "--workers", str(workers), data_dir=tmp_path / "data", **env)
    try:
        line = start_up_line(process)
        # A worker binds its last socket once its application is built, warnings said.
        deadline = time.monotonic() + 60
        while sockets_listening(http_port) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    return f"{line}{out}{err}".replace(f":{port}", ":PORT").replace(f":{http_port}", ":HTTP")


def sockets_listening(port: int) -> int:
    """How many sockets listen on `port` (one per worker: SO_REUSEPORT), from /proc."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1 for row in rows if row.split()[3] == "0A" and row.split()[1].endswith(f":{port:04X}")
    )


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        ({}, "TRUSTED_PROXY_IPS is not set"),
        ({"TESSERA_ACME_INSECURE_ALWAYS_VALID": "true"}, "ACME challenges are NOT checked"),
    ],
)
def test_a_start_up_warning_is_said_once_however_many_workers(
    tmp_path: Path, env: dict[str, str], warning: str
) -> None:
    output = start_up_output(tmp_path, workers=3, **env)
    assert "(3 workers)" in output, output
    assert output.count(warning) == 1, output


def test_the_start_up_line_names_the_bound_address_and_the_public_urls(tmp_path: Path) -> None:
    output = start_up_output(tmp_path, workers=1, TESSERA_PUBLIC_URL="https://pki.example.test")
    line = output.splitlines()[0]
    assert line == (
        "Tessera listening on https://127.0.0.1:PORT (1 worker), plain HTTP on "
        "http://127.0.0.1:HTTP; public URLs https://pki.example.test, http://127.0.0.1:HTTP"
    ), line


def test_tessera_log_level_shows_tessera_s_own_messages(tmp_path: Path) -> None:
    """At info, what Tessera logs at info (here: its OCSP responder certificate issued for
    the first request about the internal CA) reaches the server's output."""
    running = start_server(tmp_path / "data", None, env={"TESSERA_LOG_LEVEL": "info"})
    try:
        leaf, issuer = x509.load_pem_x509_certificates(running.ca_bundle.read_bytes())[:2]
        asked = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        answer = httpx.post(
            f"{running.http_url}/ocsp",
            content=asked.public_bytes(serialization.Encoding.DER),
            headers={"Content-Type": "application/ocsp-request"},
        )
        assert ocsp.load_der_ocsp_response(answer.content).certificate_status.name == "GOOD"
        deadline = time.monotonic() + 30
        while "issued OCSP signer" not in running.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "INFO: issued OCSP signer" in running.log(), running.log()
    finally:
        stop_server(running)
