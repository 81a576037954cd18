"""Which addresses an http-01 redirect may connect to: a loopback, link-local, unspecified
or multicast address only when the challenge's first request connected to an address of that
same kind (a private CA's identifiers legitimately resolve to private addresses, which any
hop may reach); and that a chain of requests ends with its time budget, whatever the servers
do to stretch it."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest

from tessera.domains.acme import http01
from tessera.domains.acme.http01 import address_kind, may_connect, validate_http01
from tessera.domains.acme.lookup import ValidationConfig
from tessera.protocols.acme.problems import AcmeProblem


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("10.1.2.3", None),
        ("192.168.1.1", None),
        ("fd00::1", None),
        ("203.0.113.7", None),
        ("2001:db8::1", None),
    ],
)
def test_address_kind(address: str, kind: str | None) -> None:
    assert address_kind(address) == kind


def test_the_first_request_may_connect_anywhere() -> None:
    for address in ("127.0.0.1", "169.254.169.254", "10.0.0.1", "203.0.113.7"):
        assert may_connect(0, address, None)


def test_a_redirect_reaches_a_guarded_kind_only_when_the_first_request_did() -> None:
    # The identifier on a routable or private address: no loopback nor metadata endpoint.
    for address in ("127.0.0.1", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1"):
        assert not may_connect(1, address, None), address
    assert may_connect(2, "10.0.0.2", None)  # private addresses stay reachable
    assert may_connect(1, "203.0.113.8", None)
    # The identifier on loopback (as in the tests): loopback redirects keep working, and
    # still no link-local one.
    assert may_connect(1, "127.0.0.2", "loopback")
    assert may_connect(3, "::1", "loopback")
    assert not may_connect(1, "169.254.169.254", "loopback")
    assert may_connect(1, "169.254.169.254", "link-local")
    assert not may_connect(1, "127.0.0.1", "link-local")
    assert may_connect(1, "192.168.0.5", "loopback")


# --- the chain's time budget -------------------------------------------------------------


@pytest.fixture
def short_budget(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(http01, "FETCH_BUDGET", 1.0)
    return 1.0


@contextmanager
def listening(serve: Callable[[socket.socket], None], kind: int) -> Iterator[int]:
    """A server on 127.0.0.1 running `serve` on its socket in a thread; yields its port."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(sock, stop), daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        sock.close()


def dripping_http(sock: socket.socket, stop: threading.Event) -> None:
    """Answers with a header sent a byte every 0.1 s, each wait well inside the socket's
    timeout, for up to 6 s (then the response ends, wrong)."""
    sock.listen()
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(60):
                if stop.is_set():
                    return
                try:
                    conn.sendall(b"a")
                except OSError:
                    break  # cut by the client
                time.sleep(0.1)
            with suppress(OSError):
                conn.sendall(b"\r\nContent-Length: 5\r\n\r\nwrong")


def silent_dns(sock: socket.socket, stop: threading.Event) -> None:
    """Takes every query and answers none."""
    sock.settimeout(0.2)
    while not stop.is_set():
        with suppress(TimeoutError):
            sock.recvfrom(4096)


def test_a_server_sending_a_byte_at_a_time_is_cut_at_the_budget(short_budget: float) -> None:
    with listening(dripping_http, socket.SOCK_STREAM) as port:
        config = ValidationConfig((), port, port, timeout=5.0)
        with pytest.raises(AcmeProblem) as raised:
            validate_http01("127.0.0.1", "token.thumbprint", config)
    assert raised.value.kind == "connection"
    assert f"past {short_budget:g} s" in raised.value.message


def test_dns_lookups_end_with_the_budget(short_budget: float) -> None:
    with listening(silent_dns, socket.SOCK_DGRAM) as port:
        config = ValidationConfig((("127.0.0.1", port),), 80, 443, timeout=5.0)
        with pytest.raises(AcmeProblem) as raised:
            validate_http01("slow.example", "token.thumbprint", config)
    assert raised.value.kind == "connection"
    assert f"past {short_budget:g} s" in raised.value.message
