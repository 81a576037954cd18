"""Templates through /api/v2/templates: CRUD, bulk delete, export and import, and issuing with
a template made here (checked with cryptography, openssl and pkilint)."""

import json
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.helpers import API, create_root, data, error, unique
from tests.e2e.test_auth import audit_rows
from tests.support import Server
from tests.tools import openssl, openssl_csr, pkilint_findings

UNKNOWN_ID = 987_654_321


def web_template(name: str, **extra: Any) -> dict[str, Any]:
    """The seed's create example, with the optional subject defaults."""
    return {
        "name": name,
        "description": "Template for web server certificates",
        "validity_days": 365,
        "key_size": 2048,
        "key_usage": ["digitalSignature", "keyEncipherment"],
        "extended_key_usage": ["serverAuth"],
        "basic_constraints": {"ca": False},
        **extra,
    }


def create(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = data(api.post(f"{API}/templates", json=body), 201)
    return created


def by_name(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in data(api.get(f"{API}/templates"))}


def import_file(api: httpx.Client, content: bytes, update_existing: bool) -> httpx.Response:
    return api.post(
        f"{API}/templates/import",
        files={"file": ("templates.json", content, "application/json")},
        data={"update_existing": "true" if update_existing else "false"},
    )


# CRUD


def test_create_get_update_delete(api: httpx.Client) -> None:
    name = unique("Web Server")
    created = create(api, web_template(name, organization="Acme", country="DE", locality="Köln"))
    assert created["name"] == name and created["validity_days"] == 365
    assert created["key_type"] == "RSA" and created["key_size"] == 2048  # a size alone is RSA
    assert created["key_usage"] == ["digitalSignature", "keyEncipherment"]
    assert created["extended_key_usage"] == ["serverAuth"]
    assert created["basic_constraints"] == {"ca": False, "path_length": None}
    assert created["is_ca"] is False and created["template_type"] == "server"
    assert created["subject_defaults"] == {
        "organization": "Acme",
        "country": "DE",
        "locality": "Köln",
    }
    assert data(api.get(f"{API}/templates/{created['id']}")) == created
    assert by_name(api)[name] == created

    renamed = unique("Updated Web Server")
    updated = data(
        api.put(f"{API}/templates/{created['id']}", json={"name": renamed, "validity_days": 730})
    )
    assert updated["name"] == renamed and updated["validity_days"] == 730
    unchanged = ("key_type", "key_size", "key_usage", "extended_key_usage", "subject_defaults")
    assert all(updated[k] == created[k] for k in unchanged)
    # One subject default changed, one removed; the rest stay.
    updated = data(
        api.put(f"{API}/templates/{created['id']}", json={"organization": "Beta", "locality": None})
    )
    assert updated["subject_defaults"] == {"organization": "Beta", "country": "DE"}
    assert name not in by_name(api) and renamed in by_name(api)

    deleted = api.delete(f"{API}/templates/{created['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    error(api.get(f"{API}/templates/{created['id']}"), 404)
    error(api.delete(f"{API}/templates/{created['id']}"), 404)
    error(api.put(f"{API}/templates/{created['id']}", json={"validity_days": 5}), 404)


def test_a_derived_type_follows_the_usages_and_a_chosen_one_stays(api: httpx.Client) -> None:
    path = f"{API}/templates/{create(api, web_template(unique('Derived')))['id']}"
    assert data(api.get(path))["template_type"] == "server"
    changed = data(api.put(path, json={"extended_key_usage": ["clientAuth"]}))
    assert changed["template_type"] == "client"
    changed = data(api.put(path, json={"template_type": "mtls"}))
    assert changed["template_type"] == "mtls"
    changed = data(api.put(path, json={"extended_key_usage": ["serverAuth", "clientAuth"]}))
    assert changed["template_type"] == "mtls"


def test_names_are_unique(api: httpx.Client) -> None:
    name = unique("Unique")
    first = create(api, web_template(name))
    assert "already exists" in error(api.post(f"{API}/templates", json=web_template(name)), 409)
    other = create(api, web_template(unique("Other")))
    message = error(api.put(f"{API}/templates/{other['id']}", json={"name": name}), 409)
    assert "already exists" in message
    assert data(api.get(f"{API}/templates/{first['id']}"))["name"] == name


def test_ca_template_and_key_spellings(api: httpx.Client) -> None:
    body = {
        "name": unique("Issuing CA"),
        "validity_days": 1825,
        "key_type": "ecdsa",
        "key_size": 384,
        "key_usage": ["digitalSignature", "keyCertSign", "cRLSign"],
        "basic_constraints": {"ca": True, "path_length": 0},
    }
    created = create(api, body)
    assert created["key_type"] == "EC" and created["key_size"] == 384
    assert created["basic_constraints"] == {"ca": True, "path_length": 0}
    assert created["template_type"] == "ca" and created["extended_key_usage"] is None
    ed = create(api, {"name": unique("Ed"), "key_type": "Ed25519"})
    assert (ed["key_type"], ed["key_size"]) == ("Ed25519", 256)
    any_ec = create(api, {"name": unique("Any EC"), "key_algorithm": "EC"})
    assert (any_ec["key_type"], any_ec["key_size"]) == ("EC", None)


def test_changing_the_key_type_alone_drops_the_old_types_size(api: httpx.Client) -> None:
    """PUT is partial, but the size of the old key type means nothing for a new one: RSA-2048
    made EC by `key_type` alone is any EC key, not an "EC-2048" refused as malformed."""
    created = create(api, {"name": unique("Key change"), "key_size": 2048})
    path = f"{API}/templates/{created['id']}"
    changed = data(api.put(path, json={"key_type": "EC"}))
    assert (changed["key_type"], changed["key_size"]) == ("EC", None)
    changed = data(api.put(path, json={"key_size": 384}))
    assert (changed["key_type"], changed["key_size"]) == ("EC", 384)
    changed = data(api.put(path, json={"key_algorithm": "ECDSA"}))  # the same type
    assert (changed["key_type"], changed["key_size"]) == ("EC", 384)
    changed = data(api.put(path, json={"key_type": "Ed25519"}))
    assert (changed["key_type"], changed["key_size"]) == ("Ed25519", 256)
    entry = {"name": created["name"], "key_type": "RSA"}
    imported = api.post(
        f"{API}/templates/import",
        json={"json_content": json.dumps([entry]), "update_existing": True},
    )
    assert data(imported)["updated"] == 1, imported.text
    changed = data(api.get(path))
    assert (changed["key_type"], changed["key_size"]) == ("RSA", None)


def test_invalid_templates_are_refused_and_not_written(api: httpx.Client) -> None:
    before = len(data(api.get(f"{API}/templates")))
    name = unique("Invalid")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"key_usage": ["digitalSignature", "signEverything"]}, 400, "unknown key usage"),
        ({"extended_key_usage": ["timeTravel"]}, 400, "unknown extended key usage"),
        ({"key_type": "DSA", "key_size": None}, 400, "unknown key algorithm"),
        ({"key_type": "EC", "key_size": 2048}, 400, "EC key size"),
        ({"key_size": 1024}, 422, "at least 2048"),
        ({"basic_constraints": {"ca": False, "path_length": 1}}, 400, "path_length"),
        ({"basic_constraints": {"ca": True}}, 400, "keyCertSign"),
        ({"key_type": "EC", "key_size": 256}, 400, "cannot be used for"),
        ({"subject_defaults": {"email": "x@example.com"}}, 400, "unknown subject default"),
        ({"subject_defaults": {"country": "Germany"}}, 400, "country"),
        # countryName is a PrintableString of letters: these would fail at every issuance.
        ({"subject_defaults": {"country": "U*"}}, 400, "country"),
        ({"subject_defaults": {"country": "12"}}, 400, "country"),
        ({"validity_days": 0}, 422, "validity_days"),
        ({"name": ""}, 422, "name"),
        ({"key_usage": "digitalSignature"}, 422, "key_usage"),
        # No lax coercion: "yes" is no boolean, "30" no number, and Ed25519 has one size.
        ({"basic_constraints": {"ca": "yes"}}, 422, "basic_constraints"),
        ({"is_ca": 1}, 422, "is_ca"),
        ({"validity_days": "30"}, 422, "validity_days"),
        ({"key_type": "Ed25519", "key_size": 2048}, 400, "Ed25519"),
    ]
    for change, status, fragment in cases:
        message = error(api.post(f"{API}/templates", json={**web_template(name), **change}), status)
        assert fragment in message, (change, message)
    error(api.post(f"{API}/templates", json={"description": "no name"}), 422)
    assert len(data(api.get(f"{API}/templates"))) == before
    template = create(api, web_template(name))
    refused = api.put(f"{API}/templates/{template['id']}", json={"key_usage": ["nope"]})
    assert "unknown key usage" in error(refused, 400)
    assert data(api.get(f"{API}/templates/{template['id']}")) == template


