"""Probing a TLS server: the handshake, the chain it presents, and whether the system trust
store and the host name accept it.

Private, loopback, link-local, multicast and reserved addresses are refused unless allowed,
and the check runs on the addresses DNS returned: every one must pass, and the connection then
goes to a checked address, never to the name again, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot redirect the probe. The resolver is injected
so tests can replace it; it is given the time left, as the lookup counts against the probe's
one deadline too.
"""

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import idna
from cryptography import x509

from tessera.core.errors import InvalidInput, PermissionDenied, TesseraError
from tessera.core.formats import load_certificate
from tessera.core.host_lookup import HostLookup

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, float], list[str]]  # host, seconds left -> addresses
MAX_HOSTNAME = 253
MAX_ATTEMPTS = 3  # addresses tried in turn, so a long DNS answer cannot stretch the wait
ALLOW_SETTING = "TESSERA_TOOLS_ALLOW_PRIVATE_TARGETS=true"
# Not public, yet not so flagged by the ipaddress module of every Python this runs on.
_ALSO_NON_PUBLIC = (
    (ipaddress.ip_network("192.0.0.0/24"), "reserved for protocol assignments"),  # RFC 6890
    (ipaddress.ip_network("fec0::/10"), "site-local"),  # RFC 3879: deprecated, still routed
    (ipaddress.ip_network("3fff::/20"), "reserved for documentation"),  # RFC 9637
)


@dataclass(frozen=True)
class ProbeResult:
    hostname: str
    port: int
    address: str
    connected: bool
    error: str | None = None  # why the connection or the handshake failed
    protocol: str | None = None
    cipher: tuple[str, str, int] | None = None  # name, protocol, secret bits
    chain: list[x509.Certificate] = field(default_factory=list)  # as presented, leaf first
    trusted: bool = False  # chain and host name accepted with the system trust store
    verify_error: str | None = None


# /etc/hosts, then the DNS servers of /etc/resolv.conf; bounded, unlike getaddrinfo.
system_resolver: Resolver = HostLookup()


def probe(
    hostname: str,
    port: int,
    timeout: float,
    allow_private: bool = False,
    resolver: Resolver = system_resolver,
) -> ProbeResult:
    host = checked_hostname(hostname)
    if not 0 < port < 65536:
        raise InvalidInput("port must be between 1 and 65535")
    # One deadline for everything: the lookup, each address tried, each handshake (a second
    # one, without verification, when the first refused the chain) take from the same time.
    deadline = time.monotonic() + timeout
    addresses = _resolve(host, resolver, deadline)
    if not allow_private:
        _refuse_non_public(host, addresses)
    try:
        return _verified(host, port, addresses, deadline)
    except ssl.SSLCertVerificationError as exc:
        failure = exc.verify_message or str(exc)
    except (ssl.SSLError, OSError) as exc:
        return ProbeResult(host, port, str(addresses[0]), False, error=_describe(exc))
    try:
        return _unverified(host, port, addresses, deadline, failure)
    except (ssl.SSLError, OSError) as exc:
        return ProbeResult(host, port, str(addresses[0]), False, error=_describe(exc))


def checked_hostname(hostname: str) -> str:
    """A DNS name or an IP literal (brackets allowed around IPv6), nothing else. An
    internationalised name becomes its A-labels (IDNA, UTS #46), the form DNS, SNI and
    certificates' SANs use."""
    host = hostname.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host.isascii():
        host = _a_labels(host, hostname)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.split(".")
    valid = (
        0 < len(host) <= MAX_HOSTNAME
        and host.isascii()
        and all(
            0 < len(label) <= 63
            and label.replace("-", "").replace("_", "").isalnum()
            and not label.startswith("-")
            for label in labels
        )
    )
    if not valid:
        raise InvalidInput(f"not a host name or IP address: {hostname[:100]!r}")
    return host


def _a_labels(host: str, given: str) -> str:
    try:
        return str(idna.encode(host, uts46=True).decode("ascii"))
    except UnicodeError as exc:  # idna.IDNAError derives from it
        raise InvalidInput(f"not a valid internationalised host name: {given[:100]!r}") from exc


