"""All configuration in one validated object, read from TESSERA_* environment variables
and, optionally, from `tessera.env` in the data directory (environment wins)."""

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_FILE_NAME = "tessera.env"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where the database, KEK and TLS files live")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "TESSERA_DATABASE_URL"),
        description="SQLAlchemy URL; default is SQLite in the data directory",
    )
    host: str = Field("127.0.0.1", description="Address both listeners bind to")
    port: int = Field(8443, ge=1, le=65535, description="HTTPS port (the whole application)")
    http_port: int = Field(
        8080, ge=0, le=65535, description="Plain-HTTP port for CRL/AIA/OCSP/SCEP; 0 turns it off"
    )
    workers: int = Field(0, ge=0, description="Server processes; 0 means one per core")
    public_url: str | None = Field(None, description="External HTTPS base URL")
    public_http_url: str | None = Field(
        None, description="External plain-HTTP base URL placed in CRL and AIA extensions"
    )
    admin_password: str | None = Field(
        None, description="Initial admin password; random and printed once when unset"
    )
    session_minutes: int = Field(480, ge=5, description="Lifetime of a web session")
    tls_cert_days: int = Field(397, ge=1, le=825, description="Validity of the server's own cert")
    log_level: str = Field("info", description="uvicorn log level")
    tools_allow_private_targets: bool = Field(
        False,
        description="Let /tools/check-ssl connect to private, loopback, link-local and reserved "
        "addresses (refused by default, after DNS resolution)",
    )
    tools_tls_timeout: float = Field(
        10.0, gt=0, le=60, description="Connect and handshake timeout of /tools/check-ssl (s)"
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str | None) -> str | None:
        return value or None

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tessera.db').resolve()}"

    @property
    def https_base(self) -> str:
        return (self.public_url or f"https://{_host_for_url(self.host)}:{self.port}").rstrip("/")

    @property
    def http_base(self) -> str:
        if self.public_http_url:
            return self.public_http_url.rstrip("/")
        if self.http_port:
            return f"http://{_host_for_url(self.host)}:{self.http_port}"
        return self.https_base

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def kek_path(self) -> Path:
        return self.data_dir / "kek"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
        return "localhost"
    return f"[{host}]" if ":" in host else host


def load_settings(**overrides: object) -> Settings:
    """Environment first, then the data directory's config file, then built-in defaults."""
    data_dir = Path(str(overrides.get("data_dir") or os.environ.get("TESSERA_DATA_DIR", "data")))
    env_file = data_dir / CONFIG_FILE_NAME
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if env_file.is_file():
        given["_env_file"] = env_file
    return Settings(**given)
