"""Tenant isolation of the inventory: an administrator of another organization (made directly
in the database: there is no organization API yet) can neither read, sign, change, delete nor
export the default organization's CSRs, templates, trusted certificates and certificates, by
id or in bulk; bulk calls report those ids in `failed`, as unknown ones."""

from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from tests.e2e.accounts_helpers import PASSWORD, db, key_for, past
from tests.e2e.helpers import API, create_root, data, error, issue, unique
from tests.support import Server
from tests.tools import openssl_csr


def foreign_admin_key(server: Server) -> str:
    org_id = db(
        server,
        "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
        (unique("other-org"), past(server, 0)),
    )[0][0]
    username = unique("foreign-admin")
    db(
        server,
        "INSERT INTO users (org_id, username, email, full_name, password_hash, role, active,"
        " created_at, totp_enabled) VALUES (?, ?, NULL, NULL, ?, 'admin', ?, ?, ?)",
        (org_id, username, PasswordHasher().hash(PASSWORD), True, past(server, 0), False),
    )
    return key_for(server, username)


def own_rows(api: httpx.Client, workdir: Path) -> dict[str, Any]:
    root = create_root(api, unique("Isolated Root"))
    _, csr = openssl_csr(workdir, "/CN=isolated.example.com", "ec", "DNS:isolated.example.com")
    pending = data(api.post(f"{API}/csrs", json={"csr": csr.read_text()}), 201)
    template = data(api.post(f"{API}/templates", json={"name": unique("Isolated")}), 201)
    cert = issue(api, root["id"], "isolated-cert.example.com")
    trusted = data(api.post(f"{API}/truststore", json={"certificate": root_pem(api, root)}), 201)
    return {"root": root, "csr": pending, "template": template, "cert": cert, "trusted": trusted}


def root_pem(api: httpx.Client, root: dict[str, Any]) -> str:
    return str(data(api.get(f"{API}/cas/{root['id']}"))["pem"])


def assert_all_failed(response: httpx.Response, ids: list[int]) -> None:
    body = data(response)
    assert body["success"] == [] and body["failed"] == ids, body


def test_another_organization_reaches_none_of_the_inventory(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    mine = own_rows(api, workdir)
    csr_id, template_id = mine["csr"]["id"], mine["template"]["id"]
    cert_id, trusted_id = mine["cert"]["id"], mine["trusted"]["id"]
    with server.client(api_key=foreign_admin_key(server)) as other:
        own_ca = create_root(other, unique("Their Root"))
        # CSRs: nothing listed, nothing readable, signable, keyed, exportable or deletable.
        assert csr_id not in [r["id"] for r in data(other.get(f"{API}/csrs"))]
        error(other.get(f"{API}/csrs/{csr_id}"), 404)
        error(other.get(f"{API}/csrs/{csr_id}/export"), 404)
        error(other.post(f"{API}/csrs/{csr_id}/sign", json={"ca_id": own_ca["id"]}), 404)
        error(other.post(f"{API}/csrs/{csr_id}/key", json={"key": "x"}), 404)
        error(other.delete(f"{API}/csrs/{csr_id}"), 404)
        bulk_sign = {"ids": [csr_id], "ca_id": own_ca["id"]}
        assert_all_failed(other.post(f"{API}/csrs/bulk/sign", json=bulk_sign), [csr_id])
        assert_all_failed(other.post(f"{API}/csrs/bulk/delete", json={"ids": [csr_id]}), [csr_id])
        # Templates: not listed, exported, used, changed or deleted.
        assert template_id not in [t["id"] for t in data(other.get(f"{API}/templates"))]
        assert other.get(f"{API}/templates/export").json() == []
        error(other.get(f"{API}/templates/{template_id}"), 404)
        error(other.get(f"{API}/templates/{template_id}/export"), 404)
        error(other.put(f"{API}/templates/{template_id}", json={"validity_days": 1}), 404)
        issue_with = {"common_name": "x.example.com", "ca_id": own_ca["id"]}
        issue_with["template_id"] = template_id
        error(other.post(f"{API}/certificates", json=issue_with), 404)
        delete_template = {"ids": [template_id]}
        assert_all_failed(
            other.post(f"{API}/templates/bulk/delete", json=delete_template), [template_id]
        )
        # The trust store: its own, empty; ours neither readable nor deletable.
        assert data(other.get(f"{API}/truststore/stats"))["total"] == 0
        error(other.get(f"{API}/truststore/{trusted_id}"), 404)
        error(other.delete(f"{API}/truststore/{trusted_id}"), 404)
        # Certificates in bulk: each id failed; an export of none of theirs is a 404.
        body = {"ids": [cert_id]}
        assert_all_failed(other.post(f"{API}/certificates/bulk/revoke", json=body), [cert_id])
        assert_all_failed(other.post(f"{API}/certificates/bulk/renew", json=body), [cert_id])
        assert_all_failed(other.post(f"{API}/certificates/bulk/delete", json=body), [cert_id])
        error(other.post(f"{API}/certificates/bulk/export", json=body), 404)
        error(other.post(f"{API}/certificates/{cert_id}/key"), 404)
        exported_all = other.get(f"{API}/certificates/export")
        assert mine["cert"]["serial_number"] not in exported_all.text
    # All of it is still there, unchanged.
    assert data(api.get(f"{API}/csrs/{csr_id}"))["status"] == "pending"
    assert data(api.get(f"{API}/templates/{template_id}"))["validity_days"] is None
    assert data(api.get(f"{API}/truststore/{trusted_id}"))["id"] == trusted_id
    assert data(api.get(f"{API}/certificates/{cert_id}"))["status"] == "active"


def test_another_organization_changes_no_system_wide_setting(
    server: Server, api: httpx.Client
) -> None:
    """Email, syslog, audit retention, the KEK and rate limits serve every organization: an
    admin of another one could otherwise have every organization's password-reset links
    mailed through an SMTP server of theirs, or its audit events sent to their collector."""
    before = {path: data(api.get(f"{API}{path}")) for path in SYSTEM_SETTINGS}
    with server.client(api_key=foreign_admin_key(server)) as other:
        for path in (*SYSTEM_SETTINGS, "/system/audit/syslog", "/system/security/secrets-status"):
            error(other.get(f"{API}{path}"), 403)
        changes = [
            ("PATCH", "/settings/email", {"smtp_host": "127.0.0.1", "enabled": True}),
            ("POST", "/settings/email/test", {"to": "someone@example.com"}),
            ("PUT", "/system/audit/syslog", {"enabled": True, "host": "127.0.0.1"}),
            ("POST", "/system/audit/syslog/test", {}),
            ("PUT", "/system/audit/retention", {"retention_days": 1, "auto_cleanup": True}),
            ("PUT", "/system/security/rate-limit", {"requests_per_minute": 1}),
            ("POST", "/system/security/rate-limit/reset", {}),
            ("POST", "/system/security/rotate-secrets", {}),
            ("POST", "/system/security/enable-encryption", {"master_password": "theirs-1234"}),
        ]
        for method, path, body in changes:
            assert "default organization" in error(
                other.request(method, f"{API}{path}", json=body), 403
            ), path
        data(other.get(f"{API}/acme/settings"))  # its own organization's settings are its own
    assert {path: data(api.get(f"{API}{path}")) for path in SYSTEM_SETTINGS} == before


SYSTEM_SETTINGS = (
    "/settings/email",
    "/system/audit/retention",
    "/system/security/encryption-status",
    "/system/security/rate-limit",
)
