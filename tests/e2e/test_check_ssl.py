"""check-ssl (/api/v2/tools/check-ssl): the refusal of targets that are not public, by
address after resolution, and real handshakes with this suite's own TLS server and with a
slow one."""

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dns.message
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tessera.core import tls_probe
from tessera.core.errors import InvalidInput, PermissionDenied
from tests.e2e.helpers import API, cert_of, data, error, self_signed
from tests.support import Server, admin_api_key, start_server, stop_server
from tests.tools import pem_blocks

PROBE_TIMEOUT = 5  # open_server's TESSERA_TOOLS_TLS_TIMEOUT


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that may probe private targets (its own port included)."""
    env = {
        "TESSERA_TOOLS_ALLOW_PRIVATE_TARGETS": "true",
        "TESSERA_TOOLS_TLS_TIMEOUT": str(PROBE_TIMEOUT),
    }
    running = start_server(tmp_path_factory.mktemp("tools") / "data", None, env=env)
    try:
        running.api_key = admin_api_key(running)
        yield running
    finally:
        stop_server(running)


def server_chain_fingerprints(server: Server) -> list[str]:
    return [
        cert_of(b).fingerprint(hashes.SHA256()).hex(":").upper()
        for b in pem_blocks(server.ca_bundle.read_text())
    ]


def test_check_ssl_refuses_private_targets_by_default(server: Server, api: httpx.Client) -> None:
    hosts = [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.1.2.3",
        "169.254.169.254",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",
        "100.64.0.1",
        "224.0.0.1",
    ]
    for host in hosts:
        refused = api.post(f"{API}/tools/check-ssl", json={"hostname": host, "port": server.port})
        message = error(refused, 403)
        assert "TESSERA_TOOLS_ALLOW_PRIVATE_TARGETS" in message and "refusing" in message
    assert "host name" in error(
        api.post(f"{API}/tools/check-ssl", json={"hostname": "bad host!", "port": 443}), 400
    )
    error(api.post(f"{API}/tools/check-ssl", json={"hostname": "example.com", "port": 0}), 422)
    error(api.post(f"{API}/tools/check-ssl", json={"port": 443}), 422)


def test_every_resolved_address_is_checked_and_only_those_are_dialled() -> None:
    """A name that resolves to a public and a private address is refused (the connection
    would go to a checked address, never to the name again)."""
    mixed = lambda host, port: ["93.184.216.34", "127.0.0.1"]  # noqa: E731
    with pytest.raises(PermissionDenied, match=r"127\.0\.0\.1 is loopback"):
        tls_probe.probe("rebind.example", 443, 1.0, resolver=mixed)
    with pytest.raises(InvalidInput, match="cannot resolve"):
        tls_probe.probe("nowhere.example", 443, 1.0, resolver=lambda host, port: [])
    assert tls_probe.non_public_reason(ipaddress.ip_address("93.184.216.34")) is None


def test_check_ssl_against_a_real_tls_server(open_server: Server) -> None:
    with open_server.client() as api:
        for host in ("127.0.0.1", "localhost"):
            body = {"hostname": host, "port": open_server.port}
            checked = data(api.post(f"{API}/tools/check-ssl", json=body))
            assert checked["connected"] is True and checked["address"] in ("127.0.0.1", "::1")
            assert checked["protocol"] in ("TLSv1.2", "TLSv1.3") and checked["cipher"]["bits"]
            presented = [c["fingerprint_sha256"] for c in checked["chain"]]
            assert presented == server_chain_fingerprints(open_server)[: len(presented)]
            assert presented[0] == server_chain_fingerprints(open_server)[0]
            validation = checked["validation"]
            assert validation["trusted"] is False and validation["hostname_match"] is True
            assert "certificate" in validation["error"]  # not in the system trust store
            assert checked["certificate"]["san"][:1] == ["dns:localhost"]
        closed = data(
            api.post(
                f"{API}/tools/check-ssl",
                json={"hostname": "127.0.0.1", "port": open_server.http_port},
            )
        )
        assert closed["connected"] is False and "TLS" in closed["error"]


def test_check_ssl_refuses_ranges_python_does_not_flag(api: httpx.Client) -> None:
    """Site-local IPv6 (still routed inside some networks), the IPv6 documentation prefix and
    IANA's protocol-assignment block are no public targets either, nor are they when
    wrapped in 6to4 or IPv4-mapped addresses."""
    for host in (
        "fec0::1",
        "[fec0::1]",
        "3fff::1",
        "192.0.0.8",
        "::ffff:192.0.0.8",
        "2002:c000:8::",
    ):
        refused = api.post(f"{API}/tools/check-ssl", json={"hostname": host, "port": 443})
        assert "refusing" in error(refused, 403), host


def test_check_ssl_takes_internationalised_host_names(
    api: httpx.Client, open_server: Server
) -> None:
    """A name in Unicode is looked up (and sent as SNI) in its IDNA A-label form, as DNS and
    certificates hold it, rather than refused as "not a host name"."""
    unresolved = api.post(f"{API}/tools/check-ssl", json={"hostname": "bücher.example"})
    assert "cannot resolve xn--bcher-kva.example" in error(unresolved, 400)
    fullwidth = "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54"  # localhost
    refused = api.post(f"{API}/tools/check-ssl", json={"hostname": fullwidth, "port": 443})
    assert "refusing to connect to localhost" in error(refused, 403)
    with open_server.client() as client:
        body = {"hostname": fullwidth.upper(), "port": open_server.port}
        checked = data(client.post(f"{API}/tools/check-ssl", json=body))
    assert checked["connected"] is True and checked["hostname"] == "localhost"
    assert checked["validation"]["hostname_match"] is True
    invalid = api.post(f"{API}/tools/check-ssl", json={"hostname": "a\u200db.example"})
    assert "internationalised host name" in error(invalid, 400)


@contextmanager
def slow_tls_server(workdir: Path, delay: float) -> Iterator[int]:
    """A TLS server with a self-signed certificate that waits `delay` seconds before each
    handshake: slow, but within the probe's timeout each time."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = workdir / "slow.pem"
    pem.write_bytes(
        self_signed(key, "slow.test").public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))

    def answer(connection: socket.socket) -> None:
        with connection, suppress(OSError):
            time.sleep(delay)
            with context.wrap_socket(connection, server_side=True):
                pass

    def serve() -> None:
        with suppress(OSError):
            while True:
                connection, _ = listener.accept()
                threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_check_ssl_keeps_to_one_timeout_in_all(open_server: Server, workdir: Path) -> None:
    """A server that answers each handshake just before the timeout, with a certificate the
    trust store refuses (so the probe connects a second time to see it unverified), holds a
    worker thread for one timeout, not one per connection."""
    delay = PROBE_TIMEOUT - 0.7
    with slow_tls_server(workdir, delay) as port, open_server.client() as client:
        body = {"hostname": "127.0.0.1", "port": port}
        checked = data(client.post(f"{API}/tools/check-ssl", json=body))
    # With a fresh timeout per connection the second, unverified handshake succeeded after a
    # second wait and reported the chain; within one deadline it has too little time left.
    assert checked["connected"] is False and checked["error"] == "timed out"


