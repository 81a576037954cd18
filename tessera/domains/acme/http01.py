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
  identifier may be redirected to a name, a name to an address;
- an https hop's certificate is not verified (nor is it by Let's Encrypt): the key
  authorization is the proof, and a site asking for a certificate may have no valid one yet.
The chain must be done within FETCH_BUDGET, well inside the validation job's 60 s lease on
the attempt: past it, another process would take the attempt up and validate it again."""

import http.client
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from tessera.core.names import is_ip_address
from tessera.domains.acme.lookup import ValidationConfig, addresses
from tessera.protocols.acme.problems import AcmeProblem

MAX_HTTP_BODY = 8192
MAX_REDIRECTS = 10  # as Let's Encrypt
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FETCH_BUDGET = 30.0  # seconds for the whole chain, checked before each redirect is followed
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


def validate_http01(name: str, key_auth: str, config: ValidationConfig) -> None:
    """Raise the challenge's problem, or return when the chain ends in the key authorization."""
    token = key_auth.split(".")[0]
    challenge_url = f"http://{_bracketed(name)}/.well-known/acme-challenge/{token}"
    hop, answer = _follow(name, _hop(name, challenge_url, 0, config), config)
    if answer.status != 200:
        raise AcmeProblem(
            "incorrectResponse", f"{hop.where(name)}: HTTP {answer.status} for {hop.target}"
        )
    if answer.body.strip().decode("ascii", "replace") != key_auth:
        raise AcmeProblem("incorrectResponse", f"{hop.where(name)}: wrong key authorization")


def _follow(name: str, hop: Hop, config: ValidationConfig) -> tuple[Hop, Answer]:
    """The last answer of the redirect chain that starts at `hop`, and the hop that gave it."""
    deadline = time.monotonic() + FETCH_BUDGET
    fetched: set[tuple[str, str, int, str]] = set()
    while True:
        answer = _fetch(name, hop, config)
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
        raise AcmeProblem(
            "connection", f"{following.where(name)}: not followed, past {FETCH_BUDGET:g} s"
        )
    return following


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


def _fetch(name: str, hop: Hop, config: ValidationConfig) -> Answer:
    """The first answer from one of the host's addresses (an address that cannot be reached
    passes to the next, as a client falls back from one address to another)."""
    try:
        found = addresses("ip" if is_ip_address(hop.host) else "dns", hop.host, config)
    except AcmeProblem as problem:
        raise AcmeProblem(problem.kind, f"{hop.where(name)}: {problem.message}") from problem
    last: AcmeProblem | None = None
    for address in found:
        try:
            return _request(hop, address, config)
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            kind = "tls" if isinstance(exc, ssl.SSLError) else "connection"
            last = AcmeProblem(kind, f"{hop.where(name)}: {address} port {hop.port}: {exc}")
    raise last or AcmeProblem("connection", f"{hop.where(name)}: nothing to connect to")


def _request(hop: Hop, address: str, config: ValidationConfig) -> Answer:
    connection = _connection(hop, address, config)
    try:
        headers = {"Host": hop.host_header, "User-Agent": USER_AGENT, "Accept": "*/*"}
        connection.request("GET", hop.target, headers=headers)
        response = connection.getresponse()
        if response.status in REDIRECT_STATUSES:
            return Answer(response.status, response.getheader("Location"), b"")
        return Answer(response.status, None, response.read(MAX_HTTP_BODY + 1))
    finally:
        connection.close()


def _connection(hop: Hop, address: str, config: ValidationConfig) -> http.client.HTTPConnection:
    if hop.scheme == "http":
        return http.client.HTTPConnection(address, hop.port, timeout=config.timeout)
    return _AddressedHTTPSConnection(address, hop.port, hop.host, config.timeout)


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