def test_bulk_delete_reports_success_and_failure(api: httpx.Client) -> None:
    first, second = (create(api, web_template(unique("Bulk")))["id"] for _ in range(2))
    ids = [first, UNKNOWN_ID, second, first]  # an id given twice counts once
    result = data(api.post(f"{API}/templates/bulk/delete", json={"ids": ids}))
    assert result["success"] == [first, second] and result["failed"] == [UNKNOWN_ID]
    assert [e["id"] for e in result["errors"]] == [UNKNOWN_ID]
    error(api.get(f"{API}/templates/{first}"), 404)
    error(api.get(f"{API}/templates/{second}"), 404)
    error(api.post(f"{API}/templates/bulk/delete", json={"ids": []}), 422)


def test_read_only_key_reads_but_does_not_write(server: Server, api: httpx.Client) -> None:
    body = {"name": "templates reader", "permissions": ["read:templates"]}
    key = data(api.post("/api/v2/account/apikeys", json=body), 201)["key"]
    template = create(api, web_template(unique("Guarded")))
    with server.client(api_key=key) as reader:
        assert data(reader.get(f"{API}/templates/{template['id']}"))["id"] == template["id"]
        assert reader.get(f"{API}/templates/export").status_code == 200
        assert "write:templates" in error(
            reader.post(f"{API}/templates", json=web_template(unique("No"))), 403
        )
        error(reader.put(f"{API}/templates/{template['id']}", json={"validity_days": 1}), 403)
        assert "delete:templates" in error(reader.delete(f"{API}/templates/{template['id']}"), 403)
        error(import_file(reader, b"[]", False), 403)
    assert data(api.get(f"{API}/templates/{template['id']}")) == template