def _resolve(host: str, resolver: Resolver, deadline: float) -> list[IPAddress]:
    try:
        found = resolver(host, _remaining(deadline))
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(f"cannot resolve {host}: {_describe(exc)}") from exc
    addresses = []
    for text in found:
        try:
            addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
    if not addresses:
        raise InvalidInput(f"cannot resolve {host}: no address")
    return addresses


def non_public_reason(address: IPAddress) -> str | None:
    """Why an address is not a public unicast one, or None if it is."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return non_public_reason(embedded)
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    listed = (label for network, label in _ALSO_NON_PUBLIC if address in network)
    return next((label for label, applies in checks if applies), next(listed, None))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    return address.teredo[1] if address.teredo is not None else None


def _refuse_non_public(host: str, addresses: list[IPAddress]) -> None:
    for address in addresses:
        reason = non_public_reason(address)
        if reason is not None:
            raise PermissionDenied(
                f"refusing to connect to {host} ({address} is {reason}): private, loopback, "
                f"link-local and reserved targets are disabled; set {ALLOW_SETTING} to allow them"
            )


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _connect(addresses: list[IPAddress], port: int, deadline: float) -> socket.socket:
    failure: OSError | None = None
    for address in addresses[:MAX_ATTEMPTS]:
        try:
            return socket.create_connection((str(address), port), timeout=_remaining(deadline))
        except TimeoutError:
            raise
        except OSError as exc:
            failure = exc
    raise failure or OSError("no address to connect to")


def _verified(host: str, port: int, addresses: list[IPAddress], deadline: float) -> ProbeResult:
    context = ssl.create_default_context()
    return _handshake(context, host, port, addresses, deadline, None)


def _unverified(
    host: str, port: int, addresses: list[IPAddress], deadline: float, failure: str
) -> ProbeResult:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to see what is presented; reported untrusted
    return _handshake(context, host, port, addresses, deadline, failure)


def _handshake(
    context: ssl.SSLContext,
    host: str,
    port: int,
    addresses: list[IPAddress],
    deadline: float,
    failure: str | None,
) -> ProbeResult:
    with _connect(addresses, port, deadline) as raw:
        address = str(raw.getpeername()[0])
        raw.settimeout(_remaining(deadline))  # the handshake has what the connect left
        with context.wrap_socket(raw, server_hostname=host) as tls:
            chain = _presented_chain(tls)
            return ProbeResult(
                host,
                port,
                address,
                True,
                protocol=tls.version(),
                cipher=tls.cipher(),
                chain=chain,
                trusted=failure is None,
                verify_error=failure,
            )


def _presented_chain(tls: ssl.SSLSocket) -> list[x509.Certificate]:
    """The certificates the server sent, leaf first (Python 3.13 has the public method; the
    3.11 and 3.12 SSL object has it privately); the leaf alone where neither exists."""
    getter = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        raw = [_der_or_pem(c) for c in getter() or []]
    else:
        leaf = tls.getpeercert(binary_form=True)
        raw = [leaf] if leaf else []
    chain = []
    for der in raw:
        try:
            chain.append(load_certificate(der))
        except TesseraError:
            continue  # reported by its absence; the handshake itself succeeded
    return chain


def _der_or_pem(cert: Any) -> bytes:
    """3.13 gives DER bytes; the private 3.11 object gives PEM text by default."""
    if isinstance(cert, bytes):
        return cert
    pem = cert.public_bytes()
    return pem.encode("ascii") if isinstance(pem, str) else bytes(pem)


def hostname_matches(cert: x509.Certificate, host: str) -> bool:
    """RFC 6125: DNS SANs (a wildcard for the left-most label only) or IP SANs."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(
            _dns_match(name.lower(), host) for name in sans.get_values_for_type(x509.DNSName)
        )
    return address in sans.get_values_for_type(x509.IPAddress)


def _dns_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern.rstrip(".") == host


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
