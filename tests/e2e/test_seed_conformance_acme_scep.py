"""The UCM seed's sections "ACME Server" and "SCEP" (the management API), request for request
as the seed writes them, against a real server: statuses, the envelope, the fields' types,
errors in the seed's shape, and each organization seeing only its own (docs/native-api.md)."""

import re
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.acme_helpers import Acme, AcmeEnv
from tests.e2e.helpers import API, create_root, data, error, unique
from tests.e2e.test_inventory_isolation import foreign_admin_key
from tests.e2e.test_scep_protocol import (
    PENDING,
    Scep,
    csr_der,
    default_profile,
    new_client,
    pki_message,
    read_reply,
)
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
    gone = data(api.post(f"{API}/acme/accounts/{account_id}/deactivate"))
    assert gone == {**account, "status": "revoked"}  # RFC 8555 7.1.2: by the server


# --- SCEP ----------------------------------------------------------------------------------------

SEED_CONFIG = {
    "enabled": bool,
    "url": str,
    "ca_id": int,
    "ca_ident": str,
    "auto_approve": bool,
    "challenge_validity": int,
}


def queued(scep: Scep, challenge: str) -> str:
    """A PKCSReq left pending (auto_approve off); its transactionID."""
    client = new_client()
    sent = pki_message(client, scep.ra, csr_der(client, unique("seed-device"), challenge))
    assert read_reply(scep.post(sent), client, scep.ra).status == PENDING
    return sent.transaction_id


def test_scep_section_as_the_seed_writes_it(server: Server, api: httpx.Client) -> None:
    with default_profile(server, "Seed SCEP Root") as scep:
        body = {
            "enabled": True,
            "ca_id": scep.ca_id,
            "ca_ident": "ucm-ca",
            "auto_approve": False,
            "challenge_validity": 24,
        }
        updated = data(api.patch(f"{API}/scep/config", json=body))
        config = data(api.get(f"{API}/scep/config"))
        assert config == updated and {k: config[k] for k in body} == body
        assert config["url"] == "/scep/pkiclient.exe"
        for name, kind in SEED_CONFIG.items():
            assert type(config[name]) is kind, (name, config[name])

        shown = data(api.get(f"{API}/scep/challenge/{scep.ca_id}"))
        assert shown["ca_id"] == scep.ca_id and shown["challenge"] == scep.challenge
        response = api.post(f"{API}/scep/challenge/{scep.ca_id}/regenerate")
        fresh = data(response)["challenge"]
        assert isinstance(response.json()["message"], str)
        assert isinstance(fresh, str) and fresh != scep.challenge
        assert data(api.get(f"{API}/scep/challenge/{scep.ca_id}"))["challenge"] == fresh

        before = data(api.get(f"{API}/scep/stats"))
        approve_tid, reject_tid = queued(scep, fresh), queued(scep, fresh)
        pending, meta = listing(api.get(f"{API}/scep/requests", params={"status": "pending"}))
        assert meta["total"] == before["pending"] + 2
        rows = {r["transaction_id"]: r for r in pending}
        assert all(r["status"] == "pending" for r in pending)
        for row in (rows[approve_tid], rows[reject_tid]):
            assert is_int(row["id"]) and is_date(row["created_at"]) and row["decided_at"] is None
        _, meta = listing(api.get(f"{API}/scep/requests"))
        assert meta["total"] == before["total"] + 2

        approved = data(api.post(f"{API}/scep/{rows[approve_tid]['id']}/approve"))
        assert approved["status"] == "issued" and is_int(approved["certificate_id"])
        assert is_date(approved["decided_at"]) and approved["decided_by"] == "admin"
        reason = {"reason": "Invalid device"}
        rejected = data(api.post(f"{API}/scep/{rows[reject_tid]['id']}/reject", json=reason))
        assert rejected["status"] == "rejected" and rejected["reason"] == "Invalid device"

        stats = data(api.get(f"{API}/scep/stats"))
        assert all(is_int(v) for v in stats.values())
        assert stats["total"] == before["total"] + 2 and stats["pending"] == before["pending"]
        assert stats["issued"] == before["issued"] + 1
        assert stats["rejected"] == before["rejected"] + 1
        # UCM calls an issued request "approved": its clients filter and count by that name.
        assert stats["approved"] == stats["issued"]
        page = {"per_page": 100}
        by_ucm, _ = listing(api.get(f"{API}/scep/requests", params={"status": "approved", **page}))
        by_name, _ = listing(api.get(f"{API}/scep/requests", params={"status": "issued", **page}))
        assert by_ucm == by_name and approved["id"] in [r["id"] for r in by_ucm]

        # Errors, each in the seed's shape.
        error(api.post(f"{API}/scep/{rows[approve_tid]['id']}/approve"), 409)
        error(api.post(f"{API}/scep/{rows[reject_tid]['id']}/reject", json=reason), 409)
        error(api.post(f"{API}/scep/{UNKNOWN_ID}/approve"), 404)
        error(api.post(f"{API}/scep/{UNKNOWN_ID}/reject", json=reason), 404)
        error(api.get(f"{API}/scep/challenge/{UNKNOWN_ID}"), 404)
        error(api.post(f"{API}/scep/challenge/{UNKNOWN_ID}/regenerate"), 404)
        error(api.patch(f"{API}/scep/config", json={"challenge_validity": "a day"}), 422)
        with server.client(api_key="") as anonymous:
            error(anonymous.get(f"{API}/scep/config"), 401)
        with server.client(api_key=scoped_key(api, ["read:scep"])) as reader:
            assert data(reader.get(f"{API}/scep/config")) == config
            # Challenges are secrets: reading one takes write:scep, as in UCM.
            assert "write:scep" in error(reader.get(f"{API}/scep/challenge/{scep.ca_id}"), 403)
            error(reader.patch(f"{API}/scep/config", json={"enabled": False}), 403)
        assert data(api.get(f"{API}/scep/config")) == config


