"""Challenge validation ends within its time budget whatever the servers it talks to do to
stretch it: a DNS server that never answers, or answers each of many lookups slowly; a web or
TLS server sending a byte at a time (each wait well inside the socket's timeout, so only a cut
at the budget ends it)."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import dns.message
import dns.rcode
import pytest

from tessera.domains.acme import http01, validation
from tessera.domains.acme.http01 import validate_http01
from tessera.domains.acme.lookup import ValidationConfig
from tessera.protocols.acme.problems import AcmeProblem


@pytest.fixture
def short_budget(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(http01, "FETCH_BUDGET", 1.0)
    monkeypatch.setattr(validation, "TLS_ALPN_BUDGET", 1.0)
    return 1.0


@contextmanager
def listening(serve: Callable[[socket.socket, threading.Event], None], kind: int) -> Iterator[int]:
    """A server on 127.0.0.1 running `serve` on its socket in a thread; yields its port."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen()  # before the client connects
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(sock, stop), daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        sock.close()


def dripping(first: bytes, last: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """A server that sends `first`, then a byte every 0.1 s for up to 6 s, then `last`."""

    def serve(sock: socket.socket, stop: threading.Event) -> None:
        drip(sock, stop, first, last)

    return serve


def drip(sock: socket.socket, stop: threading.Event, first: bytes, last: bytes) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        with conn:
            conn.sendall(first)
            for _ in range(60):
                if stop.is_set():
                    return
                try:
                    conn.sendall(b"a")
                except OSError:
                    break  # cut by the client
                time.sleep(0.1)
            with suppress(OSError):
                conn.sendall(last)


def silent_dns(sock: socket.socket, stop: threading.Event) -> None:
    """Takes every query and answers none."""
    sock.settimeout(0.2)
    while not stop.is_set():
        with suppress(TimeoutError):
            sock.recvfrom(4096)


def slow_nxdomain(sock: socket.socket, stop: threading.Event) -> None:
    """Answers every query "no such name", each after 0.3 s (inside the client's timeout)."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            query, client = sock.recvfrom(4096)
        except TimeoutError:
            continue
        answer = dns.message.make_response(dns.message.from_wire(query))
        answer.set_rcode(dns.rcode.NXDOMAIN)
        time.sleep(0.3)
        sock.sendto(answer.to_wire(), client)


def test_a_server_sending_a_byte_at_a_time_is_cut_at_the_budget(short_budget: float) -> None:
    slow = dripping(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"\r\nContent-Length: 5\r\n\r\nwrong")
    with listening(slow, socket.SOCK_STREAM) as port:
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


def test_a_tls_server_sending_a_byte_at_a_time_is_cut_at_the_budget(short_budget: float) -> None:
    # A TLS handshake record announcing 16 KiB, whose bytes then come one by one.
    slow = dripping(b"\x16\x03\x03\x40\x00", b"")
    with listening(slow, socket.SOCK_STREAM) as port:
        config = ValidationConfig((), 80, port, timeout=5.0)
        with pytest.raises(AcmeProblem) as raised:
            validation.validate("tls-alpn-01", "ip", "127.0.0.1", "token.thumbprint", config)
    assert raised.value.kind == "connection"
    assert f"past {short_budget:g} s" in raised.value.message


def test_the_caa_walk_ends_with_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "CAA_BUDGET", 1.0)
    deep = ".".join(f"l{i}" for i in range(20)) + ".example"
    with listening(slow_nxdomain, socket.SOCK_DGRAM) as port:
        config = ValidationConfig((("127.0.0.1", port),), 80, 443, timeout=2.0)
        with pytest.raises(AcmeProblem) as raised:
            validation.check_caa(deep, False, ["tessera"], config)
    assert raised.value.kind == "dns"
    assert "past 1 s" in raised.value.message
