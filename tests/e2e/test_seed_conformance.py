"""The UCM seed's sections "Certificate Authorities", "Certificates", "Certificate Signing
Requests" and "Templates", request for request as the seed writes them, against a real
server: statuses, the envelope and the fields' types (docs/native-api.md)."""

from typing import Any

import httpx
import pytest

from tests.e2e.helpers import API, create_root, data, error, issue, unique
from tests.support import Server
from tests.tools import openssl


@pytest.fixture(scope="module")
def root(server: Server) -> dict[str, Any]:
    with server.client() as client:
        return create_root(client, unique("Seed Root"))


# --- listings ------------------------------------------------------------------------------------


def _listing(api: httpx.Client, path: str, params: dict[str, str]) -> tuple[list[Any], Any]:
    response = api.get(path, params=params)
    return data(response), response.json()["meta"]


@pytest.mark.parametrize(
    ("path", "filters", "default_per_page"),
    [
        ("/certificates", ("status", "ca_id", "search"), 50),
        ("/cas", (), 20),
        ("/cas/ROOT/certificates", ("status",), 50),
        ("/csrs", ("status",), 20),
        ("/csrs/history", (), 20),
    ],
)
def test_empty_query_parameters_are_not_sent(
    api: httpx.Client,
    root: dict[str, Any],
    path: str,
    filters: tuple[str, ...],
    default_per_page: int,
) -> None:
    """A form with its boxes cleared sends every parameter empty (`?ca_id=&page=`): that is
    no filter and the default page, on every listing, as `status=` already was."""
    issue(api, root["id"], unique("listed") + ".example.com")
    url = API + path.replace("ROOT", str(root["id"]))
    rows, meta = _listing(api, url, {})
    empty = {name: "" for name in (*filters, "page", "per_page")}
    rows_empty, meta_empty = _listing(api, url, empty)
    assert meta == meta_empty == {"page": 1, "per_page": default_per_page, "total": meta["total"]}
    assert rows_empty == rows


# --- bulk operations -----------------------------------------------------------------------------

UNKNOWN_ID = 2_000_000_000