def test_changes_are_audited(server: Server, api: httpx.Client) -> None:
    name, bad = unique("Audited"), unique("Audited Bad")
    template = create(api, web_template(name))
    data(api.put(f"{API}/templates/{template['id']}", json={"validity_days": 90}))
    assert api.delete(f"{API}/templates/{template['id']}").status_code == 204
    entries = [web_template(name), web_template(bad, key_usage=["bogus"])]
    data(import_file(api, json.dumps(entries).encode(), update_existing=False))

    def named(action: str, wanted: str) -> list[dict[str, Any]]:
        rows = audit_rows(server, action, "admin")
        return [r["details"] for r in rows if r["details"].get("name") == wanted]

    assert [d["source"] for d in named("template.create", name)] == ["api", "import"]
    assert named("template.update", name)[0]["changed"] == ["validity_days"]
    assert named("template.delete", name) == [{"name": name, "certificates_unlinked": 0}]
    assert named("template.create", bad) == []  # the refused entry left nothing behind
    last_import = audit_rows(server, "template.import", "admin")[-1]["details"]
    assert last_import == {"imported": 1, "updated": 0, "skipped": 1, "errors": 1}


# Export and import


def test_export_one_and_all(api: httpx.Client) -> None:
    template = create(api, web_template(unique("Export Me"), state="Bavaria"))
    one = api.get(f"{API}/templates/{template['id']}/export")
    assert one.status_code == 200 and one.headers["content-type"].startswith("application/json")
    disposition = one.headers["content-disposition"]
    assert disposition.startswith("attachment;") and ".json" in disposition
    document = one.json()
    assert document == {
        "name": template["name"],
        "description": "Template for web server certificates",
        "template_type": "server",
        "validity_days": 365,
        "key_type": "RSA",
        "key_size": 2048,
        "key_usage": ["digitalSignature", "keyEncipherment"],
        "extended_key_usage": ["serverAuth"],
        "basic_constraints": {"ca": False, "path_length": None},
        "subject_defaults": {"state": "Bavaria"},
    }
    everything = api.get(f"{API}/templates/export")
    assert (
        everything.status_code == 200 and "attachment" in everything.headers["content-disposition"]
    )
    exported = everything.json()
    assert isinstance(exported, list)
    assert [d["name"] for d in exported] == [t["name"] for t in data(api.get(f"{API}/templates"))]
    assert document in exported
    error(api.get(f"{API}/templates/{UNKNOWN_ID}/export"), 404)


