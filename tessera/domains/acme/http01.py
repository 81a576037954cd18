"""http-01 (RFC 8555 8.3): the key authorization fetched from the identifier's web server.

"The server SHOULD follow redirects when dereferencing the URL": they are followed as Let's
Encrypt's validation authority follows them, so that a site that redirects everything (to
https, to another host) validates here as it does there:
- at most MAX_REDIRECTS redirects (301, 302, 303, 307 or 308 with a Location); a URL fetched
  before in the chain is a loop;
- only http and https URLs, and only to the two validation ports, `TESSERA_ACME_HTTP01_PORT`
  and `TESSERA_ACME_TLSALPN01_PORT` (80 and 443 unless configured): a URL without a port goes
  to its scheme's one, and an explicit port must be one of the two, as Let's Encrypt allows
  only 80 and 443;
- every hop's host is resolved through the configured DNS servers (`lookup.addresses`) and
  the request goes to the resolved address, the name in Host and, for https, as SNI; an IP
  identifier may be redirected to a name;
- redirects must not widen what an account can make the server fetch (server-side request
  forgery): a redirect to an IP literal is refused unless it is the challenge's own IP
  identifier (a literal goes through no DNS the operator configured), and a redirect never
  connects to a loopback, link-local, unspecified or multicast address unless the first
  request connected to an address of that same kind (`may_connect`): a private CA's
  identifiers legitimately resolve to private addresses, but one on a routable or private
  address cannot be redirected to 127.0.0.1 or 169.254.169.254;
- what a redirect's target answered (its status, a refused or timed-out connection, a TLS
  error) is not in the challenge's error, which the account reads: only "no key
  authorization there" (`incorrectResponse`), besides the refusals above and below. The
  first request's errors name what went wrong: its host is the account's own;
- an https hop's certificate is not verified (nor is it by Let's Encrypt): the key
  authorization is the proof, and a site asking for a certificate may have no valid one yet.
The chain must be done within FETCH_BUDGET, well inside the validation job's 60 s lease on
the attempt: past it, another process would take the attempt up and validate it again (and
the job drops this attempt's outcome). Each connection's timeout is at most the budget's time
left, each DNS lookup ends by the budget's end, a request still running at the end is cut,
and at most ADDRESSES_PER_HOP of a host's addresses are tried."""

import http.client
import ipaddress
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from tessera.core.names import is_ip_address
from tessera.domains.acme.lookup import ValidationConfig, addresses, cut_at
from tessera.protocols.acme.problems import AcmeProblem

MAX_HTTP_BODY = 8192
MAX_REDIRECTS = 10  # as Let's Encrypt
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FETCH_BUDGET = 30.0  # seconds for the whole chain: before each hop, and each connection's timeout
ADDRESSES_PER_HOP = 2  # addresses of a host tried before the hop fails
# Kinds of address a redirect reaches only when the first request connected to one of the kind.
GUARDED_KINDS = ("loopback", "link-local", "unspecified", "multicast")
USER_AGENT = "tessera-acme"


@dataclass(frozen=True)
class Hop:
    """One request of the chain: number 0 is the challenge URL, n the n-th redirect."""

    number: int
    url: str
    scheme: str
    host: str  # a name, or an IP address without brackets
    port: int
    host_header: str
    target: str  # path and query

    @property
    def resource(self) -> tuple[str, str, int, str]:
        """What a loop is detected on: the same resource however its URL is spelled."""
        return (self.scheme, self.host, self.port, self.target)

    def where(self, name: str) -> str:
        if self.number == 0:
            return f"http-01 at {name}"
        return f"http-01 at {name}, redirect {self.number} ({self.url})"


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    body: bytes
    address_kind: str | None  # of the address that answered (`address_kind`)