@pytest.mark.parametrize("kind", ["cas", "certificates", "csrs", "templates"])
def test_bulk_delete_says_why_each_id_failed(api: httpx.Client, kind: str) -> None:
    """Every bulk delete answers the seed's {"success", "failed"} with the same `errors`
    beside it: one reason per failed id, and a message."""
    response = api.post(f"{API}/{kind}/bulk/delete", json={"ids": [UNKNOWN_ID]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "message"} and isinstance(body["message"], str)
    assert set(body["data"]) == {"success", "failed", "errors"}, body
    assert body["data"]["success"] == [] and body["data"]["failed"] == [UNKNOWN_ID]
    [reason] = body["data"]["errors"]
    assert reason["id"] == UNKNOWN_ID and "not found" in reason["error"], reason


# --- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/certificates/bulk/revoke", {"ids": [True], "reason": "superseded"}, "ids.0"),
        ("/certificates/bulk/delete", {"ids": [True]}, "ids.0"),
        ("/cas/bulk/delete", {"ids": [True]}, "ids.0"),
        ("/templates/bulk/delete", {"ids": [True]}, "ids.0"),
        ("/csrs/bulk/sign", {"ids": [1], "ca_id": True}, "ca_id"),
        (
            "/certificates",
            {"common_name": "t.example.com", "ca_id": "ROOT", "validity_days": True},
            "validity_days",
        ),
        ("/certificates", {"common_name": "t.example.com", "ca_id": True}, "ca_id"),
        ("/cas", {"common_name": "Seed Bool CA", "key_size": True}, "key_size"),
        ("/certificates/CERT/renew", {"validity_days": True}, "validity_days"),
    ],
)
def test_true_is_no_integer(
    api: httpx.Client, root: dict[str, Any], path: str, body: dict[str, Any], field: str
) -> None:
    """The seed's ids, days and sizes are integers. JSON true was read as 1: {"ids": [true]}
    revoked or deleted row 1 (the server's own TLS certificate, the first template), and
    validity_days true issued a one-day certificate. Now a 422 naming the field, and nothing
    written."""
    cert = issue(api, root["id"], unique("kept") + ".example.com")
    body = {k: root["id"] if v == "ROOT" else v for k, v in body.items()}
    before = (_everything(api), data(api.get(f"{API}/certificates/stats")))
    response = api.post(API + path.replace("CERT", str(cert["id"])), json=body)
    assert field in error(response, 422)
    assert (_everything(api), data(api.get(f"{API}/certificates/stats"))) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/acme/settings", {"validity_days": True}, "validity_days"),
        ("/scep/config", {"challenge_validity": True}, "challenge_validity"),
        # true named CA 1 and template 1: the template was taken as the profile's
        ("/scep/config", {"ca_id": True}, "ca_id"),
        ("/scep/config", {"template_id": True}, "template_id"),
        ("/scep/config", {"next_ca_id": True}, "next_ca_id"),
        ("/system/audit/retention", {"retention_days": True}, "retention_days"),
        ("/system/audit/syslog", {"port": True}, "port"),
        ("/system/audit/cleanup", {"retention_days": True}, "retention_days"),
        ("/system/security/rate-limit", {"requests_per_minute": True}, "requests_per_minute"),
    ],
)
def test_true_is_no_integer_in_settings(
    api: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    """The same for settings: retention_days true was one day of audit history kept."""
    method = "PUT" if path.endswith(("retention", "syslog", "rate-limit")) else "POST"
    method = "PATCH" if path.endswith(("settings", "config")) else method
    readable = path if method != "POST" else "/system/audit/retention"
    before = data(api.get(API + readable))
    assert field in error(api.request(method, API + path, json=body), 422)
    assert data(api.get(API + readable)) == before


def _everything(api: httpx.Client) -> list[tuple[str, int]]:
    """The ids of every CA, template and CSR, and the status of every certificate."""
    rows = [("ca", c["id"]) for c in data(api.get(f"{API}/cas", params={"per_page": 100}))]
    rows += [("template", t["id"]) for t in data(api.get(f"{API}/templates"))]
    rows += [("csr", c["id"]) for c in data(api.get(f"{API}/csrs", params={"per_page": 100}))]
    certs = data(api.get(f"{API}/certificates", params={"per_page": 100}))
    return rows + [(c["status"], c["id"]) for c in certs]


# --- serial numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("serial", "shown"), [("0x2A", "0x2A"), ("-0x1F", "-0x1F")])
def test_serial_number_is_written_as_the_seed_does(
    api: httpx.Client, serial: str, shown: str
) -> None:
    """`0x` and upper-case hex, no leading zeros; an imported negative serial (RFC 5280
    forbids them, some certificates have them) is signed hex, -0x1F, not 0x-1F."""
    made = openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "/dev/null", "-subj", f"/CN={unique('serial')}.example.com",
        "-addext", "basicConstraints=critical,CA:FALSE", "-set_serial", serial, "-days", "5",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    imported = data(
        api.post(f"{API}/certificates/import", json={"certificate": made.stdout.decode()}), 201
    )
    listed = data(api.get(f"{API}/certificates", params={"search": imported["common_name"]}))
    details = data(api.get(f"{API}/certificates/{imported['id']}"))
    assert (
        imported["serial_number"] == listed[0]["serial_number"] == details["serial_number"] == shown
    )
    assert int(shown, 16) == int(serial, 16)


# --- the seed's own examples ---------------------------------------------------------------------

SEED_CA = {
    "common_name": "My Root CA",
    "organization": "My Company",
    "country": "US",
    "state": "California",
    "locality": "San Francisco",
    "key_size": 4096,
    "validity_days": 3650,
    "ca_type": "root",
    "key_algorithm": "RSA",
}
CA_FIELDS = {
    "id": int,
    "name": str,
    "common_name": str,
    "ca_type": str,
    "serial_number": str,
    "valid_from": str,
    "valid_until": str,
    "key_size": int,
    "signature_algorithm": str,
    "is_active": bool,
    "certificates_count": int,
}
ISSUED_FIELDS = {
    "id": int,
    "serial_number": str,
    "common_name": str,
    "status": str,
    "valid_from": str,
    "valid_until": str,
    "private_key_available": bool,
}


def _typed(row: dict[str, Any], fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        assert type(row[name]) is kind, (name, row[name])
    for name in ("valid_from", "valid_until"):
        if name in row:
            assert len(row[name]) == 20 and row[name].endswith("Z"), row[name]
    if "serial_number" in row:
        assert row["serial_number"].startswith("0x") and int(row["serial_number"], 16) > 0


def test_seed_ca_and_certificate_examples(api: httpx.Client) -> None:
    """Create root and intermediate, list, tree and issue with the seed's bodies; the answers
    carry the seed's fields with the seed's types."""
    body = {**SEED_CA, "common_name": unique("My Root CA")}
    root = data(api.post(f"{API}/cas", json=body), 201)
    intermediate_body = {
        "common_name": unique("My Intermediate CA"),
        "parent_id": root["id"],
        "ca_type": "intermediate",
        "validity_days": 1825,
        "key_size": 4096,
    }
    intermediate = data(api.post(f"{API}/cas", json=intermediate_body), 201)
    assert (root["ca_type"], intermediate["ca_type"]) == ("root", "intermediate")
    listing = api.get(f"{API}/cas", params={"page": 1, "per_page": 20})
    assert set(listing.json()) == {"data", "meta"}
    assert set(listing.json()["meta"]) == {"page", "per_page", "total"}
    mine = [c for c in data(listing) if c["id"] in (root["id"], intermediate["id"])]
    assert len(mine) == 2
    for row in mine:
        _typed(row, CA_FIELDS)
    [node] = [n for n in data(api.get(f"{API}/cas/tree")) if n["id"] == root["id"]]
    [child] = node["children"]
    assert (child["id"], child["parent_id"], child["children"]) == (
        intermediate["id"],
        root["id"],
        [],
    )
    issue_body = {
        "common_name": "server.example.com",
        "ca_id": intermediate["id"],
        "template_id": 1,  # a fresh install's first template, as the seed's example has it
        "validity_days": 365,
        "key_size": 2048,
        "san": ["dns:server.example.com", "dns:www.example.com", "ip:192.168.1.10"],
        "key_usage": ["digitalSignature", "keyEncipherment"],
        "extended_key_usage": ["serverAuth", "clientAuth"],
    }
    issued = api.post(f"{API}/certificates", json=issue_body)
    assert issued.json()["message"] == "Certificate issued successfully"
    cert = data(issued, 201)
    _typed(cert, ISSUED_FIELDS)
    assert (cert["status"], cert["private_key_available"]) == ("active", True)
