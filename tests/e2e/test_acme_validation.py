"""Challenge validation as a site sees it: http-01 follows redirects the way Let's Encrypt's
validation authority does (RFC 8555 8.3), across hosts, to https and from an IP identifier
to a name, every host resolved through the configured DNS server; redirects it may not
follow end the challenge with a problem naming the hop. A failed attempt is retried
(RFC 8555 8.2): the challenge stays processing with the attempt's error, and is invalid only
after the last attempt."""

import datetime
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.acme_helpers import (
    Acme,
    AcmeEnv,
    acme_name,
    needs_challtestsrv,
    webroot_server,
)
from tests.e2e.helpers import API, data
from tests.support import free_port

pytestmark = needs_challtestsrv

VALIDATED = "acme.challenge.validate"


# --- a web site whose answers the test sets path by path ---------------------------------


@dataclass
class Request:
    path: str
    host: str | None


@dataclass
class Site:
    """What a site answers (path: a redirect's Location, a status without a body, or a body
    served with 200) and what it was asked: each request's path and Host, and over TLS the
    SNI of each handshake."""

    redirects: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append(Request(self.path, self.headers.get("Host")))
                if self.path in site.redirects:
                    self.send_response(302)
                    self.send_header("Location", site.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = site.bodies.get(self.path)
                status = site.statuses.get(self.path, 404 if body is None else 200)
                self.send_response(status)
                payload = (body or "not here").encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


@contextmanager
def serving(site: Site, address: str, port: int, tls_dir: Path | None = None) -> Iterator[Site]:
    """`site` on address:port, over TLS with a self-signed certificate when `tls_dir` is
    given (validation does not verify it)."""
    web = http.server.ThreadingHTTPServer((address, port), site.handler())
    if tls_dir is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(tls_dir))
        context.sni_callback = lambda _socket, sni, _context: site.server_names.append(sni)
        web.socket = context.wrap_socket(web.socket, server_side=True)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        web.shutdown()
        web.server_close()
        thread.join(timeout=10)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the site's name")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- the ACME side ----------------------------------------------------------------------


@dataclass
class Http01:
    order_url: str
    authz_url: str
    url: str
    token: str
    key_auth: str

    @property
    def path(self) -> str:
        return f"/.well-known/acme-challenge/{self.token}"


def http01_challenge(account: Acme, identifier: str) -> Http01:
    created = account.order(identifier)
    assert created.status_code == 201, created.text
    authz_url = created.json()["authorizations"][0]
    challenge = next(
        c for c in account.get(authz_url).json()["challenges"] if c["type"] == "http-01"
    )
    key_auth = f"{challenge['token']}.{account.key.thumbprint()}"
    location = created.headers["location"]
    return Http01(location, authz_url, challenge["url"], challenge["token"], key_auth)


def answer(account: Acme, challenge: Http01) -> None:
    answered = account.post(challenge.url, {})
    assert answered.status_code == 200, answered.text


def poll(
    account: Acme, url: str, done: Callable[[dict[str, Any]], bool], seconds: float = 60
) -> tuple[dict[str, Any], httpx.Response]:
    deadline = time.monotonic() + seconds
    while True:
        response = account.get(url)
        body: dict[str, Any] = response.json()
        if done(body):
            return body, response
        assert time.monotonic() < deadline, f"{url} stayed {body}"
        time.sleep(0.1)


def finished(body: dict[str, Any]) -> bool:
    return body["status"] in ("valid", "invalid")


def validations(env: AcmeEnv, challenge: Http01) -> list[dict[str, Any]]:
    """The audit rows of the challenge's validation attempts, oldest first."""
    challenge_id = challenge.url.rsplit("/", 1)[1]
    with env.api() as api:
        rows = data(api.get(f"{API}/audit/logs", params={"action": VALIDATED, "per_page": 100}))
    mine = [r for r in rows if str(r["resource_id"]) == challenge_id]
    return sorted((r["details_data"] for r in mine), key=lambda d: d["attempt"])


# --- redirects --------------------------------------------------------------------------


