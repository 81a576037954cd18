"""Audit Logs (/api/v2/audit): filters, get, stats, actions, JSON and CSV export, retention
settings and cleanup permissions, and syslog forwarding to real UDP and TCP listeners."""

import csv
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.accounts_helpers import create_user, key_for
from tests.e2e.helpers import data, error, unique
from tests.support import Server, free_port

API = "/api/v2"
LOGS = f"{API}/audit/logs"
SYSLOG = f"{API}/system/audit/syslog"
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
    rb"\[tessera@32473 (?P<sd>(?:[^\]\\]|\\.)*)\] \xef\xbb\xbf(?P<msg>.*)$",
    re.DOTALL,
)


def make_template(api: httpx.Client, name: str | None = None, **headers: str) -> dict[str, Any]:
    body = {"name": name or unique("audit-tpl"), "validity_days": 30}
    return dict(data(api.post(f"{API}/templates", json=body, headers=headers), 201))


def logs(api: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    response = api.get(LOGS, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["data"], body["meta"]


# --- list, filters, get --------------------------------------------------------------------


def test_list_shape_and_paging(api: httpx.Client) -> None:
    for _ in range(3):
        make_template(api)
    first, meta = logs(api, page=1, per_page=2)
    second, meta2 = logs(api, page=2, per_page=2)
    assert meta["page"] == 1 and meta["per_page"] == 2 and meta["total"] >= 4
    assert meta2["total"] >= meta["total"]
    assert len(first) == 2 and not {r["id"] for r in first} & {r["id"] for r in second}
    row = first[0]
    for field in (
        "id",
        "timestamp",
        "username",
        "action",
        "resource_type",
        "resource_id",
        "details",
        "ip_address",
        "user_agent",
        "success",
    ):
        assert field in row, field
    assert isinstance(row["details"], str) and isinstance(row["details_data"], dict)
    stamps = [r["timestamp"] for r in first + second]
    assert stamps == sorted(stamps, reverse=True)  # newest first


def test_filters_by_username_action_success_and_search(api: httpx.Client, server: Server) -> None:
    marker = unique("needle")
    created = make_template(api, name=f"tpl {marker}")
    found, meta = logs(api, search=marker)
    assert meta["total"] == 1 and found[0]["resource_id"] == str(created["id"])
    assert found[0]["action"] == "template.create" and found[0]["username"] == "admin"
    only_creates, _ = logs(api, action="template.create", per_page=100)
    assert only_creates and {r["action"] for r in only_creates} == {"template.create"}
    by_admin, _ = logs(api, username="admin", per_page=100)
    assert by_admin and {r["username"] for r in by_admin} == {"admin"}
    nobody, meta = logs(api, username=unique("nobody"))
    assert nobody == [] and meta["total"] == 0
    # A failed login is audited as a failure under the name that was tried.
    tried = unique("intruder")
    with server.client(api_key="") as anonymous:
        login = anonymous.post(
            f"{API}/auth/login/password", json={"username": tried, "password": "wrong"}
        )
        assert login.status_code == 401
    failures, _ = logs(api, success="false", username=tried)
    assert [r["success"] for r in failures] == [False]
    successes, _ = logs(api, success="true", per_page=100)
    assert successes and all(r["success"] for r in successes)


def test_date_filters(api: httpx.Client) -> None:
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    _, all_meta = logs(api)
    _, today_meta = logs(api, date_from=today.isoformat(), date_to=today.isoformat())
    assert today_meta["total"] == all_meta["total"]  # everything here was written today
    _, future = logs(api, date_from=tomorrow.isoformat())
    assert future["total"] == 0
    _, past = logs(api, date_to=(today - timedelta(days=1)).isoformat())
    assert past["total"] == 0
    moment = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    _, recent = logs(api, date_from=moment)
    assert recent["total"] == all_meta["total"]
    _, naive = logs(api, date_from="2020-01-01T00:00:00")
    assert naive["total"] == all_meta["total"]


# Their UTC falls in year 0 or 10000, which no stored timestamp can reach.
OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


def test_dates_at_the_ends_of_the_calendar(api: httpx.Client) -> None:
    _, all_meta = logs(api)
    _, until_the_end = logs(api, date_to="9999-12-31")
    assert until_the_end["total"] >= all_meta["total"] > 0
    _, from_the_end = logs(api, date_from="9999-12-31")
    assert from_the_end["total"] == 0
    _, from_the_start = logs(api, date_from="0001-01-01", date_to="0001-01-01")
    assert from_the_start["total"] == 0
    exported = api.get(f"{API}/audit/export", params={"date_to": "9999-12-31", "limit": 2})
    assert exported.status_code == 200 and len(exported.json()) == 2, exported.text


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
@pytest.mark.parametrize("name", ["date_from", "date_to"])
@pytest.mark.parametrize("path", [LOGS, f"{API}/audit/export"])
def test_moments_outside_the_calendar_are_400(
    api: httpx.Client, path: str, name: str, moment: str
) -> None:
    """On the export too: refused before the body starts, never a 200 cut short."""
    message = error(api.get(path, params={name: moment}), 400)
    assert name in message and "range" in message, message


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"date_from": "yesterday"}, 400, "date_from"),
        ({"date_to": "2026-13-45"}, 400, "date_to"),
        ({"date_from": "2026-02-02", "date_to": "2026-01-01"}, 400, "before"),
        ({"usernme": "admin"}, 400, "unknown query parameter"),
        ({"per_page": 101}, 422, "per_page"),
        ({"page": 0}, 422, "page"),
        ({"success": "maybe"}, 422, "success"),
    ],
)
def test_bad_list_input(
    api: httpx.Client, params: dict[str, Any], status: int, needle: str
) -> None:
    assert needle in error(api.get(LOGS, params=params), status)


