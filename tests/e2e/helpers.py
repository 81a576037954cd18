"""Shared steps of the native-API end-to-end tests: API calls that must succeed, and
certificate authorities made by openssl alone (so they are truly foreign to the server)."""

import secrets
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.tools import openssl

if TYPE_CHECKING:
    from tests.support import Server

API = "/api/v2"

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:leaf.foreign.test
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def data(response: httpx.Response, status: int = 200) -> Any:
    """The `data` member of a native-API success envelope, after checking the status."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    assert "data" in body and "error" not in body, body
    return body["data"]


def error(response: httpx.Response, status: int) -> str:
    """The message of a native-API error envelope, exactly {"error": true, "code", "message"},
    with no traceback leaking into it."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert set(body) == {"error", "code", "message"}, body
    assert body["error"] is True and body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    return str(body["message"])


def released_together(
    clients: list[httpx.Client], send: Callable[[httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    """`send` on every client, each from its own thread and held by a barrier until all
    are ready (connect the clients first, so that it releases requests, not handshakes);
    the clients are closed afterwards."""
    barrier = threading.Barrier(len(clients))

    def fire(client: httpx.Client) -> httpx.Response:
        barrier.wait()
        return send(client)

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(fire, clients))
    finally:
        for client in clients:
            client.close()


def create_root(
    api: httpx.Client, name: str, algorithm: str = "EC", size: int | None = 256, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "common_name": name,
        "organization": "Tessera Tests",
        "ca_type": "root",
        "key_algorithm": algorithm,
        "validity_days": 3650,
        **extra,
    }
    if size:
        body["key_size"] = size
    created: dict[str, Any] = data(api.post(f"{API}/cas", json=body), 201)
    return created


def _days_within(api: httpx.Client, parent_id: int, days: int) -> int:
    """`days`, or fewer when the parent ends sooner: a child may not outlive its issuer (a
    422), and one asked for as many days as its parent, a second later, would by a second."""
    until = datetime.fromisoformat(data(api.get(f"{API}/cas/{parent_id}"))["valid_until"])
    left = (until - datetime.now(UTC)) // timedelta(days=1)
    return max(1, min(days, left - 1))


def create_intermediate(
    api: httpx.Client, parent_id: int, name: str, **extra: Any
) -> dict[str, Any]:
    body = {
        "common_name": name,
        "ca_type": "intermediate",
        "parent_id": parent_id,
        "validity_days": _days_within(api, parent_id, 1825),
        "key_algorithm": "EC",
        "key_size": 256,
        **extra,
    }
    created: dict[str, Any] = data(api.post(f"{API}/cas", json=body), 201)
    return created


def issue(api: httpx.Client, ca_id: int, common_name: str, **extra: Any) -> dict[str, Any]:
    body = {
        "common_name": common_name,
        "ca_id": ca_id,
        "key_algorithm": "EC",
        "key_size": 256,
        "validity_days": 90,
        **extra,
    }
    issued: dict[str, Any] = data(api.post(f"{API}/certificates", json=body), 201)
    return issued


def download(api: httpx.Client, path: str, **params: str) -> httpx.Response:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response


def cert_of(pem_or_der: str | bytes) -> x509.Certificate:
    raw = pem_or_der.encode() if isinstance(pem_or_der, str) else pem_or_der
    if b"-----BEGIN CERTIFICATE-----" in raw:
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


@dataclass(frozen=True)
class ForeignCert:
    """A certificate and key made by openssl, outside the server."""

    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> str:
        return self.cert_path.read_text()

    @property
    def key_pem(self) -> str:
        return self.key_path.read_text()

    @property
    def der(self) -> bytes:
        result = openssl("x509", "-in", str(self.cert_path), "-outform", "DER")
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout

    def pkcs12(self, password: str, chain: list["ForeignCert"] | None = None) -> bytes:
        args = [
            "pkcs12",
            "-export",
            "-in",
            str(self.cert_path),
            "-inkey",
            str(self.key_path),
            "-passout",
            f"pass:{password}",
            "-name",
            self.cert_path.stem,
        ]
        if chain:
            bundle = self.cert_path.with_suffix(".chain.pem")
            bundle.write_text("".join(c.pem for c in chain))
            args += ["-certfile", str(bundle)]
        result = openssl(*args)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout


def _config(workdir: Path) -> Path:
    path = workdir / "foreign-openssl.cnf"
    if not path.exists():
        path.write_text(OPENSSL_CONFIG)
    return path


def _key_args(key: str) -> list[str]:
    if key.startswith("ec:"):
        return ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{key[3:]}"]
    return ["-newkey", key]


def foreign_root(
    workdir: Path, subject: str, key: str = "ec:P-256", stem: str | None = None
) -> ForeignCert:
    """A self-signed CA from `openssl req -x509`."""
    stem = stem or unique("root")
    made = ForeignCert(workdir / f"{stem}.pem", workdir / f"{stem}.key")
    result = openssl(
        "req",
        "-x509",
        "-new",
        *_key_args(key),
        "-nodes",
        "-keyout",
        str(made.key_path),
        "-out",
        str(made.cert_path),
        "-days",
        "3650",
        "-subj",
        subject,
        "-config",
        str(_config(workdir)),
        "-extensions",
        "v3_ca",
    )
    assert result.returncode == 0, result.stderr.decode()
    return made


def foreign_signed(
    workdir: Path,
    issuer: ForeignCert,
    subject: str,
    extensions: str = "v3_ca",
    key: str = "ec:P-256",
    days: int = 1825,
) -> ForeignCert:
    """A certificate for a fresh key, signed by `issuer` with `openssl x509 -req`."""
    stem = unique("signed")
    made = ForeignCert(workdir / f"{stem}.pem", workdir / f"{stem}.key")
    csr = workdir / f"{stem}.csr"
    request = openssl(
        "req",
        "-new",
        *_key_args(key),
        "-nodes",
        "-keyout",
        str(made.key_path),
        "-out",
        str(csr),
        "-subj",
        subject,
        "-config",
        str(_config(workdir)),
    )
    assert request.returncode == 0, request.stderr.decode()
    signed = openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(issuer.cert_path),
        "-CAkey",
        str(issuer.key_path),
        "-set_serial",
        f"0x{secrets.token_hex(16)}",
        "-days",
        str(days),
        "-extfile",
        str(_config(workdir)),
        "-extensions",
        extensions,
        "-out",
        str(made.cert_path),
    )
    assert signed.returncode == 0, signed.stderr.decode()
    return made


def import_ca_file(
    api: httpx.Client,
    content: bytes,
    filename: str,
    **fields: str,
) -> httpx.Response:
    """POST /cas/import as multipart/form-data: a `file` part plus text fields."""
    return api.post(
        f"{API}/cas/import",
        files={"file": (filename, content, "application/octet-stream")},
        data=fields,
    )


def self_signed(key: Any, cn: str) -> x509.Certificate:
    """The certificate a device signs its first request with: its own, for a day."""
    return _built(key, _cn(cn), (_cn(cn), key), timedelta(days=1)).sign(key, hashes.SHA256())


def _cn(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _built(
    key: Any, name: x509.Name, issuer: tuple[x509.Name, Any], lifetime: timedelta
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0])
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
    )