def test_http01_follows_redirects_to_other_hosts_and_to_https(
    env: AcmeEnv, account: Acme, tmp_path: Path
) -> None:
    """A relative redirect, one to another host on the http-01 port named explicitly, and one
    to https without a port (so the https validation port): each host is resolved through the
    configured DNS server (the second and third to addresses only it knows), the Host header
    and the SNI carry the names, and the https site's self-signed certificate is accepted."""
    site, other, secure = acme_name("site"), acme_name("site"), acme_name("site")
    env.dns.add_a(other, "127.0.0.2")
    env.dns.add_a(secure, "127.0.0.3")
    challenge = http01_challenge(account, site)
    first, second, third = Site(), Site(), Site()
    first.redirects[challenge.path] = f"/moved/{challenge.token}"
    first.redirects[f"/moved/{challenge.token}"] = (
        f"http://{other}:{env.http01_port}/elsewhere/{challenge.token}?a=b#fragment"
    )
    second.redirects[f"/elsewhere/{challenge.token}?a=b"] = f"https://{secure}/final"
    third.bodies["/final"] = challenge.key_auth
    with (
        serving(first, "127.0.0.1", env.http01_port),
        serving(second, "127.0.0.2", env.http01_port),
        serving(third, "127.0.0.3", env.tlsalpn01_port, tmp_path / "tls"),
    ):
        answer(account, challenge)
        validated, _ = poll(account, challenge.url, finished)
    assert validated["status"] == "valid", validated
    assert "error" not in validated
    assert [(r.path, r.host) for r in first.requests] == [
        (challenge.path, site),
        (f"/moved/{challenge.token}", site),
    ]
    assert [(r.path, r.host) for r in second.requests] == [
        (f"/elsewhere/{challenge.token}?a=b", f"{other}:{env.http01_port}")
    ]
    assert [(r.path, r.host) for r in third.requests] == [("/final", secure)]
    assert third.server_names == [secure]
    order, _ = poll(account, challenge.order_url, lambda b: b["status"] != "pending")
    assert order["status"] == "ready", order


def test_http01_of_an_ip_identifier_follows_a_redirect_to_a_name(
    env: AcmeEnv, account: Acme
) -> None:
    """RFC 8738: the first request goes to the address itself; a redirect from there to a
    name is resolved through the configured DNS server like any other name."""
    target = acme_name("site")
    env.dns.add_a(target, "127.0.0.2")
    challenge = http01_challenge(account, "127.0.0.1")
    address_site, named_site = Site(), Site()
    address_site.redirects[challenge.path] = f"http://{target}/token"
    named_site.bodies["/token"] = challenge.key_auth
    with (
        serving(address_site, "127.0.0.1", env.http01_port),
        serving(named_site, "127.0.0.2", env.http01_port),
    ):
        answer(account, challenge)
        validated, _ = poll(account, challenge.url, finished)
    assert validated["status"] == "valid", validated
    assert [(r.path, r.host) for r in address_site.requests] == [(challenge.path, "127.0.0.1")]
    assert [(r.path, r.host) for r in named_site.requests] == [("/token", target)]


def test_http01_refuses_the_redirects_it_may_not_follow(env: AcmeEnv, account: Acme) -> None:
    """A loop, an eleventh redirect, a scheme other than http(s) and a port other than the
    validation ports end the challenge invalid with a connection problem that names the
    redirect; the URL refused is never fetched."""
    loop, endless, ftp, port = (http01_challenge(account, acme_name("site")) for _ in range(4))
    other_port = free_port()
    site, elsewhere = Site(), Site()
    site.redirects[loop.path] = f"/again/{loop.token}"
    site.redirects[f"/again/{loop.token}"] = loop.path
    site.redirects[endless.path] = f"/hop/1/{endless.token}"
    for hop in range(1, 20):
        site.redirects[f"/hop/{hop}/{endless.token}"] = f"/hop/{hop + 1}/{endless.token}"
    site.redirects[ftp.path] = f"ftp://{acme_name('site')}/{ftp.token}"
    site.redirects[port.path] = f"http://{acme_name('site')}:{other_port}/{port.token}"
    elsewhere.bodies[f"/{port.token}"] = port.key_auth
    with (
        serving(site, "127.0.0.1", env.http01_port),
        serving(elsewhere, "127.0.0.1", other_port),
    ):
        for challenge in (loop, endless, ftp, port):
            answer(account, challenge)
        failed = {
            label: poll(account, challenge.url, finished)[0]
            for label, challenge in (
                ("loop", loop),
                ("endless", endless),
                ("ftp", ftp),
                ("port", port),
            )
        }
    for label, body in failed.items():
        assert body["status"] == "invalid", (label, body)
        assert body["error"]["type"] == "urn:ietf:params:acme:error:connection", (label, body)
    assert "redirect 2 (" in failed["loop"]["error"]["detail"]
    assert "redirect loop" in failed["loop"]["error"]["detail"]
    assert "more than 10 redirects" in failed["endless"]["error"]["detail"]
    assert f"/hop/10/{endless.token}" in site.paths()
    assert f"/hop/11/{endless.token}" not in site.paths()
    assert "redirect 1 (ftp://" in failed["ftp"]["error"]["detail"]
    assert "only http and https" in failed["ftp"]["error"]["detail"]
    assert f":{other_port}/" in failed["port"]["error"]["detail"]
    assert (
        f"only ports {env.http01_port} and {env.tlsalpn01_port}"
        in (failed["port"]["error"]["detail"])
    )
    assert elsewhere.requests == []


