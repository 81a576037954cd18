"""Outgoing mail over SMTP (smtplib). Settings live in the database (one row every server
process reads) with TESSERA_SMTP_* as defaults; services only build messages, and endpoints
send them after the transaction has committed, so a rolled-back change mails nobody.

Message bodies carry single-use links: they are never logged."""

import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tessera.config import Settings
from tessera.core.errors import InvalidInput
from tessera.core.keystore import KeyEncryptor
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.storage.models_accounts import MailSettings
from tessera.storage.repositories import Repositories

log = logging.getLogger("tessera.mail")
SMTP_TIMEOUT = 20.0
IMPLICIT_TLS_PORT = 465


@dataclass(frozen=True)
class MailConfig:
    enabled: bool
    smtp_host: str | None
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    smtp_tls: bool
    from_address: str | None

    @property
    def configured(self) -> bool:
        return bool(self.enabled and self.smtp_host and self.from_address)


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str


def config_from(row: MailSettings | None, settings: Settings, keys: KeyEncryptor) -> MailConfig:
    """The stored row wins; without one, the environment's defaults (enabled when a host is
    given there). The stored password is sealed under the KEK."""
    if row is not None:
        return MailConfig(
            row.enabled,
            row.smtp_host,
            row.smtp_port,
            row.smtp_user,
            keys.unseal(row.encrypted_password).decode() if row.encrypted_password else None,
            row.smtp_tls,
            row.from_address,
        )
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return MailConfig(
        bool(settings.smtp_host),
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_user,
        password,
        settings.smtp_tls,
        settings.smtp_from,
    )


def load_config(repos: Repositories, settings: Settings, keys: KeyEncryptor) -> MailConfig:
    return config_from(repos.mail_settings.get(), settings, keys)


def send(config: MailConfig, message: Message) -> None:
    """Deliver one message; raises smtplib.SMTPException or OSError on failure."""
    if not config.configured or not config.smtp_host or not config.from_address:
        raise InvalidInput("email is not configured")
    mail = EmailMessage()
    mail["From"] = config.from_address
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain="tessera")
    mail.set_content(message.body)
    context = ssl.create_default_context()
    if config.smtp_tls and config.smtp_port == IMPLICIT_TLS_PORT:
        with smtplib.SMTP_SSL(
            config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT, context=context
        ) as smtp:
            _login_and_send(smtp, config, mail)
        return
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
        if config.smtp_tls:
            smtp.starttls(context=context)
        _login_and_send(smtp, config, mail)


def _login_and_send(smtp: smtplib.SMTP, config: MailConfig, mail: EmailMessage) -> None:
    if config.smtp_user:
        smtp.login(config.smtp_user, config.smtp_password or "")
    smtp.send_message(mail)


def deliver(config: MailConfig, messages: list[Message]) -> None:
    """Background delivery after commit: a failure is logged (recipient and subject only,
    never the body with its link) and does not affect other messages."""
    for message in messages:
        try:
            send(config, message)
        except (smtplib.SMTPException, OSError, ValueError, InvalidInput) as exc:
            # ValueError: a header the email package refuses (an address with a line break).
            log.warning("mail to %s (%s) failed: %s", message.to, message.subject, exc)


# Stored as they are; smtp_password is sealed into `encrypted_password`.
FIELDS = (
    "enabled",
    "smtp_host",
    "smtp_port",
    "smtp_user",
    "smtp_tls",
    "from_address",
)


def _sealed(keys: KeyEncryptor, password: object) -> str | None:
    return keys.seal(str(password).encode()) if password else None


def update_settings(
    repos: Repositories,
    keys: KeyEncryptor,
    actor: Actor,
    settings: Settings,
    changes: dict[str, object],
    now: datetime,
) -> MailConfig:
    """Store the mail settings (starting from the current ones, so a partial update keeps the
    rest). The password is audited only as 'changed', never its value."""
    row = repos.mail_settings.get()
    if row is None:
        current = config_from(None, settings, keys)
        row = repos.mail_settings.add(
            MailSettings(
                **{name: getattr(current, name) for name in FIELDS},
                encrypted_password=_sealed(keys, current.smtp_password),
                updated_at=now,
            )
        )
    for name, value in changes.items():
        if name in FIELDS:
            setattr(row, name, value)
    if "smtp_password" in changes:
        row.encrypted_password = _sealed(keys, changes["smtp_password"])
    row.updated_at = now
    config = config_from(row, settings, keys)
    if config.enabled and not (config.smtp_host and config.from_address):
        raise InvalidInput("enabled email needs smtp_host and from_address")
    details = {k: v for k, v in changes.items() if k != "smtp_password"}
    if "smtp_password" in changes:
        details["smtp_password"] = "changed"  # noqa: S105 - the fact, not the value
    audit.record(repos.audit, actor, "settings.email_update", "settings", "email", details)
    return config