def self_signed_ca(
    common_name: str,
    lifetime: timedelta = timedelta(days=365),
    started: timedelta = timedelta(minutes=5),
    key: Any = None,
    key_usage: bool = True,
) -> tuple[x509.Certificate, Any]:
    """A foreign root built with cryptography (openssl 3.0 cannot end in seconds), valid from
    `started` ago until `lifetime` from now (a negative one: it has expired), for `key` (a
    new P-256 key by default), with keyCertSign and cRLSign unless `key_usage` is False (no
    keyUsage extension at all)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC).replace(microsecond=0)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - started)
        .not_valid_after(datetime.now(UTC) + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key_usage:
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(key, hashes.SHA256()), key


def signed_pem(
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    ski: bool = False,
) -> tuple[x509.Name, str]:
    """A certificate made elsewhere, for `key`, named CN=`cn` and signed by `issuer` (its name
    and key) or by itself: its name and PEM."""
    name = _cn(cn)
    issuer_name, issuer_key = issuer or (name, key)
    builder = _built(key, name, (issuer_name, issuer_key), timedelta(days=30))
    builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ski:
        identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(identifier, critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return name, cert.public_bytes(serialization.Encoding.PEM).decode()


def db_rows(server: "Server", sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read the server's database directly (SQLite file or PostgreSQL), to see what is stored."""
    if server.database_url:
        import psycopg

        with psycopg.connect(server.database_url) as conn:
            return list(conn.execute(sql.replace("?", "%s"), params).fetchall())
    path = server.data_dir / "tessera.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def _sqlite_text_values(db: Path) -> Iterator[tuple[str, bytes]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for (value,) in conn.execute(f'SELECT "{column}" FROM "{table}"'):
                    if isinstance(value, str):
                        yield f"{table}.{column}", value.encode()
                    elif isinstance(value, bytes):
                        yield f"{table}.{column}", value


def _postgres_text_values(url: str) -> Iterator[tuple[str, bytes]]:
    import psycopg

    with psycopg.connect(url) as conn:
        columns = conn.execute(
            """
            SELECT table_name, column_name, data_type FROM information_schema.columns
            WHERE table_schema = 'public'
              AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea')
            ORDER BY table_name, column_name
            """
        ).fetchall()
        assert columns, "no text columns found"
        for table, column, data_type in columns:
            cast = "" if data_type == "bytea" else "::text"
            rows = conn.execute(f'SELECT "{column}"{cast} FROM "{table}"').fetchall()
            for (value,) in rows:
                if value is None:
                    continue
                raw = bytes(value) if data_type == "bytea" else str(value).encode()
                yield f"{table}.{column}", raw


def database_values(server: "Server") -> list[tuple[str, bytes]]:
    if server.database_url is None:
        return list(_sqlite_text_values(server.data_dir / "tessera.db"))
    return list(_postgres_text_values(server.database_url))