def test_http01_refuses_a_redirect_to_an_ip_address_other_than_the_identifier(
    env: AcmeEnv, account: Acme
) -> None:
    """An IP literal goes through no configured DNS: a redirect to one (here an address
    whose site would answer with the key authorization) is refused and nothing is fetched
    there; an IP identifier's redirect to its own address is followed."""
    by_name, by_address = (
        http01_challenge(account, acme_name("site")),
        http01_challenge(account, "127.0.0.1"),
    )
    site, elsewhere = Site(), Site()
    site.redirects[by_name.path] = f"http://127.0.0.2/{by_name.token}?a=b"
    elsewhere.bodies[f"/{by_name.token}?a=b"] = by_name.key_auth
    site.redirects[by_address.path] = f"http://127.0.0.1:{env.http01_port}/{by_address.token}"
    site.bodies[f"/{by_address.token}"] = by_address.key_auth
    with (
        serving(site, "127.0.0.1", env.http01_port),
        serving(elsewhere, "127.0.0.2", env.http01_port),
    ):
        answer(account, by_name)
        answer(account, by_address)
        refused, _ = poll(account, by_name.url, finished)
        followed, _ = poll(account, by_address.url, finished)
    assert refused["status"] == "invalid", refused
    assert refused["error"]["type"] == "urn:ietf:params:acme:error:connection"
    assert "redirect 1 (http://127.0.0.2/" in refused["error"]["detail"]
    assert "an IP address other than the identifier" in refused["error"]["detail"]
    assert elsewhere.requests == []
    assert followed["status"] == "valid", followed


