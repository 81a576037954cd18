"""All configuration in one validated object, read from TESSERA_* environment variables
and, optionally, from `tessera.env` in the data directory (environment wins)."""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PlainSerializer,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tessera.core.host_lookup import HostLookup

CONFIG_FILE_NAME = "tessera.env"


def _reveal(value: SecretStr | None) -> str | None:
    # Settings travel to worker processes as JSON: the secret must survive that trip, while
    # repr() and logs still show it masked.
    return value.get_secret_value() if value is not None else None


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
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Least level of the server's log messages shown"
    )
    tools_allow_private_targets: bool = Field(
        False,
        description="Let /tools/check-ssl connect to private, loopback, link-local and reserved "
        "addresses (refused by default, after DNS resolution)",
    )
    tools_tls_timeout: float = Field(
        10.0,
        gt=0,
        le=60,
        description="Time for a whole /tools/check-ssl probe, DNS lookup included (s)",
    )
    tools_dns_servers: str = Field(
        "",
        description="Comma-separated host:port DNS servers /tools/check-ssl looks names up "
        "with (after /etc/hosts); those of /etc/resolv.conf when empty",
    )

    # SCEP server: legacy single-DES request envelopes (answers never use DES).
    scep_allow_des: bool = Field(
        False,
        description="Accept SCEP requests encrypted with single DES (micromdm's scepclient "
        "and older devices send nothing else), which RFC 8894 forbids: GetCACaps then no "
        "longer lists SCEPStandard; answers use 3DES or AES",
    )
    scep_ra_days: int = Field(
        365,
        ge=3,
        le=3650,
        description="Validity of SCEP RA certificates (days, never beyond their CA); renewed "
        "30 days (or a third of a shorter validity) before they end",
    )

    # ACME server: where challenge validation looks (DNS servers and ports).
    acme_dns_servers: str = Field(
        "",
        description="Comma-separated host:port DNS servers ACME validation resolves names "
        "with (for every challenge type); the system resolver when empty",
    )
    acme_http01_port: int = Field(
        80,
        ge=1,
        le=65535,
        description="Port http-01 connects to, and the http port its redirects may lead to",
    )
    acme_tlsalpn01_port: int = Field(
        443,
        ge=1,
        le=65535,
        description="Port tls-alpn-01 connects to, and the https port http-01 redirects may "
        "lead to",
    )
    acme_validation_timeout: float = Field(
        10.0, gt=0, le=60, description="Timeout of each ACME validation connection or query (s)"
    )
    acme_retry_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds before an ACME challenge whose validation failed in a way that "
        "may pass (unreachable, DNS, wrong answer) is tried again; 3 attempts in all",
    )
    acme_insecure_always_valid: bool = Field(
        False,
        description="BENCHMARKS ONLY: every ACME challenge passes without a check (as pebble's "
        "PEBBLE_VA_ALWAYS_VALID); never set this on a real CA",
    )

    # Security: rate limits, headers and CORS, body size, key-encryption key (KEK) management.
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "TESSERA_REDIS_URL"),
        description="Redis shared by every server process for rate limits (in memory per "
        "process if unset) and ACME nonces (in the database if unset)",
    )
    redis_prefix: str = Field("tessera:rl:", description="Prefix of the rate-limit keys in Redis")
    trusted_proxy_ips: str = Field(
        "",
        validation_alias=AliasChoices("TRUSTED_PROXY_IPS", "TESSERA_TRUSTED_PROXY_IPS"),
        description="Comma-separated CIDRs whose X-Forwarded-For is believed; none by default",
    )
    cors_origins: str = Field(
        "",
        validation_alias=AliasChoices("CORS_ORIGINS", "TESSERA_CORS_ORIGINS"),
        description="Comma-separated origins allowed by CORS; none by default",
    )
    rate_limit_enabled: bool = Field(True, description="Rate limiting on (the API can change it)")
    rate_limit_per_minute: int = Field(100, ge=1, description="Requests per minute per IP")
    rate_limit_auth_per_minute: int = Field(
        10, ge=1, description="Login and other auth requests per minute per IP"
    )
    rate_limit_export_per_minute: int = Field(
        10, ge=1, description="Export requests per minute per user"
    )
    rate_limit_protocol_per_minute: int = Field(
        1200, ge=0, description="OCSP/CRL/AIA/ACME/SCEP requests per minute per IP; 0 exempts"
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)"
    )
    master_password: Annotated[
        SecretStr | None, PlainSerializer(_reveal, return_type=str | None, when_used="json")
    ] = Field(None, description="Unlocks a KEK protected with a master password")
    master_password_file: Path | None = Field(
        None, description="File holding the master password (instead of the variable)"
    )
    kek_rotation_batch: int = Field(200, ge=1, description="Keys re-encrypted per transaction")
    kek_rotation_grace: float = Field(
        5.0, ge=0, description="Seconds every process gets to load a new KEK before the sweep"
    )
    secrets_rotation_days: int = Field(90, ge=1, description="Advised KEK rotation interval")

    # Accounts: mail (defaults for the settings stored in the database), account tokens.
    smtp_host: str | None = Field(None, description="SMTP server; mail is off until one is set")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port (465 means implicit TLS)")
    smtp_user: str | None = Field(None, description="SMTP login user")
    smtp_password: Annotated[
        SecretStr | None, PlainSerializer(_reveal, return_type=str | None, when_used="json")
    ] = Field(None, description="SMTP login password")
    smtp_tls: bool = Field(True, description="STARTTLS (or implicit TLS on port 465)")
    smtp_from: str | None = Field(None, description="From address of reset and invitation mails")
    reset_token_minutes: int = Field(
        60, ge=5, le=1440, description="Lifetime of a password-reset link"
    )
    invite_token_hours: int = Field(72, ge=1, le=720, description="Lifetime of an invitation")
    login_2fa_seconds: int = Field(
        300, ge=30, le=900, description="Time to enter the second factor after the password"
    )
    login_throttle_failures: int = Field(
        5, ge=1, description="Failed password logins of one username before it is throttled"
    )
    login_throttle_window_seconds: int = Field(
        900,
        ge=60,
        le=86400,
        description="Failures count while they come within this of each other (or of a lock)",
    )
    login_throttle_base_seconds: int = Field(
        60, ge=1, description="First back-off of a throttled username; doubles on every lock"
    )
    login_throttle_max_seconds: int = Field(
        900, ge=1, le=86400, description="Longest back-off of a throttled username"
    )

    # OCSP responder (issue 5): signer, response validity, request limits, cache size.
    ocsp_signer: Literal["delegated", "ca"] = Field(
        "delegated",
        description="Who signs OCSP responses: a delegated OCSP signing certificate per CA "
        "(issued and rolled over automatically) or the CA key itself",
    )
    ocsp_validity_seconds: int = Field(
        3600, ge=60, le=7 * 86400, description="nextUpdate - thisUpdate of OCSP responses"
    )
    ocsp_signer_days: int = Field(
        30, ge=2, le=365, description="Validity of delegated OCSP signing certificates"
    )
    ocsp_max_request_bytes: int = Field(
        8192, ge=512, le=1024 * 1024, description="Largest OCSP request accepted (413 beyond)"
    )
    ocsp_cache_entries: int = Field(
        200_000, ge=100, description="Pre-signed OCSP responses kept per server process"
    )

    # CRLs (issue 5): validity of full and delta CRLs, and how revocations are batched.
    crl_validity_hours: int = Field(
        24, ge=1, le=24 * 366, description="nextUpdate - thisUpdate of full CRLs (hours)"
    )
    crl_delta_enabled: bool = Field(
        True, description="Publish delta CRLs and point to them (Freshest CRL) in certificates"
    )
    crl_delta_validity_hours: int = Field(
        4, ge=1, le=24 * 31, description="nextUpdate - thisUpdate of delta CRLs (hours)"
    )
    crl_debounce_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="Least time between two CRLs of one CA made for revocations; a burst of "
        "revocations in that window makes one CRL",
    )

    @field_validator("tools_dns_servers", "acme_dns_servers")
    @classmethod
    def _check_dns_servers(cls, value: str) -> str:
        HostLookup.parse(value)  # a wrong entry stops the start, not each lookup
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _distinct_ports(self) -> "Settings":
        # Both listeners would bind it (SO_REUSEPORT lets them) and the kernel would hand each
        # connection to either: half the HTTPS clients would reach the plain-HTTP server.
        if self.http_port == self.port:
            raise ValueError(f"the HTTPS and plain-HTTP ports must differ (both are {self.port})")
        return self

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