def test_get_one_and_not_found(api: httpx.Client) -> None:
    created = make_template(api)
    row = logs(api, action="template.create", per_page=1)[0][0]
    assert row["resource_id"] == str(created["id"])
    assert data(api.get(f"{LOGS}/{row['id']}")) == row
    error(api.get(f"{LOGS}/2000000000"), 404)
    error(api.get(f"{LOGS}/abc"), 422)
    error(api.get(f"{LOGS}/0"), 422)


def test_stats_and_actions(api: httpx.Client) -> None:
    make_template(api)
    stats = data(api.get(f"{API}/audit/stats", params={"days": 30}))
    assert stats["total_logs"] == stats["success_count"] + stats["failure_count"]
    assert 0 <= stats["success_rate"] <= 100
    assert {"action", "count"} <= set(stats["top_actions"][0])
    assert stats["top_users"] and {"username", "count"} <= set(stats["top_users"][0])
    assert isinstance(stats["recent_failures"], list)
    counts = [a["count"] for a in stats["top_actions"]]
    assert counts == sorted(counts, reverse=True)
    actions = data(api.get(f"{API}/audit/actions"))
    assert "template.create" in actions and actions == sorted(actions)
    error(api.get(f"{API}/audit/stats", params={"days": 0}), 422)
    error(api.get(f"{API}/audit/stats", params={"weeks": 2}), 400)


# --- export --------------------------------------------------------------------------------