def address_kind(address: str) -> str | None:
    """The guarded kind of an address (GUARDED_KINDS), None for any other (routable or
    private). An IPv4-mapped IPv6 address is of its IPv4 address's kind."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip.packed[0] == 0):
        return "unspecified"  # 0.0.0.0/8 too: connecting there reaches this host
    if ip.is_multicast:
        return "multicast"
    return None


def may_connect(number: int, address: str, first_kind: str | None) -> bool:
    """Whether hop `number` may connect to `address`, the first request (hop 0) having
    connected to an address of `first_kind`: the first request anywhere, a redirect to a
    guarded kind of address only when the first request was to one of the same kind."""
    kind = address_kind(address)
    return number == 0 or kind is None or kind == first_kind


def validate_http01(name: str, key_auth: str, config: ValidationConfig) -> None:
    """Raise the challenge's problem, or return when the chain ends in the key authorization."""
    token = key_auth.split(".")[0]
    challenge_url = f"http://{_bracketed(name)}/.well-known/acme-challenge/{token}"
    hop, answer = _follow(name, _hop(name, challenge_url, 0, config), config)
    right = answer.status == 200 and answer.body.strip().decode("ascii", "replace") == key_auth
    if right:
        return
    if hop.number > 0:
        raise _not_there(name, hop)
    if answer.status != 200:
        raise AcmeProblem(
            "incorrectResponse", f"{hop.where(name)}: HTTP {answer.status} for {hop.target}"
        )
    raise AcmeProblem("incorrectResponse", f"{hop.where(name)}: wrong key authorization")


def _not_there(name: str, hop: Hop) -> AcmeProblem:
    """A redirect's failure, whatever its target answered (module docstring)."""
    return AcmeProblem("incorrectResponse", f"{hop.where(name)}: no key authorization there")


def _follow(name: str, hop: Hop, config: ValidationConfig) -> tuple[Hop, Answer]:
    """The last answer of the redirect chain that starts at `hop`, and the hop that gave it."""
    deadline = time.monotonic() + FETCH_BUDGET
    fetched: set[tuple[str, str, int, str]] = set()
    first_kind: str | None = None
    while True:
        answer = _fetch(name, hop, config, first_kind, deadline)
        if hop.number == 0:
            first_kind = answer.address_kind
        fetched.add(hop.resource)
        if answer.status not in REDIRECT_STATUSES or not answer.location:
            return hop, answer
        hop = _redirect(name, hop, answer.location, fetched, deadline, config)


def _redirect(
    name: str,
    hop: Hop,
    location: str,
    fetched: set[tuple[str, str, int, str]],
    deadline: float,
    config: ValidationConfig,
) -> Hop:
    number, url = hop.number + 1, urljoin(hop.url, location.strip())
    if number > MAX_REDIRECTS:
        raise AcmeProblem(
            "connection", f"http-01 at {name}: more than {MAX_REDIRECTS} redirects (then {url})"
        )
    following = _hop(name, url, number, config)
    if following.resource in fetched:
        raise AcmeProblem(
            "connection", f"{following.where(name)}: a redirect loop (fetched before)"
        )
    if time.monotonic() > deadline:
        raise _past_budget(name, following)
    if is_ip_address(following.host) and not _same_address(following.host, name):
        raise AcmeProblem(
            "connection",
            f"{following.where(name)}: a redirect to an IP address other than the identifier",
        )
    return following


class _BudgetSpent(Exception):
    """The chain's time ran out in the middle of a request."""


def _past_budget(name: str, hop: Hop) -> AcmeProblem:
    return AcmeProblem("connection", f"{hop.where(name)}: not followed, past {FETCH_BUDGET:g} s")


def _same_address(host: str, name: str) -> bool:
    return is_ip_address(name) and ipaddress.ip_address(host) == ipaddress.ip_address(name)


def _hop(name: str, url: str, number: int, config: ValidationConfig) -> Hop:
    """The request for `url`, once it is one validation may follow."""
    parts = urlsplit(url)
    where = f"http-01 at {name}, redirect {number} ({url})"
    if parts.scheme not in ("http", "https"):
        raise AcmeProblem("connection", f"{where}: only http and https URLs are followed")
    try:
        explicit = parts.port
    except ValueError as exc:
        raise AcmeProblem("connection", f"{where}: not a valid port") from exc
    host = parts.hostname
    if not host or not host.isascii():
        raise AcmeProblem("connection", f"{where}: no host, or not in ASCII (A-labels)")
    allowed = (config.http01_port, config.tlsalpn01_port)
    if explicit is not None and explicit not in allowed:
        ports = f"{allowed[0]} and {allowed[1]}"
        raise AcmeProblem("connection", f"{where}: only ports {ports} are followed")
    port = explicit or (config.http01_port if parts.scheme == "http" else config.tlsalpn01_port)
    host_header = _bracketed(host) + (f":{explicit}" if explicit else "")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    plain_url = parts._replace(fragment="").geturl()
    return Hop(number, plain_url, parts.scheme, host, port, host_header, target)