# --- organizations -------------------------------------------------------------------------------


def test_another_organization_sees_none_of_it(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    """Every count, listing and search answers for the caller's organization alone: an
    administrator of another one sees empty statistics while this one has certificates,
    CSRs, ACME accounts and orders, SCEP requests and users."""
    token = unique("iso")
    with default_profile(server, "Isolated SCEP Root") as scep:
        data(api.patch(f"{API}/scep/config", json={"auto_approve": False}))
        queued(scep, scep.challenge)
        ca_id = scep.ca_id
    client = acme_client(server, workdir)
    try:
        assert client.order(f"{token}.example.com").status_code == 201
    finally:
        client.close()
    account_id = int((client.kid or "").rsplit("/", 1)[1])
    user = {"username": token, "password": "pw-" + token}
    data(api.post(f"{API}/users", json=user), 201)
    request = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))[0]
    with server.client(api_key=foreign_admin_key(server)) as other:
        stats = data(other.get(f"{API}/dashboard/stats"))
        assert stats == dict.fromkeys(stats, 0)
        overview = data(other.get(f"{API}/stats/overview"))
        assert overview == {"total_cas": 0, "total_certs": 0, "acme_accounts": 0, "active_users": 1}
        assert data(other.get(f"{API}/dashboard/expiring-certs", params={"days": 3650})) == []
        assert data(other.get(f"{API}/dashboard/recent-cas")) == []
        trend = data(other.get(f"{API}/dashboard/certificate-trend", params={"days": 2}))
        assert all(t["issued"] == t["revoked"] == 0 for t in trend["trend"])
        activity = data(other.get(f"{API}/dashboard/activity", params={"limit": 100}))
        assert {r["resource_type"] for r in activity} <= {"user", "api_key"}
        found = data(other.get(f"{API}/search", params={"q": token}))
        assert found == {"certificates": [], "cas": [], "csrs": [], "users": []}
        acme = data(other.get(f"{API}/acme/stats"))
        assert (acme["total_accounts"], acme["total_orders"]) == (0, 0)
        assert listing(other.get(f"{API}/acme/accounts"))[1]["total"] == 0
        assert listing(other.get(f"{API}/acme/orders"))[1]["total"] == 0
        error(other.get(f"{API}/acme/accounts/{account_id}"), 404)
        scep_stats = data(other.get(f"{API}/scep/stats"))
        assert all(v == 0 for v in scep_stats.values())
        assert listing(other.get(f"{API}/scep/requests"))[1]["total"] == 0
        error(other.post(f"{API}/scep/{request['id']}/approve"), 404)
        error(other.post(f"{API}/scep/{request['id']}/reject", json={}), 404)
        error(other.get(f"{API}/scep/challenge/{ca_id}"), 404)
        assert data(other.get(f"{API}/scep/config"))["ca_id"] is None
    assert data(api.get(f"{API}/scep/requests", params={"status": "pending"}))[0] == request