# The host name's lookup, inside the probe's one deadline


@contextmanager
def silent_dns_server() -> Iterator[tuple[int, list[bytes]]]:
    """A UDP DNS server that reads every query and answers none: the resolver that never
    comes back. Yields its port and the queries it received."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    received: list[bytes] = []

    def read() -> None:
        with suppress(OSError):
            while True:
                received.append(listener.recvfrom(4096)[0])

    threading.Thread(target=read, daemon=True).start()
    try:
        yield listener.getsockname()[1], received
    finally:
        listener.close()


def test_a_resolver_that_never_answers_ends_with_the_probe_timeout(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The DNS servers check-ssl asks are configurable (TESSERA_TOOLS_DNS_SERVERS); when they
    never answer, the lookup ends with the probe's deadline and the answer says so (400),
    instead of holding the worker for as long as the system resolver keeps retrying."""
    with silent_dns_server() as (dns_port, received):
        env = {
            "TESSERA_TOOLS_DNS_SERVERS": f"127.0.0.1:{dns_port}",
            "TESSERA_TOOLS_TLS_TIMEOUT": "1",
        }
        running = start_server(tmp_path_factory.mktemp("dns") / "data", None, env=env)
        try:
            running.api_key = admin_api_key(running)
            with running.client() as api:
                body = {"hostname": "never-answered.example", "port": 443}
                refused = api.post(f"{API}/tools/check-ssl", json=body)
                assert error(refused, 400) == "cannot resolve never-answered.example: timed out"
                # /etc/hosts is read first, as the system resolver does, without DNS.
                local = api.post(f"{API}/tools/check-ssl", json={"hostname": "localhost"})
                assert "refusing to connect to localhost" in error(local, 403)
        finally:
            stop_server(running)
    asked = [dns.message.from_wire(q).question[0] for q in received]
    assert {q.name.to_text() for q in asked} == {"never-answered.example."}


def test_the_lookup_takes_from_the_probes_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Core (no API hook can slow a resolver down): the resolver is given the time the probe
    has, and the connection only what the lookup left of it."""
    clock = [1000.0]
    monkeypatch.setattr(tls_probe.time, "monotonic", lambda: clock[0])
    given: list[float] = []
    dialled: list[float] = []

    def slow_resolver(host: str, seconds: float) -> list[str]:
        given.append(seconds)
        clock[0] += 7.5  # the lookup took most of the 10 s
        return ["192.0.2.1"]

    def refused_connection(address: tuple[str, int], timeout: float) -> socket.socket:
        dialled.append(timeout)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(tls_probe.socket, "create_connection", refused_connection)
    result = tls_probe.probe("slow.example", 443, 10.0, True, slow_resolver)
    assert result.connected is False and result.error == "Connection refused"
    assert given == [10.0] and dialled == [2.5]

    def exhausting_resolver(host: str, seconds: float) -> list[str]:
        clock[0] += seconds
        raise TimeoutError("timed out")

    with pytest.raises(InvalidInput, match=r"cannot resolve slow\.example: timed out"):
        tls_probe.probe("slow.example", 443, 10.0, True, exhausting_resolver)