def _fetch(
    name: str, hop: Hop, config: ValidationConfig, first_kind: str | None, deadline: float
) -> Answer:
    """The first answer from one of the host's first ADDRESSES_PER_HOP addresses it may
    connect to (`may_connect`; an address that cannot be reached passes to the next, as a
    client falls back from one address to another). A redirect's failure says nothing of
    what its target answered (`_not_there`)."""
    try:
        kind = "ip" if is_ip_address(hop.host) else "dns"
        found = addresses(kind, hop.host, config, deadline)
    except AcmeProblem as problem:
        if time.monotonic() >= deadline:
            raise _past_budget(name, hop) from problem
        if hop.number > 0:
            raise _not_there(name, hop) from problem
        raise AcmeProblem(problem.kind, f"{hop.where(name)}: {problem.message}") from problem
    allowed = [a for a in found if may_connect(hop.number, a, first_kind)]
    if not allowed:
        kinds = sorted({str(address_kind(a)) for a in found})
        raise AcmeProblem(
            "connection",
            f"{hop.where(name)}: {hop.host} has only {' and '.join(kinds)} addresses, where a "
            "redirect may not lead unless the challenge's own host is on one",
        )
    last: AcmeProblem | None = None
    for address in allowed[:ADDRESSES_PER_HOP]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _past_budget(name, hop)
        try:
            return _request(hop, address, min(config.timeout, left), deadline)
        except _BudgetSpent as spent:
            raise _past_budget(name, hop) from spent
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            kind = "tls" if isinstance(exc, ssl.SSLError) else "connection"
            last = AcmeProblem(kind, f"{hop.where(name)}: {address} port {hop.port}: {exc}")
    if hop.number > 0:
        raise _not_there(name, hop)
    raise last or AcmeProblem("connection", f"{hop.where(name)}: nothing to connect to")


def _request(hop: Hop, address: str, timeout: float, deadline: float) -> Answer:
    """One request, cut at `deadline` (`cut_at`) once connected: connecting (and the TLS
    handshake, which CPython times as a whole) is bounded by `timeout`, the time left."""
    connection = _connection(hop, address, timeout)
    try:
        connection.connect()
        with cut_at(deadline, connection.sock) as cut:
            try:
                answer = _exchange(connection, hop, address_kind(address))
            except (OSError, http.client.HTTPException) as exc:
                if cut.is_set():
                    raise _BudgetSpent() from exc
                raise
        if cut.is_set():
            raise _BudgetSpent()  # what was read may be cut short
        return answer
    finally:
        connection.close()


def _exchange(connection: http.client.HTTPConnection, hop: Hop, kind: str | None) -> Answer:
    headers = {"Host": hop.host_header, "User-Agent": USER_AGENT, "Accept": "*/*"}
    connection.request("GET", hop.target, headers=headers)
    response = connection.getresponse()
    if response.status in REDIRECT_STATUSES:
        return Answer(response.status, response.getheader("Location"), b"", kind)
    return Answer(response.status, None, response.read(MAX_HTTP_BODY + 1), kind)


def _connection(hop: Hop, address: str, timeout: float) -> http.client.HTTPConnection:
    if hop.scheme == "http":
        return http.client.HTTPConnection(address, hop.port, timeout=timeout)
    return _AddressedHTTPSConnection(address, hop.port, hop.host, timeout)


class _AddressedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address resolved beforehand with the host's name as SNI (the standard
    class would send the address), its certificate not verified (module docstring). An IP
    address as the name sends no SNI (RFC 6066 3 allows only host names there)."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name, self._tls = server_name, context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP to the address
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
