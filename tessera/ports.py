"""The listening ports a server claims before its workers bind them.

Workers bind with SO_REUSEPORT, which the kernel lets every socket of the same user share. A
check that a port is free followed, seconds later, by the workers' binds let two servers of
one user started together (two data directories, say) both pass the check and both bind: the
kernel then split connections between two PKIs, silently. So the supervisor first takes an
exclusive lock (flock) per address and port, held for its life and released by the kernel
when it dies (no stale lock after a crash), then checks that the port is free (which still
refuses any other program, or another user's server, already listening there).

The locks live in a directory of the user's own under the temporary directory, created 0700:
another user's socket cannot share the port (the kernel refuses SO_REUSEPORT across users),
and another user must not be able to hold, or plant, this user's locks. Not in
XDG_RUNTIME_DIR: a server started from a login shell (which has it) and one started as a
service (which has not) must find the same lock."""

import contextlib
import fcntl
import ipaddress
import os
import socket
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - naming the wildcard, not binding it


@dataclass(frozen=True)
class Claim:
    """Open lock files (descriptors): the locks last as long as they are open."""

    descriptors: tuple[int, ...]

    def release(self) -> None:
        for descriptor in self.descriptors:
            os.close(descriptor)


def claim(host: str, ports: Iterable[int]) -> Claim:
    """Lock each port for `host`, then check that nothing listens there; SystemExit with
    one clear line otherwise."""
    held: list[int] = []
    with contextlib.ExitStack() as undo:  # on any failure, the locks taken so far go
        for port in ports:
            taken = lock(host, port)
            held += taken
            undo.callback(Claim(tuple(taken)).release)
            check_free(host, port)
        undo.pop_all()
    return Claim(tuple(held))


def lock(host: str, port: int) -> list[int]:
    """The locks of `host:port` (open descriptors), or SystemExit when another server of
    this user holds them."""
    directory = lock_directory()
    held: list[int] = []
    with contextlib.ExitStack() as undo:  # on any failure, the locks taken so far go
        for name, exclusive in lock_names(host, port):
            held.append(_lock(directory / name, exclusive, host, port))
            undo.callback(os.close, held[-1])
        undo.pop_all()
    return held


def lock_names(host: str, port: int) -> list[tuple[str, bool]]:
    """The lock files for `host:port`, each with whether it is taken exclusively. A wildcard
    server takes every address of the port, so it holds the port's lock alone; a server on
    one address shares the port's lock and holds its address's alone (SO_REUSEPORT lets
    127.0.0.1 bind beside 0.0.0.0 too, and loopback clients then go to the 127.0.0.1 one)."""
    address = canonical_address(host)
    if address in WILDCARDS:
        return [(f"port-{port}.lock", True)]
    return [(f"port-{port}.lock", False), (f"{address}-{port}.lock", True)]


def canonical_address(host: str) -> str:
    """One spelling per address (`::0` is `::`, `localhost` is 127.0.0.1), safe in a file name."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    if host in WILDCARDS:
        return host
    try:
        return socket.gethostbyname(host)  # what binding the name binds (IPv4, as tcp_socket)
    except OSError:
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in host)


def lock_directory() -> Path:
    directory = Path(tempfile.gettempdir()) / f"tessera-{os.getuid()}-ports"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    found = directory.lstat()
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
        or found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise SystemExit(
            f"cannot lock the ports: {directory} is not a directory of this user's alone "
            "(remove it, or set TMPDIR elsewhere)"
        )
    return directory


def _lock(path: Path, exclusive: bool, host: str, port: int) -> int:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise SystemExit(
            f"cannot listen on {host}:{port}: in use by another Tessera server of this user "
            f"(starting or running)"
        ) from None
    return descriptor


def tcp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)


def check_free(host: str, port: int) -> None:
    """Fail early, and clearly, when something already listens there (even a Tessera)."""
    with tcp_socket(host) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
