"""First start (and every start): data directory, KEK, schema, default organization, admin,
and the server's own TLS certificate, issued by an internal CA through the one issuance path."""

import ipaddress
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session

from tessera.config import Settings
from tessera.core.errors import InvalidInput
from tessera.core.formats import load_certificate
from tessera.core.keys import KeySpec, generate_private_key
from tessera.core.keystore import KeyEncryptor, MasterPasswordError, tls_key_password
from tessera.core.names import SubjectFields, parse_san
from tessera.core.profile import CertificateRequest
from tessera.domains.actor import system_actor
from tessera.domains.audit import wiring as audit_wiring
from tessera.domains.identity.passwords import check_password
from tessera.domains.identity.secrets import generate_password, hash_password
from tessera.domains.issuance import Issuance
from tessera.domains.scep.sealing import seal_stored_csrs
from tessera.domains.security.tls import rewrap_tls_key
from tessera.runtime import Runtime, build_runtime
from tessera.storage import models
from tessera.storage.db import make_engine, migrate
from tessera.storage.repositories import Repositories

INTERNAL_CA_NAME = "Tessera Internal CA"
TLS_RENEW_BEFORE = timedelta(days=30)
_LOCK_ID = 0x7E55E7A


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    key_password: str


def private_files() -> None:
    """Whatever the server process (and its workers, which inherit it) creates is its own
    alone: the SQLite database and its WAL, the ACME nonce file, temporary files. The data
    directory is 0700 when Tessera makes it, but not one made beforehand, where the database
    (password digests, audit trail, sealed keys) would otherwise be world-readable."""
    os.umask(0o077)