def test_http01_does_not_tell_what_a_redirect_target_answered(env: AcmeEnv, account: Acme) -> None:
    """A redirect's target is not the account's own host: its status (a 403) or a refused
    connection is not in the challenge's error, only that the key authorization is not
    there (incorrectResponse). The first request's own status is still named."""
    site, closed = acme_name("site"), acme_name("site")
    forbidden, refused, direct = (http01_challenge(account, site) for _ in range(3))
    host = Site()
    host.redirects[forbidden.path] = f"/admin/{forbidden.token}"
    host.statuses[f"/admin/{forbidden.token}"] = 403
    host.redirects[refused.path] = f"https://{closed}/{refused.token}"  # nothing listens
    host.statuses[direct.path] = 403
    with serving(host, "127.0.0.1", env.http01_port):
        for challenge in (forbidden, refused, direct):
            answer(account, challenge)
        failed = [poll(account, c.url, finished)[0] for c in (forbidden, refused, direct)]
    for body in failed:
        assert body["status"] == "invalid", body
        assert body["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse", body
    hidden = (
        f"redirect 1 (http://{site}/admin/{forbidden.token})",
        f"redirect 1 (https://{closed}/{refused.token})",
    )
    for where, body in zip(hidden, failed[:2], strict=True):
        detail = body["error"]["detail"]
        assert detail == (
            f"http-01 at {site}, {where}: no key authorization there (attempt 3, the last)"
        ), detail
    assert "HTTP 403" in failed[2]["error"]["detail"]
    assert host.paths().count(f"/admin/{forbidden.token}") == 3  # fetched on each attempt


# --- retries ----------------------------------------------------------------------------


def test_a_challenge_answered_before_its_site_is_up_passes_on_a_later_attempt(
    env: AcmeEnv, account: Acme, tmp_path: Path
) -> None:
    """RFC 8555 8.2: the first attempt finds nothing listening; the challenge stays
    processing (with Retry-After) and shows that attempt's error; the site comes up and a
    later attempt validates it, the error gone."""
    challenge = http01_challenge(account, acme_name("site"))
    answer(account, challenge)
    waiting, response = poll(account, challenge.url, lambda b: "error" in b or finished(b))
    assert waiting["status"] == "processing", waiting
    assert response.headers["retry-after"]
    assert waiting["error"]["type"] == "urn:ietf:params:acme:error:connection"
    assert "(attempt 1 of 3; another in 1 s)" in waiting["error"]["detail"]
    authz = account.get(challenge.authz_url)
    assert authz.json()["status"] == "pending" and authz.headers["retry-after"]
    with webroot_server(env.http01_port, tmp_path / "www") as files:
        (files / challenge.token).write_text(challenge.key_auth)
        validated, _ = poll(account, challenge.url, finished)
    assert validated["status"] == "valid", validated
    assert "error" not in validated
    order, _ = poll(account, challenge.order_url, lambda b: b["status"] != "pending")
    assert order["status"] == "ready", order
    outcomes = [(a["attempt"], a["valid"], a.get("retry")) for a in validations(env, challenge)]
    assert outcomes in (
        [(1, False, True), (2, True, None)],
        [(1, False, True), (2, False, True), (3, True, None)],  # the site came up late
    ), outcomes


def test_a_challenge_whose_site_never_comes_up_is_invalid_after_the_last_attempt(
    env: AcmeEnv, account: Acme
) -> None:
    challenge = http01_challenge(account, acme_name("site"))
    answer(account, challenge)
    failed, response = poll(account, challenge.url, finished)
    assert failed["status"] == "invalid", failed
    assert "retry-after" not in response.headers
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:connection"
    assert failed["error"]["detail"].endswith("(attempt 3, the last)"), failed
    # RFC 8555 8.2: the server "MUST add an entry to the "error" field in the challenge after
    # each failed validation query": one subproblem per attempt, oldest first
    entries = failed["error"]["subproblems"]
    assert [e["type"] for e in entries] == ["urn:ietf:params:acme:error:connection"] * 3
    assert [e["detail"].rsplit(" (", 1)[1] for e in entries] == [
        "attempt 1 of 3; another in 1 s)",
        "attempt 2 of 3; another in 1 s)",
        "attempt 3, the last)",
    ], entries
    assert [(a["attempt"], a["valid"], a.get("retry")) for a in validations(env, challenge)] == [
        (1, False, True),
        (2, False, True),
        (3, False, None),
    ]
    assert account.get(challenge.authz_url).json()["status"] == "invalid"
    order = account.get(challenge.order_url).json()
    assert order["status"] == "invalid"
    assert order["error"]["subproblems"][0]["detail"] == failed["error"]["detail"]
    assert "subproblems" not in order["error"]["subproblems"][0]  # the attempts: above


# --- CAA (RFC 8659) ----------------------------------------------------------------------

CAA_PROBLEM = "urn:ietf:params:acme:error:caa"


def caa_outcome(env: AcmeEnv, account: Acme, issuer: str | None) -> dict[str, Any]:
    """An order for a new name whose CAA record (`issue`, when given) names `issuer`, after
    its dns-01 challenge: ready, or invalid with the problem."""
    host = acme_name("site")
    if issuer is not None:
        env.dns.add_caa(host, issuer)
    return account.ready_order(host)


def test_caa_is_checked_against_the_identities_the_directory_advertises(
    env: AcmeEnv, account: Acme
) -> None:
    """One list for both (validation.caa_identities): a server reached by address (the test
    server, at 127.0.0.1) advertises no caaIdentities, and its CAA check then knows no
    identity of its own, not its address (an issuer-domain-name is a domain name, RFC 8659
    4.2): any `issue` record set refuses, none at all allows. Once the settings name an
    identity, the directory lists it and a record naming it authorizes."""
    env.settings(caa_check_ca_ids=[env.ca["id"]], caa_identities=[])
    try:
        assert "caaIdentities" not in account.http.get(env.directory).json()["meta"]
        assert caa_outcome(env, account, None)["status"] == "ready"
        for issuer in ("127.0.0.1", "ca.example.net"):
            refused = caa_outcome(env, account, issuer)
            assert refused["status"] == "invalid", refused
            assert refused["error"]["type"] == CAA_PROBLEM, refused
        env.settings(caa_identities=["pki.example.org"])
        assert account.http.get(env.directory).json()["meta"]["caaIdentities"] == [
            "pki.example.org"
        ]
        assert caa_outcome(env, account, "pki.example.org")["status"] == "ready"
        assert caa_outcome(env, account, "127.0.0.1")["error"]["type"] == CAA_PROBLEM
    finally:
        env.settings(caa_check_ca_ids=[], caa_identities=[])
