"""Reading the CAs and certificates (with their keys) of an OPNsense firewall's trust store
through its API, for the smart import to store (`/api/v2/import/opnsense/...`).

OPNsense's Trust API: `POST /api/trust/{ca,cert}/search` lists the entries (`rows`, each
with its `uuid` and `descr`), `GET /api/trust/{ca,cert}/get/{uuid}` returns one under `ca`
or `cert`, its certificate as PEM in `crt_payload` (or base64 of the PEM in `crt`) and its
key likewise in `prv_payload` (`prv`). The API key and secret are HTTP basic credentials.

Firewalls live on private networks, so private addresses are allowed here (unlike the TLS
checker's); only callers who may import certificates reach this. The firewall's TLS
certificate is verified against the system trust store unless `verify_tls` is false (an
OPNsense GUI certificate is self-signed until replaced): the API secret is sent only to a
verified peer unless the caller says otherwise.
"""

import base64
import binascii
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tessera.core import jsontext
from tessera.core.errors import InvalidInput

KINDS = {"ca": "CA", "cert": "Certificate"}
TIMEOUT = 15.0  # each request
DEADLINE = 60.0  # the whole fetch: the request's database session waits meanwhile
MAX_RESPONSE = 5 * 1024 * 1024
MAX_ENTRIES = 500  # the smart import's bound on the objects of one import
_UUID = re.compile(r"[0-9A-Za-z-]{1,64}")


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    api_key: str
    api_secret: str
    verify_tls: bool = True

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"https://{host}:{self.port}"


@dataclass(frozen=True)
class Entry:
    uuid: str
    kind: str  # "ca" or "cert"
    name: str


@dataclass
class Fetched:
    entries: list[Entry] = field(default_factory=list)
    pem: list[str] = field(default_factory=list)  # certificates and keys, as PEM text


def list_entries(target: Target) -> list[Entry]:
    """Every CA and certificate the firewall's trust store lists."""
    with _client(target) as client:
        return [entry for kind in KINDS for entry in _search(client, target, kind)]


def fetch(target: Target, kinds: tuple[str, ...], uuids: set[str] | None) -> Fetched:
    """The PEM of each listed entry of `kinds` (those in `uuids` when given), key included."""
    fetched = Fetched()
    with _client(target) as client:
        for kind in kinds:
            for entry in _search(client, target, kind):
                if uuids is None or entry.uuid in uuids:
                    fetched.entries.append(entry)
        if len(fetched.entries) > MAX_ENTRIES:
            raise InvalidInput(f"the firewall lists more than {MAX_ENTRIES} entries; choose items")
        deadline = time.monotonic() + DEADLINE
        for entry in fetched.entries:
            if time.monotonic() > deadline:
                raise InvalidInput(f"OPNsense took more than {DEADLINE:.0f} s; choose items")
            body = _get(client, target, f"/api/trust/{entry.kind}/get/{entry.uuid}")
            record = body.get(entry.kind)
            if not isinstance(record, dict):
                raise InvalidInput(f"OPNsense sent no {entry.kind} for {entry.uuid}")
            fetched.pem += [p for p in (_payload(record, "crt"), _payload(record, "prv")) if p]
    return fetched


def _client(target: Target) -> httpx.Client:
    return httpx.Client(
        base_url=target.base_url,
        auth=(target.api_key, target.api_secret),
        verify=target.verify_tls,
        timeout=TIMEOUT,
        follow_redirects=False,
        trust_env=False,  # no proxy from the server's environment sees the credentials
    )


def _search(client: httpx.Client, target: Target, kind: str) -> list[Entry]:
    body = _request(
        client, target, "POST", f"/api/trust/{kind}/search", {"current": 1, "rowCount": -1}
    )
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise InvalidInput(f"OPNsense's {kind} search sent no rows: is this an OPNsense API?")
    entries = []
    for row in rows:
        uuid = row.get("uuid") if isinstance(row, dict) else None
        # Put into the next request's path: a uuid, nothing that could climb out of it.
        if isinstance(uuid, str) and _UUID.fullmatch(uuid):
            entries.append(Entry(uuid, kind, str(row.get("descr") or "")))
    return entries


def _get(client: httpx.Client, target: Target, path: str) -> dict[str, Any]:
    return _request(client, target, "GET", path, None)


def _request(
    client: httpx.Client, target: Target, method: str, path: str, payload: dict[str, Any] | None
) -> dict[str, Any]:
    where = f"OPNsense at {target.host}:{target.port}"
    try:
        with client.stream(method, path, json=payload) as response:
            body = _limited(response)
    except httpx.HTTPError as exc:
        raise InvalidInput(f"cannot reach {where}: {_reason(exc)}") from exc
    if response.status_code in (401, 403):
        raise InvalidInput(f"{where} refused the API key and secret ({response.status_code})")
    if response.status_code != 200:
        raise InvalidInput(f"{where} answered {path} with HTTP {response.status_code}")
    try:
        parsed = jsontext.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{where} did not answer {path} with JSON") from exc
    if not isinstance(parsed, dict):
        raise InvalidInput(f"{where} did not answer {path} with a JSON object")
    return parsed


def _limited(response: httpx.Response) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise InvalidInput("OPNsense's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"{text} (an OPNsense certificate not trusted here: send verify_ssl false to accept it)"
        )
    return text


def _payload(record: dict[str, Any], name: str) -> str | None:
    """`crt_payload` (PEM), else `crt` (base64 of the PEM, as stored in config.xml)."""
    text = record.get(f"{name}_payload")
    if isinstance(text, str) and text.strip():
        return text.strip() + "\n"
    encoded = record.get(name)
    if not isinstance(encoded, str) or not encoded.strip():
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode("ascii").strip() + "\n"
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(f"OPNsense's {name} is not base64 of PEM text") from exc
