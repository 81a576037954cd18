"""Where challenge validation connects: every name is resolved through the configured DNS
servers (`TESSERA_ACME_DNS_SERVERS`), never the system's resolver when they are set, and
connections go to the configured ports. A private network (or a test) so decides where
validation goes, for each challenge type and for each hop of an http-01 redirect."""

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.resolver

from tessera.core.host_lookup import server_address
from tessera.protocols.acme.problems import AcmeProblem


@dataclass(frozen=True)
class ValidationConfig:
    dns_servers: tuple[tuple[str, int], ...]
    http01_port: int
    tlsalpn01_port: int
    timeout: float

    @classmethod
    def parse(
        cls, servers: str, http_port: int, tls_port: int, timeout: float
    ) -> "ValidationConfig":
        dns_servers = tuple(server_address(s) for s in servers.split(",") if s.strip())
        return cls(dns_servers, http_port, tls_port, timeout)

    def resolver(self) -> dns.resolver.Resolver:
        if not self.dns_servers:
            resolver = dns.resolver.Resolver()
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in self.dns_servers
            ]
        resolver.lifetime = resolver.timeout = self.timeout
        resolver.cache = None  # a retried challenge must see the current records
        return resolver


def addresses(
    id_type: str, name: str, config: ValidationConfig, deadline: float | None = None
) -> list[str]:
    """The addresses of `name`; each of the two lookups waits at most the configured timeout,
    and not past `deadline` (a `time.monotonic()` value) when one is given."""
    if id_type == "ip":
        return [name]
    resolver = config.resolver()
    found: list[str] = []
    errors: list[str] = []
    for rdtype in ("A", "AAAA"):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AcmeProblem("dns", f"DNS lookup of {name} ({rdtype}): no time left")
            resolver.lifetime = min(config.timeout, left)
        try:
            answer = resolver.resolve(name, rdtype)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as exc:
            errors.append(type(exc).__name__)
            continue
        except dns.exception.DNSException as exc:
            raise AcmeProblem("dns", f"DNS lookup of {name} ({rdtype}) failed: {exc}") from exc
        found.extend(str(r) for r in answer)
    if not found:
        raise AcmeProblem("dns", f"no A or AAAA record for {name} ({', '.join(errors)})")
    return found


@contextmanager
def cut_at(deadline: float, connected: socket.socket) -> Iterator[threading.Event]:
    """Shut the connection down at `deadline` (a `time.monotonic()` value), should the block
    still run then; the event says whether it was. A socket's timeout bounds each wait for
    data, not a whole exchange: a server sending a byte at a time could hold a validation for
    as long as it liked. The timer holds a duplicate of the descriptor: wrapping the socket
    in TLS detaches the object given, and a shutdown acts on the connection whichever
    descriptor names it."""
    cut = threading.Event()
    duplicate = socket.socket(fileno=os.dup(connected.fileno()))

    def shut() -> None:
        cut.set()
        with suppress(OSError):  # closed meanwhile
            duplicate.shutdown(socket.SHUT_RDWR)  # wakes the thread out of its recv

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), shut)
    timer.start()
    try:
        yield cut
    finally:
        timer.cancel()
        timer.join()  # a shut in progress ends before the duplicate closes
        duplicate.close()