def ensure_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.tls_dir.mkdir(mode=0o700, exist_ok=True)
    audit_wiring.ensure_key(settings.data_dir)  # the audit chain's HMAC key (docs/audit.md)
    if not settings.kek_path.exists():
        fd = os.open(settings.kek_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(KeyEncryptor.new_kek())


def initialize(settings: Settings, say: Callable[[str], None] = print) -> TLSFiles:
    """Idempotent: safe on every start and from several nodes at once (PostgreSQL lock)."""
    try:
        ensure_data_dir(settings)
    except OSError as exc:
        # mkdir says "File exists" of a file in the way, which hides the problem.
        reason = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise SystemExit(f"cannot use the data directory {settings.data_dir}: {reason}") from exc
    engine = open_database(settings.db_url)
    try:
        with _exclusive(engine):
            migrate(engine)
        try:
            runtime = build_runtime(settings)
        except MasterPasswordError as exc:
            raise SystemExit(f"cannot unlock the key-encryption key: {exc.message}") from exc
        try:
            with runtime.sessions.begin() as session, _exclusive_in(session):
                repos = _repos(session)
                repos.audit.settle_chains()  # rows from before the audit chain (migration 0006)
                seal_stored_csrs(session, runtime.keys)  # SCEP CSRs from before migration 0017
                _ensure_admin(repos, settings, say)
                return _ensure_tls(runtime, repos, settings)
        finally:
            runtime.engine.dispose()
    finally:
        engine.dispose()


def open_database(url: str) -> Engine:
    """The database, reached once before anything else: a wrong DATABASE_URL stops the start
    with one line naming it (without its password) instead of a traceback."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
        engine = make_engine(url)
    except ArgumentError as exc:  # unparsable, or a dialect SQLAlchemy does not have
        raise SystemExit(f"cannot use DATABASE_URL: {exc}") from exc
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        reason = " ".join(str(exc.orig or exc).split())
        raise SystemExit(f"cannot reach the database {shown}: {reason}") from exc
    return engine


@contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
            connection.commit()


@contextmanager
def _exclusive_in(session: Session) -> Iterator[None]:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    yield


def _repos(session: Session) -> Repositories:
    """The default organization's repositories; a new organization gets default templates
    once, so templates an administrator deleted do not come back on the next start."""
    org = Repositories(session, 0).organizations
    existing = org.default()
    repos = Repositories(session, (existing or org.add("default")).id)
    if existing is None:
        _add_default_templates(repos)
    return repos


def _ensure_admin(repos: Repositories, settings: Settings, say: Callable[[str], None]) -> None:
    if repos.users.all():
        return
    if settings.admin_password:
        try:
            check_password(settings.admin_password)  # the policy every other password meets
        except InvalidInput as exc:
            raise SystemExit(f"TESSERA_ADMIN_PASSWORD: {exc.message}") from exc
    password = settings.admin_password or generate_password()
    repos.users.add(
        models.User(
            username="admin",
            email=None,
            full_name="Administrator",
            role="admin",
            password_hash=hash_password(password),
            active=True,
        )
    )
    if settings.admin_password:
        say("Created user 'admin' with the password from TESSERA_ADMIN_PASSWORD.")
    else:
        say(f"Created user 'admin' with password: {password}\n(shown only this once)")


# The first is template 1 of a fresh install: the seed's "Issue Certificate" example names
# template 1 with serverAuth and clientAuth, which a server-only template would refuse.
DEFAULT_TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "name": "Server and Client",
        "description": "TLS server that also authenticates",
        "template_type": "server_client",
        "validity_days": 397,
        "extended_key_usage": ["serverAuth", "clientAuth"],
    },
    {
        "name": "Web Server",
        "description": "TLS server",
        "template_type": "server",
        "validity_days": 397,
        "extended_key_usage": ["serverAuth"],
    },
    {
        "name": "Client Authentication",
        "description": "TLS client / mTLS user",
        "template_type": "client",
        "validity_days": 365,
        "extended_key_usage": ["clientAuth"],
    },
)


def _add_default_templates(repos: Repositories) -> None:
    """A fresh organization starts with the templates most issuance needs."""
    for spec in DEFAULT_TEMPLATES:
        repos.templates.add(models.Template(**spec))


def tls_files(settings: Settings, kek: bytes) -> TLSFiles:
    # The key file is encrypted too; its passphrase is derived from the KEK, never stored.
    password = tls_key_password(kek)
    return TLSFiles(settings.tls_dir / "server.pem", settings.tls_dir / "server.key", password)


def _ensure_tls(runtime: Runtime, repos: Repositories, settings: Settings) -> TLSFiles:
    files = tls_files(settings, runtime.keys.ring.primary)
    names = server_names(settings)
    if (
        files.cert.exists()
        and files.key.exists()
        and rewrap_tls_key(files.key, runtime.keys.ring)
        and _still_good(files, names, runtime)
        and _still_listed(files, repos)
    ):
        return files
    issuance = Issuance(
        repos,
        runtime.authority,
        runtime.keys,
        runtime.publication,
        system_actor(repos.org_id),
        may_use_internal_ca=True,
    )
    ca = _internal_ca(repos, issuance)
    key = generate_private_key(KeySpec("EC", 256))
    request = CertificateRequest(
        subject=SubjectFields(names[0], organization="Tessera").to_name(),
        public_key=key.public_key(),
        sans=tuple(parse_san(n) for n in names),
        validity_days=settings.tls_cert_days,
        extended_key_usage=("serverAuth",),
        origin="bootstrap",
    )
    # The key stays only in the encrypted file the TLS stack reads: in the database it could
    # be exported through the API by anyone allowed to export keys.
    row = issuance.issue_certificate(request, ca, None, None, fresh_key=True)
    chain = row.certificate_pem + ca.certificate_pem
    _write_private(files.cert, chain.encode())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(files.key_password.encode()),
    )
    _write_private(files.key, encrypted)
    return files


def _internal_ca(repos: Repositories, issuance: Issuance) -> models.CertificateAuthority:
    existing = [ca for ca in repos.cas.all() if ca.internal and ca.is_active]
    if existing:
        return existing[0]
    key = generate_private_key(KeySpec("EC", 384))
    request = CertificateRequest(
        subject=SubjectFields(INTERNAL_CA_NAME, organization="Tessera").to_name(),
        public_key=key.public_key(),
        validity_days=3650,
        is_ca=True,
        path_length=0,
        origin="bootstrap",
    )
    return issuance.issue_ca(request, INTERNAL_CA_NAME, key, None, internal=True)


def server_names(settings: Settings) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    for candidate in (settings.host, urlsplit(settings.https_base).hostname or ""):
        if candidate and candidate not in ("0.0.0.0", "::") and candidate not in names:  # noqa: S104
            names.append(candidate)
    return names


def _still_good(files: TLSFiles, names: list[str], runtime: Runtime) -> bool:
    cert = load_certificate(files.cert.read_bytes())
    if cert.not_valid_after_utc - runtime.clock() < TLS_RENEW_BEFORE:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    present |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return all(_normal(n) in present for n in names)


def _still_listed(files: TLSFiles, repos: Repositories) -> bool:
    """The inventory still holds the certificate, unrevoked: an administrator who revoked it
    (its key leaked) or deleted it gets a new one at the next start, as relying parties
    that check its status would refuse it."""
    cert = load_certificate(files.cert.read_bytes())
    row = repos.certificates.by_fingerprint(cert.fingerprint(hashes.SHA256()).hex())
    return row is not None and row.status != "revoked"


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _write_private(path: Path, content: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)
