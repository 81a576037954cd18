"""The UCM seed's sections "ACME Server" and "SCEP" (the management API), request for request
as the seed writes them, against a real server: statuses, the envelope, the fields' types,
errors in the seed's shape, and each organization seeing only its own (docs/native-api.md)."""

import re
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.acme_helpers import Acme, AcmeEnv
from tests.e2e.helpers import API, create_root, data, error, unique
from tests.support import Server

DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UNKNOWN_ID = 2_000_000_000


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_date(value: Any) -> bool:
    return isinstance(value, str) and DATE.match(value) is not None


def listing(response: httpx.Response) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = data(response)
    assert set(response.json()) == {"data", "meta"}, response.json()
    meta = response.json()["meta"]
    assert set(meta) == {"page", "per_page", "total"} and all(map(is_int, meta.values()))
    return rows, meta


def acme_client(server: Server, work: Path) -> Acme:
    """The ACME tests' raw client, registered (no DNS server or challenge ports needed)."""
    client = Acme(AcmeEnv(server, None, 0, 0, {}, work))  # type: ignore[arg-type]
    assert client.register(contact=[f"mailto:{unique('seed')}@example.com"]).status_code == 201
    return client


def scoped_key(api: httpx.Client, permissions: list[str]) -> str:
    body = {"name": unique("k"), "permissions": permissions}
    return str(data(api.post(f"{API}/account/apikeys", json=body), 201)["key"])


# --- ACME Server ---------------------------------------------------------------------------------


def test_acme_section_as_the_seed_writes_it(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = create_root(api, unique("Seed ACME Root"))
    body = {"enabled": True, "issuing_ca_id": root["id"], "validity_days": 90}
    response = api.patch(f"{API}/acme/settings", json={**body, "require_approval": False})
    updated = data(response)
    assert isinstance(response.json()["message"], str)
    settings = data(api.get(f"{API}/acme/settings"))
    assert settings == updated
    assert {k: settings[k] for k in body} == body and settings["require_approval"] is False
    assert is_date(settings["updated_at"])

    before = data(api.get(f"{API}/acme/stats"))
    client = acme_client(server, workdir)
    try:
        ordered = client.order(f"{unique('a')}.example.com", f"{unique('b')}.example.com")
        assert ordered.status_code == 201, ordered.text
    finally:
        client.close()
    account_id = int((client.kid or "").rsplit("/", 1)[1])

    stats = data(api.get(f"{API}/acme/stats"))
    assert all(is_int(v) for k, v in stats.items() if not k.endswith("_by_status"))
    assert stats["total_accounts"] == before["total_accounts"] + 1
    assert stats["active_accounts"] == before["active_accounts"] + 1
    assert stats["total_orders"] == before["total_orders"] + 1
    assert stats["pending_orders"] == before["pending_orders"] + 1
    assert stats["total_orders"] == sum(stats["orders_by_status"].values())
    parts = ("pending", "processing", "valid", "invalid")
    assert stats["total_orders"] == sum(stats[f"{p}_orders"] for p in parts)

    accounts, meta = listing(api.get(f"{API}/acme/accounts"))
    assert meta["total"] == stats["total_accounts"]
    [account] = [a for a in accounts if a["id"] == account_id]
    assert account["status"] == "valid" and account["orders_count"] == 1
    assert is_date(account["created_at"]) and account["terms_agreed"] is True
    # The account alone is the row the listing shows, its orders counted too.
    assert data(api.get(f"{API}/acme/accounts/{account_id}")) == account

    orders, meta = listing(api.get(f"{API}/acme/orders"))
    assert meta["total"] == stats["total_orders"]
    [order] = [o for o in orders if o["account_id"] == account_id]
    assert is_int(order["id"]) and order["status"] == "pending"
    assert is_date(order["created_at"]) and is_date(order["expires_at"])
    assert order["certificate_id"] is None and order["awaiting_approval"] is False
    assert data(api.get(f"{API}/acme/orders/{order['id']}")) == order
    mine, _ = listing(api.get(f"{API}/acme/orders", params={"account_id": account_id}))
    assert mine == [order]

    # Let's Encrypt proxy: not built, said so in the error shape.
    proxy = {"email": "admin@example.com", "agree_tos": True}
    assert "not built" in error(api.post(f"{API}/acme/proxy/register", json=proxy), 501)
    # Errors, each in the seed's shape.
    error(api.get(f"{API}/acme/accounts/{UNKNOWN_ID}"), 404)
    error(api.get(f"{API}/acme/orders/{UNKNOWN_ID}"), 404)
    error(api.post(f"{API}/acme/orders/{UNKNOWN_ID}/approve"), 404)
    error(api.patch(f"{API}/acme/settings", json={"validity_days": "ninety"}), 422)
    with server.client(api_key="") as anonymous:
        error(anonymous.get(f"{API}/acme/stats"), 401)
    with server.client(api_key=scoped_key(api, ["read:certificates"])) as reader:
        for path in ("settings", "stats", "accounts", "orders", "eab"):
            assert "read:acme" in error(reader.get(f"{API}/acme/{path}"), 403)
    with server.client(api_key=scoped_key(api, ["read:acme"])) as acme_reader:
        assert data(acme_reader.get(f"{API}/acme/accounts/{account_id}")) == account
        error(acme_reader.patch(f"{API}/acme/settings", json={"enabled": False}), 403)
        error(acme_reader.post(f"{API}/acme/proxy/register", json=proxy), 403)
