"""Shared pieces of the ACME end-to-end tests: a Tessera with ACME configured, a DNS server
for validation (pebble-challtestsrv), and ports for the clients' challenge listeners."""

import base64
import hashlib
import http.server
import ipaddress
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import josepy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tessera.core.names import is_ip_address
from tests.e2e.accounts_helpers import db
from tests.e2e.helpers import API, create_root, data, unique
from tests.support import Server, admin_api_key, free_port, start_server, stop_server

CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


@dataclass
class ChallTestSrv:
    """pebble-challtestsrv as the DNS server every validation goes through: it answers
    every A query with 127.0.0.1 and serves the TXT records we set."""

    dns_port: int
    management_port: int
    process: subprocess.Popen[bytes]

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def set_txt(self, host: str, value: str) -> None:
        body = {"host": host.rstrip(".") + ".", "value": value}
        httpx.post(f"{self.management}/set-txt", json=body, timeout=10).raise_for_status()

    def clear_txt(self, host: str) -> None:
        body = {"host": host.rstrip(".") + "."}
        httpx.post(f"{self.management}/clear-txt", json=body, timeout=10).raise_for_status()

    def add_a(self, host: str, *addresses: str) -> None:
        """The host's A records (instead of the default 127.0.0.1)."""
        body = {"host": host.rstrip(".") + ".", "addresses": list(addresses)}
        httpx.post(f"{self.management}/add-a", json=body, timeout=10).raise_for_status()

    def add_caa(self, host: str, value: str, tag: str = "issue") -> None:
        policy = {"tag": tag, "value": value}
        body = {"host": host.rstrip(".") + ".", "policies": [policy]}
        httpx.post(f"{self.management}/add-caa", json=body, timeout=10).raise_for_status()


