"""Syslog forwarding of audit events: RFC 5424 messages over UDP (RFC 5426) or TCP with
octet-counting framing (RFC 6587 3.4.1).

Events are handed over after their transaction committed (domains/audit/wiring.py) to a
queue that one thread per server process drains, so neither a slow nor an unreachable
syslog server ever delays or fails a request. Settings live in the database and are re-read
every few seconds, so a change made through any server process reaches all of them."""

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.core.errors import InvalidInput, TesseraError
from tessera.domains.audit.redaction import exported_details

log = logging.getLogger("tessera.audit.syslog")

FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}
FACILITY_NAMES = {code: name for name, code in FACILITIES.items()}
SEVERITY_INFO, SEVERITY_WARNING = 6, 4
PROTOCOLS = ("udp", "tcp")
# RFC 5612's documentation enterprise number: Tessera has no IANA number of its own.
SD_ID = "tessera@32473"
UDP_MAX_BYTES = 8192
SEND_TIMEOUT = 3.0
SETTINGS_TTL = 5.0
QUEUE_SIZE = 10_000


class SyslogUnreachable(TesseraError):
    """The configured syslog server could not be reached (a test send failed)."""

    status = 502


@dataclass(frozen=True)
class SyslogConfig:
    enabled: bool = False
    host: str | None = None
    port: int = 514
    protocol: str = "udp"
    facility: int = FACILITIES["audit"]
    app_name: str = "tessera"
    hostname: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "facility": FACILITY_NAMES[self.facility],
            "facility_code": self.facility,
            "app_name": self.app_name,
            "hostname": self.hostname,
        }

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> "SyslogConfig":
        if not stored:
            return cls()
        return cls(
            enabled=bool(stored.get("enabled", False)),
            host=stored.get("host"),
            port=int(stored.get("port", 514)),
            protocol=str(stored.get("protocol", "udp")),
            facility=int(stored.get("facility_code", FACILITIES["audit"])),
            app_name=str(stored.get("app_name") or "tessera"),
            hostname=stored.get("hostname"),
        )


def parse_facility(value: object) -> int:
    if isinstance(value, bool):
        raise InvalidInput("facility: a name such as local0 or a number 0-23")
    if isinstance(value, int) and 0 <= value <= 23:
        return value
    if isinstance(value, str) and value.strip().lower() in FACILITIES:
        return FACILITIES[value.strip().lower()]
    raise InvalidInput(f"facility: one of {', '.join(FACILITIES)} or a number 0-23")


# --- RFC 5424 -----------------------------------------------------------------------------


