"""The port locks of tessera/ports.py: which addresses of one port exclude each other, and
where the locks live. (Two real servers racing for a port: tests/e2e/test_port_claim.py.)
flock locks taken through two descriptors exclude each other even in one process."""

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera import ports
from tessera.ports import Claim

PORT = 15999  # only lock files are made for it; nothing binds it


@pytest.fixture(autouse=True)
def own_lock_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Locks of this test's own, not those of servers running on the machine."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path


def hold(host: str, port: int = PORT) -> Claim:
    return Claim(tuple(ports.lock(host, port)))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("127.0.0.1", "0.0.0.0"),
        ("::", "0.0.0.0"),
        ("::1", "0:0::1"),
        ("localhost", "127.0.0.1"),
        ("", "::"),
    ],
)
def test_addresses_a_client_could_reach_both_on_exclude_each_other(first: str, second: str) -> None:
    held = hold(first)
    try:
        with pytest.raises(SystemExit, match=f"cannot listen on {second}:{PORT}: in use by"):
            hold(second)
    finally:
        held.release()
    hold(second).release()  # released: free again


def test_two_addresses_or_two_ports_do_not() -> None:
    held = [hold("127.0.0.1"), hold("127.0.0.2"), hold("127.0.0.1", PORT + 1)]
    for claim in held:
        claim.release()


def test_a_lock_directory_others_may_write_to_is_refused(own_lock_directory: Path) -> None:
    """Another user who made it (or may write to it) could hold or replace our locks."""
    planted = own_lock_directory / f"tessera-{os.getuid()}-ports"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    with pytest.raises(SystemExit, match="is not a directory of this user's alone"):
        hold("127.0.0.1")


def test_the_lock_directory_is_private() -> None:
    hold("127.0.0.1").release()
    directory = ports.lock_directory()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in directory.iterdir())


def test_a_claim_that_fails_on_a_later_port_lets_go_of_the_earlier_ones() -> None:
    """The second port is taken by another program: the first port's locks are released, so
    the next start (or another server) can claim it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(SystemExit, match="cannot listen on"):
            ports.claim("127.0.0.1", [PORT, busy])
    hold("127.0.0.1").release()