def test_export_json_and_csv(api: httpx.Client) -> None:
    formula = f'=HYPERLINK("http://evil.test") {unique("x")}'
    make_template(api, name=formula)
    exported = api.get(f"{API}/audit/export", params={"format": "json", "limit": 5})
    assert exported.status_code == 200, exported.text
    assert "attachment" in exported.headers["content-disposition"]
    rows = exported.json()
    assert len(rows) == 5 and {"id", "action", "timestamp"} <= set(rows[0])
    filtered = api.get(
        f"{API}/audit/export", params={"format": "json", "action": "template.create"}
    ).json()
    assert filtered and {r["action"] for r in filtered} == {"template.create"}
    as_csv = api.get(
        f"{API}/audit/export",
        params={"format": "csv", "search": "HYPERLINK", "action": "template.create"},
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(table) == 1 and table[0]["action"] == "template.create"
    # The name is inside the JSON details, which starts with "{": no formula either way.
    assert not table[0]["details"].startswith("=")
    assert json.loads(table[0]["details"])["name"] == formula
    # The export itself is audited.
    assert logs(api, action="audit.export", per_page=1)[0]


def test_every_export_redacts_sensitive_parameters(api: httpx.Client) -> None:
    """A template named after a URL with credentials in its query string: the v2 JSON and
    CSV exports mask them as the v1 export and syslog do (one redaction for all of them)."""
    marker = unique("v2-redact")
    query = "token=s3cr3t&api_key=k3y&PASSWORD=pw&key=abc&mode=1"
    make_template(api, name=f"{marker} https://hook.test/cb?{query}")
    masked = ("token=***", "api_key=***", "PASSWORD=***", "key=***", "mode=1")
    params = {"action": "template.create", "search": marker}
    exported = api.get(f"{API}/audit/export", params={"format": "json", **params})
    (row,) = exported.json()
    as_csv = api.get(f"{API}/audit/export", params={"format": "csv", **params})
    (csv_row,) = list(csv.DictReader(io.StringIO(as_csv.text)))
    v1 = list(csv.DictReader(io.StringIO(api.get("/api/v1/audit/export").text)))
    (v1_row,) = [r for r in v1 if marker in r["detail"] and r["action"] == "template.create"]
    texts = {
        "json details": row["details"],
        "json details_data": json.dumps(row["details_data"]),
        "csv details": csv_row["details"],
        "v1 csv detail": v1_row["detail"],
    }
    for where, text in texts.items():
        for secret in ("s3cr3t", "k3y", "pw&", "abc"):
            assert secret not in text, (where, text)
        for kept in masked:
            assert kept in text, (where, text)


def test_export_neutralises_formula_cells(api: httpx.Client, server: Server) -> None:
    tried = "=cmd|' /C calc'!A0"
    with server.client(api_key="") as anonymous:
        anonymous.post(f"{API}/auth/login/password", json={"username": tried, "password": "x"})
    as_csv = api.get(f"{API}/audit/export", params={"format": "csv", "username": tried})
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert table and table[0]["username"] == "'" + tried


@pytest.mark.parametrize(
    "params",
    [{"format": "xml"}, {"limit": 0}, {"limit": 1_000_001}, {"date_from": "x"}, {"fmt": "csv"}],
)
def test_bad_export_input(api: httpx.Client, params: dict[str, Any]) -> None:
    response = api.get(f"{API}/audit/export", params=params)
    assert response.status_code in (400, 422), response.text
    error(response, response.status_code)


# --- permissions ---------------------------------------------------------------------------


def test_auditor_reads_but_cannot_clean_up_and_viewer_cannot_read(
    api: httpx.Client, server: Server
) -> None:
    auditor = create_user(api, "auditor")
    viewer = create_user(api, "viewer")
    with server.client(api_key=key_for(server, auditor["username"])) as client:
        data(client.get(LOGS))
        data(client.get(f"{API}/audit/verify"))
        error(client.post(f"{API}/audit/cleanup", json={"retention_days": 90}), 403)
        error(client.get(f"{API}/system/audit/retention"), 403)
        error(client.put(SYSLOG, json={"enabled": False}), 403)
    with server.client(api_key=key_for(server, viewer["username"])) as client:
        error(client.get(LOGS), 403)
        error(client.get(f"{API}/audit/export"), 403)


# --- retention settings and cleanup ------------------------------------------------------


def test_retention_settings(api: httpx.Client) -> None:
    current = data(api.get(f"{API}/system/audit/retention"))
    assert current["retention_days"] >= 1 and isinstance(current["auto_cleanup"], bool)
    updated = data(api.put(f"{API}/system/audit/retention", json={"retention_days": 400}))
    assert updated["retention_days"] == 400
    assert data(api.get(f"{API}/system/audit/retention"))["retention_days"] == 400
    for bad in ({"retention_days": 0}, {"retention_days": "lots"}, {"days": 3}):
        response = api.put(f"{API}/system/audit/retention", json=bad)
        error(response, 422)
    row = logs(api, action="audit.retention_update", per_page=1)[0][0]
    assert json.loads(row["details"])["retention_days"] == 400


def test_cleanup_with_nothing_old_deletes_nothing(api: httpx.Client) -> None:
    done = data(api.post(f"{API}/audit/cleanup", json={"retention_days": 30}))
    assert done["deleted"] == 0 and done["retention_days"] == 30
    done = data(api.post(f"{API}/system/audit/cleanup", json={"retention_days": 30}))
    assert done["deleted"] == 0
    error(api.post(f"{API}/audit/cleanup", json={"retention_days": 0}), 422)
    error(api.post(f"{API}/audit/cleanup", json={"retention_days": -5}), 422)
    assert data(api.get(f"{API}/audit/verify"))["valid"] is True


# --- syslog --------------------------------------------------------------------------------


class Listener:
    """A syslog receiver: one UDP socket, or a TCP server reading octet-counted frames."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.port = free_port()
        self.messages: list[bytes] = []
        self._stop = threading.Event()
        kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        if protocol == "tcp":
            self.sock.listen()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.protocol == "udp":
                    self.messages.append(self.sock.recv(65535))
                else:
                    conn, _ = self.sock.accept()
                    threading.Thread(target=self._read_frames, args=(conn,), daemon=True).start()
            except TimeoutError:
                continue
            except OSError:
                return

    def _read_frames(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65535)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    assert length.isdigit(), buffer[:40]  # octet counting: "LEN SP MSG"
                    if len(rest) < int(length):
                        break
                    self.messages.append(rest[: int(length)])
                    buffer = rest[int(length) :]

    def wait_for(self, needle: bytes, timeout: float = 20) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if needle in message:
                    match = RFC5424.match(message)
                    assert match, message
                    return match
            time.sleep(0.05)
        raise AssertionError(f"no syslog message with {needle!r}: {self.messages[-5:]}")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[dict[str, Listener]]:
    made = {"udp": Listener("udp"), "tcp": Listener("tcp")}
    yield made
    for listener in made.values():
        listener.close()


@pytest.fixture
def syslog_off(api: httpx.Client) -> Iterator[None]:
    yield
    data(api.put(SYSLOG, json={"enabled": False}))


def _params(sd: bytes) -> dict[str, str]:
    return {
        k.decode(): v.decode().replace('\\"', '"')
        for k, v in re.findall(rb'(\S+?)="((?:[^"\\]|\\.)*)"', sd)
    }


@pytest.mark.usefixtures("syslog_off")
def test_events_are_forwarded_over_udp_and_tcp(
    api: httpx.Client, server: Server, listeners: dict[str, Listener]
) -> None:
    for protocol, facility, code in (("udp", "local4", 20), ("tcp", 13, 13)):
        listener = listeners[protocol]
        body = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": listener.port,
            "protocol": protocol,
            "facility": facility,
        }
        settings = data(api.put(SYSLOG, json=body))
        assert settings["protocol"] == protocol and settings["facility_code"] == code
        assert data(api.get(SYSLOG))["port"] == listener.port
        marker = unique(f"syslog-{protocol}")
        created = make_template(api, name=marker)
        match = listener.wait_for(marker.encode())
        assert int(match["pri"]) == code * 8 + 6  # facility, severity informational
        assert match["app"] == b"tessera" and match["msgid"] == b"template.create"
        datetime.fromisoformat(match["ts"].decode().replace("Z", "+00:00"))
        params = _params(match["sd"])
        assert params["user"] == "admin" and params["resource"] == f"template:{created['id']}"
        assert params["success"] == "true" and params["action"] == "template.create"
        event = json.loads(match["msg"])
        assert event["details"]["name"] == marker and event["id"] == int(params["id"])
    # A failure is forwarded with severity warning.
    with server.client(api_key="") as anon:
        tried = unique("syslog-fail")
        anon.post(f"{API}/auth/login/password", json={"username": tried, "password": "no"})
    match = listeners["tcp"].wait_for(tried.encode())
    assert int(match["pri"]) == 13 * 8 + 4


@pytest.mark.usefixtures("syslog_off")
def test_syslog_test_endpoint(api: httpx.Client, listeners: dict[str, Listener]) -> None:
    for protocol in ("udp", "tcp"):
        listener = listeners[protocol]
        data(
            api.put(
                SYSLOG,
                json={"host": "127.0.0.1", "port": listener.port, "protocol": protocol},
            )
        )
        before = len(listener.messages)
        result = data(api.post(f"{SYSLOG}/test"))
        assert result["success"] is True
        match = listener.wait_for(b"syslog.test")
        assert match["msgid"] == b"syslog.test"
        assert len(listener.messages) > before


@pytest.mark.usefixtures("syslog_off")
def test_unreachable_syslog_never_fails_a_request(api: httpx.Client) -> None:
    closed = free_port()  # nothing listens there
    data(
        api.put(
            SYSLOG, json={"enabled": True, "host": "127.0.0.1", "port": closed, "protocol": "tcp"}
        )
    )
    assert "could not send" in error(api.post(f"{SYSLOG}/test"), 502)
    for _ in range(3):
        make_template(api)  # each is forwarded to nowhere, and still succeeds


@pytest.mark.parametrize(
    "body",
    [
        {"protocol": "carrier-pigeon"},
        {"port": 0},
        {"port": 70000},
        {"facility": "local9"},
        {"facility": 24},
        {"host": "bad host name"},
        {"enabled": True, "host": None},
        {"colour": "blue"},
        {"port": "abc"},
        {"port": 1.5},
        {"port": [514]},
        {"enabled": "maybe"},
        {"protocol": 17},
        {"facility": []},
        {"facility": -1},
        {"facility": 1.5},
        {"host": 5},
        {"app_name": ""},
        {"hostname": {"name": "h"}},
    ],
)
@pytest.mark.usefixtures("syslog_off")
def test_bad_syslog_settings(api: httpx.Client, body: dict[str, Any]) -> None:
    response = api.put(SYSLOG, json=body)
    assert response.status_code in (400, 422), response.text
    error(response, response.status_code)


@pytest.mark.usefixtures("syslog_off")
def test_null_returns_a_syslog_setting_to_its_default(api: httpx.Client) -> None:
    custom = {
        "enabled": False,
        "host": "127.0.0.1",
        "port": 5514,
        "protocol": "tcp",
        "facility": "local4",
        "app_name": "pki",
        "hostname": "ca-1",
    }
    data(api.put(SYSLOG, json=custom))
    without_port = data(api.put(SYSLOG, json={**custom, "port": None}))
    assert without_port["port"] == 514
    assert without_port["protocol"] == "tcp" and without_port["facility"] == "local4"
    defaults = {
        "enabled": False,
        "host": None,
        "port": 514,
        "protocol": "udp",
        "facility": "audit",
        "facility_code": 13,
        "app_name": "tessera",
        "hostname": None,
    }
    reset = data(api.put(SYSLOG, json=dict.fromkeys(custom)))
    assert {k: reset[k] for k in defaults} == defaults
    stored = data(api.get(SYSLOG))
    assert {k: stored[k] for k in defaults} == defaults
