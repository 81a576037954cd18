"""Platform audit dialect (seed 004): /api/v1/audit-events with every filter, ordering and
limit/offset, one event by id, and the CSV export with X-Row-Limit, time filters and the
redaction of sensitive parameters; errors in the dialect's {"detail": ...} shape."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import data, unique
from tests.support import Server

V1 = "/api/v1"
EVENTS = f"{V1}/audit-events"
EXPORT = f"{V1}/audit/export"


def events(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get(EVENTS, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}, body
    return dict(body)


def detail(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"} and body["detail"], body
    assert "Traceback" not in response.text
    return body["detail"]


def template(api: httpx.Client, name: str, request_id: str | None = None) -> dict[str, Any]:
    headers = {"X-Request-ID": request_id} if request_id else {}
    body = {"name": name, "validity_days": 30}
    return dict(data(api.post("/api/v2/templates", json=body, headers=headers), 201))


def test_event_shape_and_get_by_id(api: httpx.Client) -> None:
    created = template(api, unique("v1-shape"))
    listed = events(api, action="template.create", limit=1)
    (item,) = listed["items"]
    assert item["entity_type"] == "template" and item["entity_id"] == str(created["id"])
    assert item["actor_type"] == "user" and item["actor_name"] == "admin"
    assert item["is_success"] is True and item["is_active"] is True
    assert datetime.fromisoformat(item["occurred_at"]).tzinfo is not None
    assert listed["limit"] == 1 and listed["offset"] == 0 and listed["total"] >= 1
    one = api.get(f"{EVENTS}/{item['id']}")
    assert one.status_code == 200 and one.json() == item
    # The same row as the native API's.
    native = data(api.get(f"/api/v2/audit/logs/{item['id']}"))
    assert native["action"] == item["action"] and native["resource_id"] == item["entity_id"]


def test_every_filter(api: httpx.Client, server: Server) -> None:
    request_id = unique("req")
    created = template(api, unique("v1-filter"), request_id=request_id)
    by_request = events(api, request_id=request_id)
    assert [i["entity_id"] for i in by_request["items"]] == [str(created["id"])]
    admin_id = by_request["items"][0]["actor_id"]
    assert admin_id and admin_id.isdigit()
    mine = events(api, actor_id=admin_id, limit=200)
    assert mine["items"] and {i["actor_id"] for i in mine["items"]} == {admin_id}
    assert events(api, actor_id="not-a-user")["total"] == 0
    assert events(api, actor_id="²")["total"] == 0  # a digit to str.isdigit, not to int()
    system = events(api, actor_type="system", limit=200)
    assert system["items"] and {i["actor_type"] for i in system["items"]} == {"system"}
    users = events(api, actor_type="user", limit=200)
    assert {i["actor_type"] for i in users["items"]} == {"user"}
    creates = events(api, action="template.create", entity_type="template", limit=200)
    assert {(i["action"], i["entity_type"]) for i in creates["items"]} == {
        ("template.create", "template")
    }
    assert events(api, entity_type=unique("nothing"))["total"] == 0
    with server.client(api_key="") as anonymous:
        anonymous.post(
            "/api/v2/auth/login/password", json={"username": unique("v1-bad"), "password": "x"}
        )
    failed = events(api, is_success="false", limit=200)
    assert failed["items"] and not any(i["is_success"] for i in failed["items"])
    assert all(i["is_success"] for i in events(api, is_success="true", limit=200)["items"])
    # No row is ever soft-deleted: all are active.
    assert events(api, is_active="true")["total"] == events(api)["total"]
    assert events(api, is_active="false")["total"] == 0
    # A success carries its route's status (a template is created with 201); the failed
    # login above is recorded with 401. The filter is exact.
    assert by_request["items"][0]["status_code"] == 201
    coded = events(api, status_code=401, limit=200)
    assert coded["items"] and all(i["status_code"] == 401 for i in coded["items"])
    assert any(i["action"] == "auth.login" for i in coded["items"])
    assert events(api, status_code=201, request_id=request_id)["total"] == 1


def test_ordering_limit_and_offset(api: httpx.Client) -> None:
    for n in range(3):
        template(api, unique(f"v1-order-{n}"))
    newest = events(api, limit=200)["items"]
    stamps = [i["occurred_at"] for i in newest]
    assert stamps == sorted(stamps, reverse=True)  # default: occurred_at desc
    oldest = events(api, order_dir="asc", limit=200)["items"]
    assert [i["occurred_at"] for i in oldest] == sorted(stamps)
    by_action = events(api, order_by="action", order_dir="asc", limit=200)["items"]
    actions = [i["action"] for i in by_action]
    assert actions == sorted(actions)
    by_id = events(api, order_by="id", order_dir="desc", limit=200)["items"]
    assert [i["id"] for i in by_id] == sorted((i["id"] for i in by_id), reverse=True)
    total = events(api)["total"]
    seen: list[int] = []
    for offset in range(0, total, 4):
        page = events(api, order_by="id", order_dir="asc", limit=4, offset=offset)
        assert page["limit"] == 4 and page["offset"] == offset and page["total"] >= total
        seen.extend(i["id"] for i in page["items"])
    assert seen[:total] == sorted(seen[:total]) and len(set(seen)) == len(seen)
    assert events(api, offset=total + 100)["items"] == []


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"offset": -1}, 422),
        ({"order_by": "password"}, 422),
        ({"order_dir": "sideways"}, 422),
        ({"is_success": "perhaps"}, 422),
        ({"status_code": 99}, 422),
        ({"status_code": "ok"}, 422),
        ({"actorid": "1"}, 400),
    ],
)
def test_bad_list_input(api: httpx.Client, params: dict[str, Any], status: int) -> None:
    detail(api.get(EVENTS, params=params), status)


def test_get_errors(api: httpx.Client) -> None:
    assert "not found" in detail(api.get(f"{EVENTS}/2000000000"), 404)
    detail(api.get(f"{EVENTS}/abc"), 422)


def test_export_csv_with_row_limit(api: httpx.Client) -> None:
    for n in range(3):
        template(api, unique(f"v1-export-{n}"))
    response = api.get(EXPORT, params={"max_rows": 2})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="audit-log.csv"'
    assert response.headers["x-row-limit"] == "2"
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["timestamp", "user", "action", "resource", "detail"]
    assert len(rows) == 3
    default = api.get(EXPORT)
    assert default.headers["x-row-limit"] == "100000"
    table = list(csv.DictReader(io.StringIO(default.text)))
    creates = [r for r in table if r["action"] == "template.create"]
    assert creates and creates[0]["resource"].startswith("template:")
    assert json.loads(creates[0]["detail"])["name"].startswith("v1-export-")
    datetime.fromisoformat(table[0]["timestamp"])


def test_export_time_filters(api: httpx.Client) -> None:
    template(api, unique("v1-time"))
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    after_future = list(
        csv.DictReader(io.StringIO(api.get(EXPORT, params={"started_after": future}).text))
    )
    assert after_future == []
    before_past = api.get(EXPORT, params={"started_before": past}).text
    assert list(csv.DictReader(io.StringIO(before_past))) == []
    window = api.get(EXPORT, params={"started_after": past, "started_before": future}).text
    assert len(list(csv.DictReader(io.StringIO(window)))) >= 1
    # "after" is strict: an event exactly at the bound is not included.
    newest = events(api, limit=1)["items"][0]
    exact = api.get(
        EXPORT, params={"started_after": newest["occurred_at"], "started_before": future}
    ).text
    assert newest["occurred_at"] not in exact


def test_export_redacts_sensitive_parameters(api: httpx.Client) -> None:
    marker = unique("v1-redact")
    name = f"{marker} https://hook.test/cb?token=s3cr3t&api_key=k3y&PASSWORD=pw&key=abc&mode=1"
    template(api, name)
    table = list(csv.DictReader(io.StringIO(api.get(EXPORT).text)))
    (row,) = [r for r in table if marker in r["detail"] and r["action"] == "template.create"]
    for secret in ("s3cr3t", "k3y", "pw&", "abc"):
        assert secret not in row["detail"], row
    for kept in ("token=***", "api_key=***", "PASSWORD=***", "key=***", "mode=1"):
        assert kept in row["detail"], row
    # The stored row is untouched: redaction is for the export.
    native = data(api.get("/api/v2/audit/logs", params={"search": "s3cr3t"}))
    assert native


@pytest.mark.parametrize(
    "params",
    [
        {"max_rows": 0},
        {"max_rows": 1_000_001},
        {"started_after": "last tuesday"},
        {"started_before": "2026-99-01"},
        {"format": "csv"},
    ],
)
def test_bad_export_input(api: httpx.Client, params: dict[str, Any]) -> None:
    response = api.get(EXPORT, params=params)
    assert response.status_code in (400, 422), response.text
    detail(response, response.status_code)


def test_v1_needs_read_audit(server: Server) -> None:
    with server.client(api_key="") as anonymous:
        detail(anonymous.get(EVENTS), 401)
        detail(anonymous.get(EXPORT), 401)
    with server.client(api_key="not-a-key") as wrong:
        detail(wrong.get(EVENTS), 401)
    bearer = {"Authorization": f"Bearer {server.api_key}"}
    with server.client(api_key="") as client:
        assert client.get(EVENTS, headers=bearer).status_code == 200


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("name", ["started_after", "started_before"])
def test_export_moments_outside_the_calendar_are_400(
    api: httpx.Client, name: str, moment: str
) -> None:
    """Their UTC falls in year 0 or 10000: refused before the CSV starts, never a 200 cut
    short."""
    message = str(detail(api.get(EXPORT, params={name: moment}), 400))
    assert name in message and "range" in message, message


def test_export_after_the_last_moment_is_empty(api: httpx.Client) -> None:
    last = "9999-12-31T23:59:59.999999Z"
    response = api.get(EXPORT, params={"started_after": last})
    assert response.status_code == 200, response.text
    assert list(csv.DictReader(io.StringIO(response.text))) == []
    everything = api.get(EXPORT, params={"started_before": last})
    assert len(list(csv.DictReader(io.StringIO(everything.text)))) > 0
