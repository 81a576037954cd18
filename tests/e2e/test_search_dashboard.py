"""Global search (/api/v2/search) and the dashboard (/api/v2/dashboard/..., /stats/overview)
against a real server. The module's server is shared, so counters are checked as deltas."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.accounts_helpers import key_for
from tests.e2e.acme_helpers import Acme, AcmeEnv
from tests.e2e.helpers import API, create_root, data, error, issue, unique
from tests.support import Server
from tests.tools import openssl_csr


@pytest.fixture(scope="module")
def root(server: Server) -> dict[str, Any]:
    with server.client() as api:
        return create_root(api, unique("Search Root"))


def search(api: httpx.Client, q: str, **params: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = data(
        api.get(f"{API}/search", params={"q": q, **params})
    )
    assert set(found) == {"certificates", "cas", "csrs", "users"}, found
    return found


def ids(rows: list[dict[str, Any]]) -> set[int]:
    return {r["id"] for r in rows}


def scoped_key(api: httpx.Client, permissions: list[str]) -> str:
    created = api.post(
        f"{API}/account/apikeys", json={"name": unique("k"), "permissions": permissions}
    )
    return str(data(created, 201)["key"])


def dashboard(api: httpx.Client, path: str, **params: Any) -> Any:
    return data(api.get(f"{API}/dashboard/{path}", params=params))


def today_trend(api: httpx.Client) -> dict[str, Any]:
    trend = dashboard(api, "certificate-trend", days=7)["trend"]
    assert [t["date"] for t in trend] == [
        (datetime.now(UTC).date() - timedelta(days=6 - i)).isoformat() for i in range(7)
    ]
    today: dict[str, Any] = trend[-1]
    return today


def test_search_finds_certificates_by_common_name_and_san(
    api: httpx.Client, root: dict[str, Any]
) -> None:
    token = uuid.uuid4().hex[:12]
    by_cn = issue(api, root["id"], f"web-{token}.example.test")
    by_san = issue(api, root["id"], "Plain Name", san=[f"dns:alt-{token}.example.test"])
    other = issue(api, root["id"], f"unrelated-{uuid.uuid4().hex[:8]}.example.test")

    found = search(api, token)
    assert ids(found["certificates"]) == {by_cn["id"], by_san["id"]}
    assert other["id"] not in ids(found["certificates"])
    # Case-insensitive, newest first, and the usual certificate fields.
    upper = search(api, f"ALT-{token.upper()}")["certificates"]
    assert [c["id"] for c in upper] == [by_san["id"]]
    assert [c["id"] for c in search(api, token)["certificates"]] == [by_san["id"], by_cn["id"]]
    assert upper[0]["status"] == "active" and upper[0]["common_name"] == "Plain Name"


def test_search_finds_cas_and_users(api: httpx.Client) -> None:
    token = uuid.uuid4().hex[:10]
    body = {"common_name": f"CA {token} Root", "name": f"Named {token}", "ca_type": "root"}
    ca = data(api.post(f"{API}/cas", json={**body, "key_algorithm": "EC", "key_size": 256}), 201)
    user = data(
        api.post(
            f"{API}/users",
            json={
                "username": f"user-{token}",
                "email": f"{token}-mail@example.test",
                "full_name": f"Ada Q{token}",
                "password": "a long enough password",
            },
        ),
        201,
    )
    found = search(api, token)
    assert ids(found["cas"]) == {ca["id"]} and found["cas"][0]["name"] == f"Named {token}"
    assert ids(found["users"]) == {user["id"]}
    assert found["certificates"] == [] and found["csrs"] == []
    # Each field on its own: the CA's common name, the user's e-mail and full name.
    assert ids(search(api, f"ca {token} root")["cas"]) == {ca["id"]}
    assert ids(search(api, f"{token}-mail@")["users"]) == {user["id"]}
    assert ids(search(api, f"ada q{token}")["users"]) == {user["id"]}


def test_searched_cas_carry_their_certificate_count(api: httpx.Client) -> None:
    """A CA found by search says how many certificates it issued, as the CA list does (the
    seed's certificates_count), not 0."""
    ca = create_root(api, unique("Counted Root"))
    for index in range(2):
        issue(api, ca["id"], f"counted-{index}-{uuid.uuid4().hex[:8]}.example.test")
    listed = data(api.get(f"{API}/cas", params={"per_page": 100}))
    assert [c["certificates_count"] for c in listed if c["id"] == ca["id"]] == [2]
    found = search(api, ca["common_name"])["cas"]
    assert [(c["id"], c["certificates_count"]) for c in found] == [(ca["id"], 2)]


def test_searched_csrs_are_the_csr_listing_rows(api: httpx.Client, workdir: Path) -> None:
    """Search answers each kind as its own listing does: a CSR found has the fields of a row
    of GET /csrs (`cn`, `descr`, `key_algorithm`, `has_private_key`, ...), as certificates
    and CAs found have those of theirs; it had a shorter shape of its own."""
    token = uuid.uuid4().hex[:12]
    _, csr = openssl_csr(workdir, f"/CN={token}-row.example.test")
    uploaded = data(api.post(f"{API}/csrs", json={"csr": csr.read_text()}), 201)
    listed = data(api.get(f"{API}/csrs", params={"status": "pending", "per_page": 100}))
    [row] = [r for r in listed if r["id"] == uploaded["id"]]
    assert search(api, token)["csrs"] == [row]


def test_search_folds_the_case_of_letters_beyond_ascii(
    api: httpx.Client, root: dict[str, Any], workdir: Path
) -> None:
    """SQLite's own lower() folds A-Z only: a certificate named "Ärztekammer" was found by
    neither "ärztekammer" nor its own spelling (the searched copy kept the "Ä", the term was
    lower-cased to "ä"), and CAs and CSRs alike; PostgreSQL found them all."""
    token = uuid.uuid4().hex[:8]
    ca = create_root(api, f"Örtliche Wurzel {token}")
    cert = issue(api, root["id"], f"Ärztekammer Köln {token}", san=[f"dns:{token}.example.test"])
    _, csr = openssl_csr(workdir, f"/CN={token}-csr.example.test")
    request = {"csr": csr.read_text(), "name": f"Übertragung {token}"}
    pending = data(api.post(f"{API}/csrs", json=request), 201)
    for spelling in (str, str.lower, str.upper):
        term = spelling(f"Ärztekammer Köln {token}")
        assert ids(search(api, term)["certificates"]) == {cert["id"]}, term
        listed = data(api.get(f"{API}/certificates", params={"search": term}))
        assert [c["id"] for c in listed] == [cert["id"]], term
        assert ids(search(api, spelling(f"Örtliche Wurzel {token}"))["cas"]) == {ca["id"]}
        assert ids(search(api, spelling(f"Übertragung {token}"))["csrs"]) == {pending["id"]}


def test_search_treats_like_wildcards_literally(api: httpx.Client, root: dict[str, Any]) -> None:
    token = uuid.uuid4().hex[:10]
    plain = issue(api, root["id"], f"wild{token}xy.example.test")
    for q in (f"wild%{token}", f"wil_{token}", "%", "_", "\\"):
        found = search(api, q)
        assert plain["id"] not in ids(found["certificates"]), q
    assert "%" not in "".join(c["common_name"] for c in search(api, "%")["certificates"])
    assert ids(search(api, f"wild{token}")["certificates"]) == {plain["id"]}


def test_search_odd_terms_and_short_terms(api: httpx.Client, root: dict[str, Any]) -> None:
    token = uuid.uuid4().hex[:10]
    odd = issue(api, root["id"], f'zq "{token}" AND NEAR(x)*')
    # Quotes and full-text query syntax are plain characters to search for.
    assert ids(search(api, f'"{token}" AND NEAR')["certificates"]) == {odd["id"]}
    for q in ('"', "'", "*", "NEAR(", "a OR b", "ü", "x" * 200):
        search(api, q)
    # Shorter than a trigram: still a substring match ("zq" is never in a hex token).
    short = search(api, "zq", limit=50)["certificates"]
    assert odd["id"] in ids(short)
    assert all("zq" in (c["common_name"] + " ".join(c["san"])).lower() for c in short)
    # A deleted certificate is no longer found.
    assert api.delete(f"{API}/certificates/{odd['id']}").status_code == 204
    assert search(api, token)["certificates"] == []


def test_search_limit_per_category(api: httpx.Client, root: dict[str, Any]) -> None:
    token = uuid.uuid4().hex[:10]
    made = [issue(api, root["id"], f"n{i}-{token}.example.test")["id"] for i in range(7)]
    assert [c["id"] for c in search(api, token)["certificates"]] == sorted(made, reverse=True)[:5]
    assert ids(search(api, token, limit=50)["certificates"]) == set(made)
    assert len(search(api, token, limit=2)["certificates"]) == 2


def test_search_rejects_bad_queries(api: httpx.Client) -> None:
    error(api.get(f"{API}/search"), 422)
    error(api.get(f"{API}/search", params={"q": ""}), 422)
    error(api.get(f"{API}/search", params={"q": "   "}), 400)
    error(api.get(f"{API}/search", params={"q": "x" * 201}), 422)
    error(api.get(f"{API}/search", params={"q": "abc", "limit": 0}), 422)
    error(api.get(f"{API}/search", params={"q": "abc", "limit": 51}), 422)
    error(api.get(f"{API}/search", params={"q": "abc", "limit": "many"}), 422)


def test_viewer_key_sees_only_certificates(
    server: Server, api: httpx.Client, root: dict[str, Any]
) -> None:
    token = uuid.uuid4().hex[:10]
    cert = issue(api, root["id"], f"viewer-{token}.example.test")
    ca = create_root(api, f"Viewer {token} Root")
    user = data(
        api.post(f"{API}/users", json={"username": f"viewer-{token}", "password": "pw-" + token}),
        201,
    )
    assert ids(search(api, token)["cas"]) == {ca["id"]}
    assert ids(search(api, token)["users"]) == {user["id"]}

    with server.client(api_key=scoped_key(api, ["read:certificates"])) as viewer:
        found = search(viewer, token)
        assert ids(found["certificates"]) == {cert["id"]}
        assert found["cas"] == [] and found["csrs"] == [] and found["users"] == []
    with server.client(api_key=scoped_key(api, ["read:cas"])) as ca_reader:
        found = search(ca_reader, token)
        assert found["certificates"] == [] and ids(found["cas"]) == {ca["id"]}
    with server.client(api_key=scoped_key(api, ["read:templates"])) as neither:
        error(neither.get(f"{API}/search", params={"q": token}), 403)
    with server.client(api_key="") as anonymous:
        error(anonymous.get(f"{API}/search", params={"q": token}), 401)


def test_dashboard_numbers_follow_issuance_and_revocation(
    api: httpx.Client, root: dict[str, Any]
) -> None:
    before = dashboard(api, "stats")
    overview_before = data(api.get(f"{API}/stats/overview"))
    trend_before = today_trend(api)
    assert set(before) == {
        "total_certificates",
        "active_certificates",
        "expired_certificates",
        "revoked_certificates",
        "expiring_soon",
        "total_cas",
        "total_csrs",
        "pending_csrs",
    }

    long_lived = issue(api, root["id"], unique("dash-long") + ".example.test", validity_days=200)
    short = issue(api, root["id"], unique("dash-short") + ".example.test", validity_days=10)
    revoked = issue(api, root["id"], unique("dash-revoked") + ".example.test")
    data(api.post(f"{API}/certificates/{revoked['id']}/revoke", json={"reason": "superseded"}))
    create_root(api, unique("Dash Root"))

    after = dashboard(api, "stats")
    delta = {k: after[k] - before[k] for k in before}
    assert delta == {
        "total_certificates": 3,
        "active_certificates": 2,
        "expired_certificates": 0,
        "revoked_certificates": 1,
        "expiring_soon": 1,
        "total_cas": 1,
        "total_csrs": 0,
        "pending_csrs": 0,
    }
    # The dashboard and the certificate statistics count the same way.
    certs = data(api.get(f"{API}/certificates/stats"))
    assert (certs["total"], certs["revoked"], certs["expiring"]) == (
        after["total_certificates"],
        after["revoked_certificates"],
        after["expiring_soon"],
    )

    overview = data(api.get(f"{API}/stats/overview"))
    assert overview["total_certs"] - overview_before["total_certs"] == 3
    assert overview["total_cas"] - overview_before["total_cas"] == 1
    assert overview["acme_accounts"] == overview_before["acme_accounts"]
    assert overview["total_certs"] == after["total_certificates"]

    trend_after = today_trend(api)
    assert trend_after["issued"] - trend_before["issued"] == 3
    assert trend_after["revoked"] - trend_before["revoked"] == 1
    assert long_lived["id"] != short["id"]


def test_overview_counts_active_users(api: httpx.Client) -> None:
    before = data(api.get(f"{API}/stats/overview"))["active_users"]
    assert before >= 1  # the admin
    token = uuid.uuid4().hex[:8]
    for role in ("viewer", "operator"):
        body = {"username": f"{role}-{token}", "password": "pw-" + token, "role": role}
        data(api.post(f"{API}/users", json=body), 201)
    assert data(api.get(f"{API}/stats/overview"))["active_users"] == before + 2


def acme_account(server: Server, work: Path) -> Acme:
    """A new ACME account, made by the ACME tests' raw client (registering needs neither
    their DNS server nor challenge ports, so those are left out)."""
    env = AcmeEnv(server, None, 0, 0, {}, work)  # type: ignore[arg-type]
    client = Acme(env)
    assert client.register().status_code == 201
    return client


def test_overview_counts_acme_accounts(server: Server, api: httpx.Client, workdir: Path) -> None:
    """Every account of the organization counts, deactivated ones too, as in the ACME stats'
    total_accounts."""
    before = data(api.get(f"{API}/stats/overview"))["acme_accounts"]
    assert before == data(api.get(f"{API}/acme/stats"))["total_accounts"]
    accounts = [acme_account(server, workdir) for _ in range(2)]
    gone = accounts[1].post(accounts[1].kid or "", {"status": "deactivated"})
    assert gone.json()["status"] == "deactivated"
    for client in accounts:
        client.close()
    overview = data(api.get(f"{API}/stats/overview"))
    assert overview["acme_accounts"] == before + 2
    assert overview["acme_accounts"] == data(api.get(f"{API}/acme/stats"))["total_accounts"]


def test_expiring_certificates(api: httpx.Client, root: dict[str, Any]) -> None:
    soon = issue(api, root["id"], unique("expiring") + ".example.test", validity_days=10)
    later = issue(api, root["id"], unique("later") + ".example.test", validity_days=60)
    gone = issue(api, root["id"], unique("revoked-soon") + ".example.test", validity_days=10)
    data(api.post(f"{API}/certificates/{gone['id']}/revoke", json={}))

    within_30 = dashboard(api, "expiring-certs", days=30, limit=100)
    assert soon["id"] in ids(within_30)
    assert later["id"] not in ids(within_30) and gone["id"] not in ids(within_30)
    row = next(r for r in within_30 if r["id"] == soon["id"])
    assert row["days_remaining"] in (9, 10) and row["status"] == "active"
    ends = [r["valid_until"] for r in within_30]
    assert ends == sorted(ends)
    assert soon["id"] not in ids(dashboard(api, "expiring-certs", days=5, limit=100))
    assert later["id"] in ids(dashboard(api, "expiring-certs", days=90, limit=100))
    assert len(dashboard(api, "expiring-certs", days=90, limit=1)) == 1
    error(api.get(f"{API}/dashboard/expiring-certs", params={"days": 0}), 422)


def test_recent_cas_and_activity(api: httpx.Client, root: dict[str, Any]) -> None:
    first = create_root(api, unique("Recent A"))
    second = create_root(api, unique("Recent B"))
    recent = dashboard(api, "recent-cas", limit=2)
    assert [c["id"] for c in recent] == [second["id"], first["id"]]

    cert = issue(api, root["id"], unique("activity") + ".example.test")
    response = api.get(f"{API}/dashboard/activity", params={"limit": 3})
    assert len(data(response)) == 3
    assert response.json()["meta"] == {"limit": 3, "offset": 0, "has_more": True}
    # Background jobs (CRL publication for the CAs just made, OCSP signers) write audit rows
    # of their own at any moment: the issuance is looked for among the newest rows, not
    # assumed to be the newest.
    rows = dashboard(api, "activity", limit=50)
    mine = [
        r
        for r in rows
        if r["action"] == "certificate.issue" and r["resource_id"] == str(cert["id"])
    ]
    assert len(mine) == 1 and mine[0]["username"] == "admin"
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    # An offset continues the first page, compared on a snapshot no new row interrupted.
    for _ in range(10):
        first_page = dashboard(api, "activity", limit=4)
        shifted = dashboard(api, "activity", limit=3, offset=1)
        if dashboard(api, "activity", limit=4) == first_page:
            break
    assert [r["id"] for r in shifted] == [r["id"] for r in first_page[1:]]


def test_dashboard_permissions(server: Server, api: httpx.Client) -> None:
    with server.client(api_key=scoped_key(api, ["read:certificates"])) as reader:
        assert "total_certificates" in dashboard(reader, "stats")
        assert isinstance(dashboard(reader, "expiring-certs"), list)
        assert "total_certs" in data(reader.get(f"{API}/stats/overview"))
        assert "read:audit" in error(reader.get(f"{API}/dashboard/activity"), 403)
        assert "read:cas" in error(reader.get(f"{API}/dashboard/recent-cas"), 403)
    with server.client(api_key=scoped_key(api, ["read:cas"])) as ca_reader:
        for path in ("stats", "system-status", "certificate-trend", "activity"):
            error(ca_reader.get(f"{API}/dashboard/{path}"), 403)
        error(ca_reader.get(f"{API}/stats/overview"), 403)
    with server.client(api_key=scoped_key(api, ["read:certificates", "read:audit"])) as auditor:
        assert isinstance(dashboard(auditor, "activity"), list)
    with server.client(api_key="") as anonymous:
        error(anonymous.get(f"{API}/dashboard/stats"), 401)


def test_system_status(api: httpx.Client) -> None:
    status = dashboard(api, "system-status")
    assert status["status"] == "healthy" and status["database"] == "connected"
    disk = status["disk_usage"]
    assert disk["total_bytes"] >= disk["used_bytes"] > 0
    assert 0 < disk["percent"] <= 100
    assert disk["total"][-2:] in ("KB", "MB", "GB", "TB", "PB")
    assert disk["total"][:-2].replace(".", "").isdigit()
    health = api.get(f"{API}/health").json()
    assert status["version"] == health["version"]
    assert status["uptime_seconds"] >= 0
    hours, minutes, seconds = status["uptime"].split(", ")[-1].split(":")
    assert int(minutes) < 60 and int(seconds) < 60 and int(hours) < 24


def test_certificate_trend_shape(api: httpx.Client) -> None:
    trend = dashboard(api, "certificate-trend")["trend"]
    assert len(trend) == 30 and trend[-1]["date"] == datetime.now(UTC).date().isoformat()
    assert all(set(t) == {"date", "issued", "revoked"} for t in trend)
    assert len(dashboard(api, "certificate-trend", days=1)["trend"]) == 1
    error(api.get(f"{API}/dashboard/certificate-trend", params={"days": 0}), 422)
    error(api.get(f"{API}/dashboard/certificate-trend", params={"days": 10_000}), 422)


def test_empty_query_parameters_take_the_defaults(api: httpx.Client, root: dict[str, Any]) -> None:
    """A form with its boxes cleared sends `?days=&limit=`: that is the default, as on every
    listing (docs/native-api.md), and as UCM's Flask `type=int` reads it. It was a 422."""
    token = uuid.uuid4().hex[:10]
    for i in range(11):  # more than either default limit
        issue(api, root["id"], f"e{i}-{token}.example.test", validity_days=5)
    for _ in range(6):
        create_root(api, unique("Empty Params Root"))
    found = search(api, token, limit="")
    assert len(found["certificates"]) == 5  # the seed's default per category
    assert dashboard(api, "expiring-certs", days="", limit="") == dashboard(api, "expiring-certs")
    assert len(dashboard(api, "expiring-certs", days="", limit="")) == 10
    assert dashboard(api, "recent-cas", limit="") == dashboard(api, "recent-cas")
    assert len(dashboard(api, "recent-cas", limit="")) == 5
    trend = dashboard(api, "certificate-trend", days="")["trend"]
    assert [t["date"] for t in trend] == [
        t["date"] for t in dashboard(api, "certificate-trend")["trend"]
    ]
    assert len(trend) == 30
    response = api.get(f"{API}/dashboard/activity", params={"limit": "", "offset": ""})
    assert len(data(response)) == 20
    assert response.json()["meta"]["limit"] == 20 and response.json()["meta"]["offset"] == 0
    # A value that is there but wrong is still refused.
    error(api.get(f"{API}/dashboard/recent-cas", params={"limit": "five"}), 422)


def test_counts_follow_the_callers_permissions(server: Server, api: httpx.Client) -> None:
    """A count tells what a listing's total would: the dashboard and the overview show the
    CAs, CSRs, ACME accounts and users only to whom may read them (a viewer, without
    read:users or read:acme, saw how many users and ACME accounts there are). The fields
    stay, null: a client reads the seed's shape, and 0 would be a false figure."""
    stats, overview = dashboard(api, "stats"), data(api.get(f"{API}/stats/overview"))
    assert all(isinstance(n, int) and not isinstance(n, bool) for n in stats.values())
    assert all(isinstance(n, int) and not isinstance(n, bool) for n in overview.values())
    hidden_stats = {"total_cas", "total_csrs", "pending_csrs"}
    hidden_overview = {"total_cas", "acme_accounts", "active_users"}
    with server.client(api_key=scoped_key(api, ["read:certificates"])) as reader:
        mine = dashboard(reader, "stats")
        assert mine == {k: None if k in hidden_stats else v for k, v in stats.items()}
        mine = data(reader.get(f"{API}/stats/overview"))
        assert mine == {k: None if k in hidden_overview else v for k, v in overview.items()}
    # The viewer role reads certificates, CAs and CSRs, not users nor ACME.
    token = uuid.uuid4().hex[:8]
    body = {"username": f"viewer-{token}", "password": "pw-" + token, "role": "viewer"}
    data(api.post(f"{API}/users", json=body), 201)
    viewer_key = key_for(server, body["username"], body["password"])
    overview = data(api.get(f"{API}/stats/overview"))
    with server.client(api_key=viewer_key) as viewer:
        assert dashboard(viewer, "stats") == dashboard(api, "stats")
        seen = data(viewer.get(f"{API}/stats/overview"))
        assert seen == {**overview, "acme_accounts": None, "active_users": None}
    granted = ["read:certificates", "read:users", "read:acme", "read:cas"]
    with server.client(api_key=scoped_key(api, granted)) as reader:
        assert data(reader.get(f"{API}/stats/overview")) == overview