def test_export_import_round_trip(api: httpx.Client) -> None:
    kept = create(api, web_template(unique("Round Trip"), organization="Acme"))
    changed = create(api, web_template(unique("Round Trip Changed")))
    dropped = create(api, web_template(unique("Round Trip Dropped"), validity_days=90))
    exported = api.get(f"{API}/templates/export").content
    count = len(json.loads(exported))
    data(api.put(f"{API}/templates/{changed['id']}", json={"validity_days": 30}))
    assert api.delete(f"{API}/templates/{dropped['id']}").status_code == 204

    # Without update_existing: the missing one comes back, the others are left alone.
    report = data(import_file(api, exported, update_existing=False))
    assert report == {"imported": 1, "updated": 0, "skipped": count - 1, "errors": []}
    names = by_name(api)
    assert names[dropped["name"]]["validity_days"] == 90
    assert names[changed["name"]]["validity_days"] == 30
    assert names[kept["name"]]["subject_defaults"] == {"organization": "Acme"}

    # With update_existing (as JSON json_content): every one is overwritten from the file.
    body = {"json_content": exported.decode(), "update_existing": True}
    report = data(api.post(f"{API}/templates/import", json=body))
    assert report == {"imported": 0, "updated": count, "skipped": 0, "errors": []}
    assert by_name(api)[changed["name"]]["validity_days"] == 365
    assert len(by_name(api)) == count

    # One exported file imports on its own, too.
    single = api.get(f"{API}/templates/{kept['id']}/export").content
    assert api.delete(f"{API}/templates/{kept['id']}").status_code == 204
    report = data(import_file(api, single, update_existing=True))
    assert report == {"imported": 1, "updated": 0, "skipped": 0, "errors": []}
    assert by_name(api)[kept["name"]]["subject_defaults"] == {"organization": "Acme"}


def test_malformed_entry_is_reported_and_the_rest_imports(api: httpx.Client) -> None:
    good, also_good, bad = unique("Good"), unique("Also Good"), unique("Bad")
    entries = [
        web_template(good),
        web_template(bad, extended_key_usage=["serverAuth", "noSuchUsage"]),
        "not an object",
        {"description": "no name"},
        web_template(also_good, key_type="EC", key_size=256, key_usage=["digitalSignature"]),
    ]
    content = json.dumps(entries).encode()
    report = data(import_file(api, content, update_existing=False))
    assert (report["imported"], report["updated"], report["skipped"]) == (2, 0, 3)
    errors = {e["index"]: e for e in report["errors"]}
    assert set(errors) == {1, 2, 3}
    assert errors[1]["name"] == bad and "noSuchUsage" in errors[1]["error"]
    assert "object" in errors[2]["error"] and "name" in errors[3]["error"]
    names = by_name(api)
    assert good in names and also_good in names and bad not in names
    assert names[also_good]["key_type"] == "EC"


def test_an_out_of_range_number_is_reported_as_such(api: httpx.Client) -> None:
    """A number too large for its column is no less a whole number: the report says what is
    wrong with it."""
    huge = unique("Huge")
    entries = [
        web_template(huge, validity_days=2**40),
        web_template(unique("Fraction"), validity_days=1.5),
    ]
    report = data(import_file(api, json.dumps(entries).encode(), update_existing=False))
    errors = {e["index"]: e["error"] for e in report["errors"]}
    assert "validity_days is out of range" in errors[0], errors
    assert "validity_days must be a whole number" in errors[1], errors
    assert huge not in by_name(api)


def test_unreadable_imports_are_400(api: httpx.Client) -> None:
    before = len(data(api.get(f"{API}/templates")))
    assert "JSON" in error(import_file(api, b"{not json", False), 400)
    assert "array" in error(import_file(api, b'"a string"', False), 400)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "JSON" in error(import_file(api, deep, False), 400)
    error(api.post(f"{API}/templates/import", json={"update_existing": True}), 400)
    error(api.post(f"{API}/templates/import", files={"other": ("x", b"[]")}), 400)
    assert len(data(api.get(f"{API}/templates"))) == before


# Issuing with a template made here


