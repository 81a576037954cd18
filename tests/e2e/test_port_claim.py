"""Two `tessera serve` of one user (two data directories) on one port: the second is refused
at its start with one clear line and a non-zero exit, whether the first already listens or
starts at the same moment, and the first keeps serving. Workers bind with SO_REUSEPORT, so
without the supervisor's port lock (tessera/ports.py) both servers passed the is-it-free check
before either's workers bound, and the kernel split the connections between two PKIs."""

import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ADDRESS_IN_USE, ADMIN_PASSWORD, free_port, stop_process_group

STARTED = "Tessera listening on"


@dataclass
class Serve:
    """One `tessera serve`, its output in a file (two at once must not block on a pipe)."""

    data_dir: Path
    port: int
    http_port: int
    process: subprocess.Popen[bytes]
    output: Path

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def ready(self) -> bool:
        """Its own certificate verifies on its HTTPS port, and it says it is ready."""
        bundle = self.data_dir / "tls" / "server.pem"
        if not bundle.exists():
            return False
        try:
            verify = ssl.create_default_context(cafile=str(bundle))
            with httpx.Client(verify=verify, timeout=10) as client:
                answer = client.get(f"https://127.0.0.1:{self.port}/api/v2/health/ready")
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return False
        return answer.status_code == 200

    def stop(self) -> None:
        stop_process_group(self.process, timeout=30)


def serve(data_dir: Path, port: int, http_port: int) -> Serve:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("TESSERA_") and k != "DATABASE_URL"
    }
    environment.update(TESSERA_DATA_DIR=str(data_dir), TESSERA_ADMIN_PASSWORD=ADMIN_PASSWORD)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    output = data_dir.parent / f"{data_dir.name}.out"
    args = ["serve", "--port", str(port), "--http-port", str(http_port), "--workers", "1"]
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", *args],
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Serve(data_dir, port, http_port, process, output)


def wait_until(condition: object, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited in vain: {what}"
        time.sleep(0.2)


def assert_refused(loser: Serve, port: int) -> None:
    said = loser.said().strip()
    assert loser.process.returncode not in (None, 0), said
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    assert said.startswith(f"cannot listen on 127.0.0.1:{port}: "), said
    assert "in use" in said, said


def assert_alone_on(winner: Serve, port: int) -> None:
    """The winner answers on the shared port: on HTTPS with its own certificate, every time
    (a second server there would answer some connections with another)."""
    assert winner.process.poll() is None, winner.said()
    if port == winner.port:
        assert all(winner.ready() for _ in range(20)), winner.said()
    else:  # the plain-HTTP port: public material only, but an answer from a live server
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/nothing", timeout=10).status_code == 404


@pytest.mark.parametrize("shared", ["https", "http"])
def test_two_servers_starting_together_on_one_port_one_is_refused(
    tmp_path: Path, shared: str
) -> None:
    for attempt in range(3):
        if race(tmp_path / str(attempt), shared):
            return
    raise AssertionError("other programs took the ports of every attempt")


def race(folder: Path, shared: str) -> bool:
    """False when a program outside the test took a port meanwhile (other tests on the
    machine): then again, on other ports."""
    common = free_port()
    ports = [(common, free_port()) if shared == "https" else (free_port(), common) for _ in "ab"]
    servers = [serve(folder / name, *pair) for name, pair in zip("ab", ports, strict=True)]
    try:
        wait_until(
            lambda: (
                any(s.process.poll() is not None for s in servers)
                or all(STARTED in s.said() for s in servers)
            ),
            "one server refused, or both listening",
        )
        exited = [s for s in servers if s.process.poll() is not None]
        said = "\n---\n".join(s.said() for s in servers)
        if ADDRESS_IN_USE in said:
            return False
        assert len(exited) == 1, f"both servers run on port {common}:\n{said}"
        (loser,) = exited
        (winner,) = [s for s in servers if s is not loser]
        assert_refused(loser, common)
        assert "in use by another Tessera server" in loser.said(), said
        wait_until(lambda: STARTED in winner.said() or winner.process.poll() is not None, "start")
        if ADDRESS_IN_USE in winner.said():
            return False
        assert_alone_on(winner, common)
        return True
    finally:
        for running in servers:
            running.stop()


def test_a_server_started_beside_a_running_one_is_refused(tmp_path: Path) -> None:
    first = serve(tmp_path / "first", free_port(), free_port())
    try:
        wait_until(first.ready, "the first server")
        for port, http_port in ((first.port, free_port()), (free_port(), first.http_port)):
            second = serve(tmp_path / f"second-{port}", port, http_port)
            try:
                second.process.wait(timeout=120)
            finally:
                second.stop()
            assert_refused(second, first.port if port == first.port else first.http_port)
        assert_alone_on(first, first.port)
        assert_alone_on(first, first.http_port)
    finally:
        first.stop()


def test_a_killed_server_leaves_no_lock_behind(tmp_path: Path) -> None:
    """The kernel drops a dead process's locks: a crash must not keep the next start out."""
    crashed = serve(tmp_path / "crashed", free_port(), free_port())
    try:
        wait_until(crashed.ready, "the server")
    finally:
        os.killpg(crashed.process.pid, signal.SIGKILL)
        crashed.process.wait()
    again = serve(tmp_path / "again", crashed.port, crashed.http_port)
    try:
        wait_until(lambda: again.ready() or again.process.poll() is not None, "the new server")
        assert again.ready(), again.said()
    finally:
        again.stop()