@contextmanager
def challtestsrv(log_dir: Path) -> Iterator[ChallTestSrv]:
    dns_port, management_port = free_port(), free_port()
    log = open(log_dir / "challtestsrv.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            CHALLTESTSRV,
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-management",
            f"127.0.0.1:{management_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = ChallTestSrv(dns_port, management_port, process)
    try:
        _wait_http(server.management + "/", process)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError("pebble-challtestsrv exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("pebble-challtestsrv did not start")


@dataclass
class AcmeEnv:
    server: Server
    dns: ChallTestSrv
    http01_port: int
    tlsalpn01_port: int
    ca: dict[str, Any]
    work: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> str:
        return f"{self.server.url}/acme/directory"

    def api(self) -> httpx.Client:
        return self.server.client()

    def settings(self, **changes: Any) -> dict[str, Any]:
        with self.api() as api:
            result: dict[str, Any] = data(api.patch(f"{API}/acme/settings", json=changes))
            return result


@contextmanager
def acme_env(
    database_url: str | None, work: Path, extra_env: dict[str, str] | None = None
) -> Iterator[AcmeEnv]:
    with challtestsrv(work) as dns:
        http01, tlsalpn01 = free_port(), free_port()
        env = {
            "TESSERA_ACME_DNS_SERVERS": f"127.0.0.1:{dns.dns_port}",
            "TESSERA_ACME_HTTP01_PORT": str(http01),
            "TESSERA_ACME_TLSALPN01_PORT": str(tlsalpn01),
            # a failed challenge is retried after 1 s, not 5: tests wait for fewer seconds
            "TESSERA_ACME_RETRY_SECONDS": "1",
            **(extra_env or {}),
        }
        server = start_server(work / "data", database_url, env=env)
        try:
            server.api_key = admin_api_key(server)
            with server.client() as api:
                ca = create_root(api, unique("ACME Root"))
                data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": ca["id"]}))
            yield AcmeEnv(server, dns, http01, tlsalpn01, ca, work)
        finally:
            stop_server(server)


class _ChallengeFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def webroot_server(port: int, webroot: Path) -> Iterator[Path]:
    """A plain web server for `webroot` on 127.0.0.1:port, as a site's own web server serves
    the http-01 files a client writes; yields the .well-known/acme-challenge directory."""
    challenges = webroot / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True, exist_ok=True)
    handler = partial(_ChallengeFiles, directory=str(webroot))
    web = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        yield challenges
    finally:
        web.shutdown()
        web.server_close()
        thread.join(timeout=10)


def dns_names(leaf: x509.Certificate) -> list[str]:
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(sans.get_values_for_type(x509.DNSName))


def verified_chain(
    env: AcmeEnv, pem: bytes, work: Path, ca_id: int | None = None
) -> list[x509.Certificate]:
    """The PEM chain a client saved (leaf first), once `openssl verify` has accepted the leaf
    for TLS servers against the ACME CA (or the root CA `ca_id`), the other certificates
    given as untrusted."""
    chain = x509.load_pem_x509_certificates(pem)
    work.mkdir(parents=True, exist_ok=True)
    with env.api() as api:
        root = data(api.get(f"{API}/cas/{ca_id or env.ca['id']}"))
    (work / "root.pem").write_text(root["pem"])
    (work / "leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (work / "untrusted.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:])
    )
    args = ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(work / "root.pem")]
    if len(chain) > 1:
        args += ["-untrusted", str(work / "untrusted.pem")]
    result = subprocess.run(
        [*args, str(work / "leaf.pem")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK"), result.stdout
    return chain


def private_mounts(binds: dict[str, Path]) -> list[str]:
    """A command prefix that runs the command in a mount namespace of its own, with each
    directory bind-mounted over a system path (the key) for that command only: how a client
    that reads a fixed path (the system CA store, /run) is given the test's files without
    touching the host's. As root a plain mount namespace; otherwise a user namespace too."""
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    mounts = [f'mount --bind "${n}" {target}' for n, target in enumerate(binds, start=1)]
    script = " && ".join([*mounts, f"shift {len(binds)}", 'exec "$@"'])
    return [*unshare, "sh", "-c", script, "sh", *(str(source) for source in binds.values())]


def problem(response: httpx.Response, kind: str, status: int) -> dict[str, Any]:
    """An RFC 7807 problem document of the given ACME type, with the ACME headers."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers.get("replay-nonce")
    body: dict[str, Any] = json.loads(response.text)
    assert body["type"] == f"urn:ietf:params:acme:error:{kind}", body
    return body


# --- a raw ACME client: every header and byte under the test's control -------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """An account (or certificate) key that signs JWS with one of the ACME algorithms."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES384":
            self.private = ec.generate_private_key(ec.SECP384R1())
        elif alg == "RS256":
            self.private = rsa.generate_private_key(65537, 2048)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)

    @property
    def jwk(self) -> dict[str, Any]:
        if self.alg == "EdDSA":
            raw = self.private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        cls = josepy.JWKEC if self.alg.startswith("ES") else josepy.JWKRSA
        public: dict[str, Any] = cls(key=self.private.public_key()).to_json()
        return public

    def thumbprint(self) -> str:
        members = {
            "RSA": ("e", "kty", "n"),
            "EC": ("crv", "kty", "x", "y"),
            "OKP": ("crv", "kty", "x"),
        }
        jwk = self.jwk
        canonical = json.dumps(
            {m: jwk[m] for m in members[jwk["kty"]]}, separators=(",", ":"), sort_keys=True
        )
        return b64(hashlib.sha256(canonical.encode()).digest())

    def sign(self, message: bytes) -> bytes:
        if self.alg == "EdDSA":
            signature: bytes = self.private.sign(message)
            return signature
        algorithm = {"ES256": josepy.ES256, "ES384": josepy.jwa.ES384, "RS256": josepy.RS256}[
            self.alg
        ]
        signed: bytes = algorithm.sign(self.private, message)
        return signed


class Acme:
    """Sends signed requests; each call may override any part of the JWS."""

    def __init__(self, env: AcmeEnv) -> None:
        self.env = env
        self.http = httpx.Client(verify=env.server.ssl_context(), timeout=60)
        self.dir: dict[str, Any] = self.http.get(env.directory).json()
        self.key = Key()
        self.kid: str | None = None

    def close(self) -> None:
        self.http.close()

    def url(self, path: str) -> str:
        return f"{self.env.server.url}/acme/{path}"

    def nonce(self) -> str:
        return self.http.head(self.dir["newNonce"]).headers["replay-nonce"]

    def jws(
        self,
        url: str,
        payload: Any,
        key: Key | None = None,
        use_jwk: bool | None = None,
        nonce: str | None = None,
        header: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        key = key or self.key
        protected: dict[str, Any] = {"alg": key.alg, "url": url, "nonce": nonce or self.nonce()}
        if use_jwk or (use_jwk is None and self.kid is None):
            protected["jwk"] = key.jwk
        else:
            protected["kid"] = self.kid
        protected.update(header or {})
        protected = {k: v for k, v in protected.items() if v is not None}
        body = b"" if payload is None else json.dumps(payload).encode()
        p64, b64body = b64(json.dumps(protected).encode()), b64(body)
        signature = key.sign(f"{p64}.{b64body}".encode())
        return {"protected": p64, "payload": b64body, "signature": b64(signature)}

    def post(self, url: str, payload: Any, **kwargs: Any) -> httpx.Response:
        body = self.jws(url, payload, **kwargs)
        return self.raw(url, json.dumps(body).encode())

    def raw(
        self, url: str, body: bytes, content_type: str = "application/jose+json"
    ) -> httpx.Response:
        return self.http.post(url, content=body, headers={"Content-Type": content_type})

    def register(self, **payload: Any) -> httpx.Response:
        response = self.post(
            self.dir["newAccount"], {"termsOfServiceAgreed": True, **payload}, use_jwk=True
        )
        if response.status_code in (200, 201):
            self.kid = response.headers["location"]
        return response

    def order(self, *names: str, **extra: Any) -> httpx.Response:
        identifiers = [{"type": "ip" if is_ip_address(n) else "dns", "value": n} for n in names]
        return self.post(self.dir["newOrder"], {"identifiers": identifiers, **extra})

    def get(self, url: str) -> httpx.Response:
        return self.post(url, None)

    def ready_order(self, *names: str, **extra: Any) -> dict[str, Any]:
        """An order whose authorizations are proven by dns-01 through challtestsrv."""
        created = self.order(*names, **extra)
        assert created.status_code == 201, created.text
        order = created.json()
        order["url"] = created.headers["location"]
        for authz_url in order["authorizations"]:
            authz = self.get(authz_url).json()
            challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
            key_auth = f"{challenge['token']}.{self.key.thumbprint()}"
            value = b64(hashlib.sha256(key_auth.encode()).digest())
            self.env.dns.set_txt(f"_acme-challenge.{authz['identifier']['value']}", value)
            answered = self.post(challenge["url"], {})
            assert answered.status_code == 200, answered.text
        return self.wait(order["url"], ("ready", "invalid"))

    def wait(self, url: str, statuses: tuple[str, ...], rounds: int = 120) -> dict[str, Any]:
        for _ in range(rounds):
            body: dict[str, Any] = self.get(url).json()
            if body["status"] in statuses:
                body["url"] = url
                return body
            time.sleep(0.25)
        raise AssertionError(f"{url} never reached {statuses}: {body}")


# The ACME modules' mark: every validation goes through pebble-challtestsrv's DNS.
needs_challtestsrv = pytest.mark.skipif(
    not shutil.which("pebble-challtestsrv"), reason="pebble-challtestsrv (Debian pebble) needed"
)


def acme_name(label: str = "host") -> str:
    """A fresh DNS identifier under the test zone that pebble-challtestsrv answers."""
    return f"{unique(label)}.acme.test"


@contextmanager
def registered(env: AcmeEnv, **account: Any) -> Iterator[Acme]:
    """A client with a new account (`account`: more of the new-account payload), closed
    afterwards."""
    client = Acme(env)
    try:
        assert client.register(**account).status_code == 201
        yield client
    finally:
        client.close()


def csr_for(*names: str, key: Any = None, cn: str | None = None) -> tuple[str, Any]:
    """A CSR (base64url DER) for the names, with a fresh P-256 key unless one is given."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    general: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(n)) if is_ip_address(n) else x509.DNSName(n)
        for n in names
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return b64(csr.public_bytes(serialization.Encoding.DER)), key


# --- the server's storage failing under it ----------------------------------------------


@contextmanager
def table_away(env: AcmeEnv, table: str) -> Iterator[None]:
    """The server's table renamed for the duration: its statements on it fail as a broken
    database would make them fail, without anything in the product built for the test."""
    db(env.server, f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        db(env.server, f"ALTER TABLE {table}_away RENAME TO {table}")


@contextmanager
def nonce_store_away(env: AcmeEnv) -> Iterator[None]:
    """Where the server keeps its nonces (SQLite: a file of its own; PostgreSQL: a table),
    out of its reach for the duration."""
    if env.server.database_url is not None:
        with table_away(env, "acme_nonces"):
            yield
        return
    path = env.server.data_dir / "tessera.db.acme-nonces"
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("ALTER TABLE nonces RENAME TO nonces_away")
        try:
            yield
        finally:
            conn.execute("ALTER TABLE nonces_away RENAME TO nonces")


@contextmanager
def nonces_refused(env: AcmeEnv) -> Iterator[None]:
    """The nonce store refusing new nonces (every INSERT fails, as on a full disk) while
    those it holds can still be spent: a trigger where the server keeps its nonces."""
    if env.server.database_url is not None:
        refuse = "BEGIN RAISE EXCEPTION 'nonce store refuses new nonces'; END"
        db(
            env.server,
            f"CREATE FUNCTION refuse_nonces() RETURNS trigger LANGUAGE plpgsql AS $$ {refuse} $$",
        )
        db(
            env.server,
            "CREATE TRIGGER refuse_nonces BEFORE INSERT ON acme_nonces"
            " FOR EACH STATEMENT EXECUTE FUNCTION refuse_nonces()",
        )
        try:
            yield
        finally:
            db(env.server, "DROP TRIGGER refuse_nonces ON acme_nonces")
            db(env.server, "DROP FUNCTION refuse_nonces()")
        return
    path = env.server.data_dir / "tessera.db.acme-nonces"
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_nonces BEFORE INSERT ON nonces"
            " BEGIN SELECT RAISE(ABORT, 'nonce store refuses new nonces'); END"
        )
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER refuse_nonces")


def drain_nonces(env: AcmeEnv) -> None:
    """new-nonce asked until the server's batch of stored nonces is spent and it must store
    a new one (which a refusing store makes it fail to do)."""
    with httpx.Client(verify=env.server.ssl_context(), timeout=60) as http:
        for _ in range(100):
            if not http.head(f"{env.server.url}/acme/new-nonce").headers.get("replay-nonce"):
                return
    raise AssertionError("new-nonce never ran out of stored nonces")