def _issue(api: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return api.post(f"{API}/certificates", json=body)


def _pem(api: httpx.Client, cert_id: int) -> str:
    response = api.get(f"{API}/certificates/{cert_id}/export", params={"format": "pem"})
    assert response.status_code == 200, response.text
    return response.text


def test_issuing_applies_the_template(api: httpx.Client, workdir: Path) -> None:
    ca = create_root(api, unique("Template Issuing Root"))
    template = create(
        api,
        {
            "name": unique("mTLS Client"),
            "validity_days": 123,
            "key_type": "EC",
            "key_size": 384,
            "key_usage": ["digitalSignature"],
            "extended_key_usage": ["clientAuth"],
            "basic_constraints": {"ca": False},
            "organization": "Default Org",
            "organizational_unit": "Platform",
            "country": "DE",
            "state": "Berlin",
            "locality": "Berlin",
        },
    )
    body = {
        "common_name": "svc.example.com",
        "ca_id": ca["id"],
        "template_id": template["id"],
        "organization": "Given Org",
    }
    issued = data(_issue(api, body), 201)
    assert issued["template_id"] == template["id"]
    assert (issued["key_algorithm"], issued["key_size"]) == ("EC", 384)
    pem = _pem(api, issued["id"])
    cert = x509.load_pem_x509_certificate(pem.encode())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 123
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {
        NameOID.COUNTRY_NAME: "DE",
        NameOID.STATE_OR_PROVINCE_NAME: "Berlin",
        NameOID.LOCALITY_NAME: "Berlin",
        NameOID.ORGANIZATION_NAME: "Given Org",  # given: not overridden
        NameOID.ORGANIZATIONAL_UNIT_NAME: "Platform",
        NameOID.COMMON_NAME: "svc.example.com",
    }
    printed = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", input=pem.encode())
    assert printed.returncode == 0, printed.stderr.decode()
    subject_line = printed.stdout.decode()
    assert "CN=svc.example.com,OU=Platform,O=Given Org,L=Berlin,ST=Berlin,C=DE" in subject_line
    assert pkilint_findings(workdir, pem) == ""


def test_csr_with_another_key_type_is_refused(api: httpx.Client, workdir: Path) -> None:
    ca = create_root(api, unique("Template CSR Root"))
    template = create(
        api,
        {
            "name": unique("EC only"),
            "key_type": "EC",
            "key_size": 256,
            "extended_key_usage": ["serverAuth"],
            "organization": "Filled In",
        },
    )
    before = data(api.get(f"{API}/certificates/stats"))["total"]
    _, rsa_csr = openssl_csr(workdir, "/CN=rsa.example.com", "rsa:2048")
    body = {"ca_id": ca["id"], "template_id": template["id"], "csr": rsa_csr.read_text()}
    message = error(_issue(api, body), 422)
    assert template["name"] in message and "EC-P256" in message and "RSA-2048" in message
    assert data(api.get(f"{API}/certificates/stats"))["total"] == before
    # The same template signs a CSR whose key it fixes, and fills the subject from it.
    _, ec_csr = openssl_csr(workdir, "/CN=ec.example.com", "ec", sans="DNS:ec.example.com")
    body["csr"] = ec_csr.read_text()
    issued = data(_issue(api, body), 201)
    cert = x509.load_pem_x509_certificate(_pem(api, issued["id"]).encode())
    organization = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in organization] == ["Filled In"]
    # A generated key that contradicts the template is refused the same way.
    body = {
        "common_name": "gen.example.com",
        "ca_id": ca["id"],
        "template_id": template["id"],
        "key_algorithm": "RSA",
        "key_size": 2048,
    }
    assert "requires EC-P256" in error(_issue(api, body), 422)


def test_deleting_a_template_in_use_keeps_its_certificates(api: httpx.Client) -> None:
    ca = create_root(api, unique("Template Delete Root"))
    template = create(api, {"name": unique("Short Lived"), "validity_days": 7})
    body = {"common_name": "short.example.com", "ca_id": ca["id"], "template_id": template["id"]}
    issued = data(_issue(api, body), 201)
    assert api.delete(f"{API}/templates/{template['id']}").status_code == 204
    kept = data(api.get(f"{API}/certificates/{issued['id']}"))
    assert kept["template_id"] is None and kept["serial_number"] == issued["serial_number"]
    body["template_id"] = template["id"]
    error(_issue(api, body), 404)
