"""Looking a host name up within a time limit, for outgoing probes (check-ssl).

`socket.getaddrinfo` cannot be given a timeout, nor stopped: a resolver that never answers
held the caller for as long as the C library kept retrying, whatever the probe's own
deadline, and running it in a thread to give up on it would leave that thread behind. So the
lookup is done here, in the calling thread: /etc/hosts first (as the system's `files dns`
order does), then DNS through dnspython, each query bounded by the time left. The DNS servers
are those of /etc/resolv.conf, or the ones configured.
"""

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.nameserver
import dns.resolver

HOSTS_FILE = Path("/etc/hosts")
RECORD_TYPES = ("A", "AAAA")


@dataclass(frozen=True)
class HostLookup:
    """Called with a host name and the seconds it may take; answers its addresses as text.
    Raises TimeoutError when the time runs out and OSError when the name has no address."""

    servers: tuple[tuple[str, int], ...] = ()  # empty: /etc/resolv.conf's
    hosts_file: Path = HOSTS_FILE

    @classmethod
    def parse(cls, servers: str) -> "HostLookup":
        """Comma-separated `host`, `host:port` or `[v6]:port` (port 53 by default)."""
        return cls(tuple(server_address(s) for s in servers.split(",") if s.strip()))

    def __call__(self, host: str, seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        listed = _in_hosts_file(self.hosts_file, host)
        if listed:
            return listed
        resolver = self._resolver()
        found: list[str] = []
        for record_type in RECORD_TYPES:
            found += _query(resolver, host, record_type, deadline)
        if not found:
            raise OSError("no A or AAAA record")
        return found

    def _resolver(self) -> dns.resolver.Resolver:
        try:
            resolver = dns.resolver.Resolver(configure=not self.servers)
        except dns.exception.DNSException as exc:  # no readable /etc/resolv.conf
            raise OSError(f"no DNS server configured: {exc}") from exc
        if self.servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in self.servers]
        resolver.cache = None
        return resolver


def server_address(text: str) -> tuple[str, int]:
    """`address`, `address:port` or `[v6 address]:port` (port 53 by default): an IP address,
    as the DNS client needs one, and a port it can send to."""
    text = text.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = str(ipaddress.ip_address(host))
        number = int(port or 53)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise ValueError(f"not a DNS server address (IP address or address:port): {text!r}")
    return address, number


def _query(
    resolver: dns.resolver.Resolver, host: str, record_type: str, deadline: float
) -> list[str]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    try:
        answer = resolver.resolve(host, record_type, lifetime=left, search=False)
    except dns.resolver.NoAnswer:
        return []
    except dns.resolver.NXDOMAIN as exc:
        raise OSError("no such host") from exc
    except dns.exception.Timeout as exc:
        raise TimeoutError("timed out") from exc
    except dns.exception.DNSException as exc:
        raise OSError(f"DNS lookup failed: {exc}") from exc
    return [str(record.address) for record in answer]


def _in_hosts_file(path: Path, host: str) -> list[str]:
    """The addresses /etc/hosts gives the name, in the file's order."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and host in (name.lower().rstrip(".") for name in fields[1:]):
            found.append(fields[0])
    return list(dict.fromkeys(found))