def _printable(text: str, limit: int) -> str:
    """PRINTUSASCII without spaces (HOSTNAME, APP-NAME, MSGID); '-' when empty."""
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def _param(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_message(event: dict[str, Any], config: SyslogConfig, hostname: str) -> bytes:
    """One audit event as an RFC 5424 message: header, one SD-ELEMENT, JSON body."""
    severity = SEVERITY_INFO if event.get("success", True) else SEVERITY_WARNING
    moment = event["timestamp"]
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    resource = ":".join(str(p) for p in (event.get("resource_type"), event.get("resource_id")) if p)
    params = {
        "id": event.get("id"),
        "seq": event.get("seq"),
        "org": event.get("org_id"),
        "user": event.get("username"),
        "actor_type": event.get("actor_type"),
        "action": event.get("action"),
        "resource": resource,
        "success": "true" if event.get("success", True) else "false",
        "ip": event.get("ip_address"),
        "request_id": event.get("request_id"),
    }
    sd = " ".join(f'{k}="{_param(v)}"' for k, v in params.items() if v not in (None, ""))
    header = " ".join(
        (
            f"<{config.facility * 8 + severity}>1",
            stamp,
            _printable(config.hostname or hostname, 255),
            _printable(config.app_name, 48),
            str(os.getpid()),
            _printable(str(event.get("action") or ""), 32),
        )
    )
    body = {
        "id": event.get("id"),
        "timestamp": stamp,
        "username": event.get("username"),
        "action": event.get("action"),
        "resource_type": event.get("resource_type"),
        "resource_id": event.get("resource_id"),
        "success": event.get("success", True),
        "ip_address": event.get("ip_address"),
        "details": exported_details(event.get("details")),
    }
    text = json.dumps(body, separators=(",", ":"), default=str)
    # The BOM marks MSG as UTF-8 (RFC 5424 6.4).
    return f"{header} [{SD_ID} {sd}] ".encode() + b"\xef\xbb\xbf" + text.encode()


# --- transport ----------------------------------------------------------------------------


class Transport:
    """One connection to the syslog server; TCP is kept open and reopened on failure."""

    def __init__(self, config: SyslogConfig) -> None:
        self.config = config
        self._sock: socket.socket | None = None

    def send(self, message: bytes) -> None:
        if self.config.protocol == "udp":
            self._send_udp(message[:UDP_MAX_BYTES])
            return
        framed = f"{len(message)} ".encode() + message
        try:
            self._tcp().sendall(framed)
        except OSError:
            self.close()  # the server may have closed an idle connection: one fresh try
            self._tcp().sendall(framed)

    def _send_udp(self, message: bytes) -> None:
        host, port = str(self.config.host), self.config.port
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.sendto(message, address)

    def _tcp(self) -> socket.socket:
        if self._sock is None:
            address = (str(self.config.host), self.config.port)
            self._sock = socket.create_connection(address, timeout=SEND_TIMEOUT)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


def send_test(config: SyslogConfig) -> str:
    """Send one test message now; raise SyslogUnreachable with the reason if it fails."""
    if not config.host:
        raise InvalidInput("syslog host is not configured")
    event = {
        "id": None,
        "timestamp": datetime.now(UTC),
        "username": "system",
        "action": "syslog.test",
        "success": True,
        "details": {"message": "Tessera syslog test message"},
    }
    transport = Transport(config)
    try:
        transport.send(format_message(event, config, socket.gethostname()))
    except OSError as exc:
        raise SyslogUnreachable(
            f"could not send to {config.protocol}://{config.host}:{config.port}: {exc}"
        ) from exc
    finally:
        transport.close()
    if config.protocol == "udp":
        return "test message sent over UDP (UDP gives no delivery confirmation)"
    return "test message delivered over TCP"


# --- the per-process forwarder ------------------------------------------------------------


class SyslogForwarder:
    """Queue + one daemon thread. `submit` never blocks and never raises."""

    def __init__(self, load_config: Callable[[], SyslogConfig]) -> None:
        self._load_config = load_config
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._config: SyslogConfig | None = None
        self._loaded_at = 0.0
        self._transport: Transport | None = None
        self.stats = {"sent": 0, "failed": 0, "dropped": 0}
        self._last_error_logged = 0.0

    def submit(self, events: list[dict[str, Any]]) -> None:
        config = self._config
        if config is not None and not config.enabled and self._fresh():
            return  # off: nothing to queue (re-checked once the settings are stale)
        for event in events:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.stats["dropped"] += 1
        self._ensure_thread()

    def invalidate(self) -> None:
        """Settings changed in this process: re-read them before the next event."""
        self._loaded_at = 0.0

    def _fresh(self) -> bool:
        return time.monotonic() - self._loaded_at < SETTINGS_TTL

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._drain, name="audit-syslog", daemon=True
                )
                self._thread.start()

    def _current(self) -> SyslogConfig:
        if self._config is None or not self._fresh():
            try:
                config = self._load_config()
            except Exception:
                log.warning("could not read the syslog settings", exc_info=True)
                config = self._config or SyslogConfig()
            if config != self._config and self._transport is not None:
                self._transport.close()
                self._transport = None
            self._config, self._loaded_at = config, time.monotonic()
        return self._config

    def _drain(self) -> None:
        hostname = socket.gethostname()
        while True:
            event = self._queue.get()
            if event.get("action") == "audit.syslog_update":
                self._loaded_at = 0.0  # the change itself is committed: read it now
            config = self._current()
            if not config.enabled or not config.host:
                continue
            if self._transport is None:
                self._transport = Transport(config)
            try:
                self._transport.send(format_message(event, config, hostname))
                self.stats["sent"] += 1
            except OSError as exc:
                self.stats["failed"] += 1
                self._transport.close()
                self._log_failure(config, exc)

    def _log_failure(self, config: SyslogConfig, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_error_logged > 60:  # one line a minute, not one per event
            self._last_error_logged = now
            log.warning("syslog %s:%s unreachable: %s", config.host, config.port, exc)
