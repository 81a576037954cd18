"""Inventory defects of issue 3, through the native API against a real server: a private key
imported alone joins the stored certificate it belongs to; multipart uploads take one file
and only the fields their endpoint reads; the trust store list filters by purpose and
search, and pages as the other lists do; serials are kept whole."""

from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.helpers import (
    API,
    ForeignCert,
    data,
    db_rows,
    error,
    foreign_root,
    foreign_signed,
    unique,
)
from tests.e2e.test_inventory_isolation import foreign_admin_key
from tests.support import Server
from tests.tools import openssl, openssl_csr

# 1. A private key imported alone (smart import)


def _smart(api: httpx.Client, step: str, content: str, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = data(
        api.post(f"{API}/import/{step}", json={"content": content, **extra})
    )
    return result


def _encrypted(key_pem: str, password: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    encryption = serialization.BestAvailableEncryption(password.encode())
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, encryption).decode()


def test_a_key_imported_alone_joins_its_stored_certificate(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = foreign_root(workdir, f"/CN={unique('Lone Key Root')}")
    leaf = foreign_signed(workdir, root, f"/CN={unique('lone-key')}.example", "v3_leaf")
    imported = data(api.post(f"{API}/certificates/import", json={"certificate": leaf.pem}), 201)
    cert_id = imported["id"]
    assert imported["private_key_available"] is False
    # The same certificate in another organization: its key is not this caller's to give.
    with server.client(api_key=foreign_admin_key(server)) as other:
        theirs = data(other.post(f"{API}/certificates/import", json={"certificate": leaf.pem}), 201)
    locked = _encrypted(leaf.key_pem, "lone-pass")

    analyzed = _smart(api, "analyze", locked, password="lone-pass")
    assert analyzed["objects"][0]["type"] == "private_key"
    existing = analyzed["objects"][0]["details"]["existing"]
    assert existing == {"type": "certificate", "id": cert_id, "ids": [cert_id], "with_key": []}

    done = _smart(api, "execute", locked, password="lone-pass")
    (result,) = done["results"]
    assert result["status"] == "updated" and result["resource"] == "certificate", result
    assert result["id"] == cert_id and result["ids"] == [cert_id]
    assert done["keys_matched"] == 1 and done["errors"] == []
    assert data(api.get(f"{API}/certificates/{cert_id}"))["private_key_available"] is True
    stored = db_rows(
        server,
        "SELECT id, encrypted_private_key FROM certificates WHERE id IN (?, ?)",
        cert_id,
        theirs["id"],
    )
    keys = dict(stored)
    assert keys[theirs["id"]] is None
    assert keys[cert_id].startswith("gAAAAA") and "PRIVATE KEY" not in keys[cert_id]
    exported = data(api.post(f"{API}/certificates/{cert_id}/key", json={}))
    (workdir / "out.key").write_text(exported["private_key"])
    same = openssl("pkey", "-in", str(workdir / "out.key"), "-pubout")
    assert same.returncode == 0
    assert same.stdout == openssl("pkey", "-in", str(leaf.key_path), "-pubout").stdout
    logs = data(api.get(f"{API}/audit/logs", params={"action": "certificate.import_key"}))
    assert any(log["resource_id"] == str(cert_id) for log in logs)

    # Again: the certificate has its key now; the key is reported, not attached twice.
    again = _smart(api, "execute", leaf.key_pem)["results"][0]
    assert again["status"] == "skipped" and "already has its private key" in again["message"]
    analyzed = _smart(api, "analyze", leaf.key_pem)["objects"][0]["details"]["existing"]
    assert analyzed["with_key"] == [cert_id]


def test_a_key_imported_alone_that_matches_nothing_is_reported(api: httpx.Client) -> None:
    stray = ec.generate_private_key(ec.SECP256R1())
    pem = stray.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert _smart(api, "analyze", pem)["objects"][0]["details"]["existing"] is None
    done = _smart(api, "execute", pem)
    (result,) = done["results"]
    assert result["status"] == "skipped" and result == done["skipped"][0]
    assert "no certificate, CA or CSR in the content or the inventory" in result["message"]
    assert done["keys_matched"] == 0


# 4. Multipart uploads: one `file` part, and only the fields the endpoint reads

UPLOADS = [
    "/certificates/import",
    "/cas/import",
    "/csrs/upload",
    "/csrs/import",
    "/truststore/import",
    "/templates/import",
    "/import/analyze",
    "/import/execute",
]


def _counts(server: Server) -> list[int]:
    tables = (
        "certificates",
        "certificate_authorities",
        "csrs",
        "trusted_certificates",
        "templates",
    )
    return [int(db_rows(server, f"SELECT count(*) FROM {t}")[0][0]) for t in tables]


def test_multipart_uploads_refuse_a_second_file_and_a_field_given_twice(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = foreign_root(workdir, f"/CN={unique('Multipart Root')}")
    other = foreign_root(workdir, f"/CN={unique('Multipart Other')}")
    before = _counts(server)
    for path in UPLOADS:
        two = [
            ("file", ("a.pem", root.pem.encode(), "application/octet-stream")),
            ("file", ("b.pem", other.pem.encode(), "application/octet-stream")),
        ]
        message = error(api.post(f"{API}{path}", files=two), 400)
        assert "only one file is accepted" in message, (path, message)
        one = {"file": ("a.pem", root.pem.encode(), "application/octet-stream")}
        if path != "/templates/import":  # (it reads no password)
            twice = api.post(f"{API}{path}", files=one, data={"password": ["a", "b"]})
            assert "'password' is given more than once" in error(twice, 400), path
    assert _counts(server) == before  # nothing written
    # UCM's web client sends its import pages' fields, `format=auto` among them.
    one = {"file": ("a.pem", other.pem.encode(), "application/octet-stream")}
    ucm = {"name": unique("UCM Import"), "password": "", "format": "auto"}
    data(api.post(f"{API}/cas/import", files=one, data=ucm), 201)
    one = {"file": ("a.pem", _with_serial(workdir, root, "7A"), "application/octet-stream")}
    data(api.post(f"{API}/certificates/import", files=one, data={**ucm, "ca_id": ""}), 201)
    # The seed's fields are read, not refused.
    seed = {
        "name": unique("Multipart"),
        "purpose": "trust_anchor",
        "description": "d",
        "notes": "n",
    }
    one = {"file": ("a.pem", root.pem.encode(), "application/octet-stream")}
    added = data(api.post(f"{API}/truststore/import", files=one, data=seed), 201)
    assert added["certificates"][0]["purpose"] == "trust_anchor"
    fields = {"name": unique("Multipart Cert"), "password": "", "import_key": "true"}
    data(api.post(f"{API}/certificates/import", files=one, data=fields), 201)  # a CA, as one


# 5. The trust store list: purpose and search filters, pages, scoped by organization


def test_truststore_list_filters_by_purpose_and_search_and_pages(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    tag = unique("tsf").lower()
    purpose = f"purpose-{tag}"
    names = [f"Partner {tag.upper()} Root {n}" for n in range(3)]
    ids = []
    for n, name in enumerate(names):
        root = foreign_root(workdir, f"/CN={unique('Trust Filter')}/O=Org {tag} {n}")
        body = {"certificate": root.pem, "name": name, "purpose": purpose if n < 2 else "other"}
        ids.append(data(api.post(f"{API}/truststore", json=body), 201)["id"])

    def listed(**params: Any) -> tuple[list[int], dict[str, int]]:
        response = api.get(f"{API}/truststore", params=params)
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["data"]], response.json()["meta"]

    assert listed(purpose=purpose) == (ids[:2], {"page": 1, "per_page": 50, "total": 2})
    assert listed(search=f"PARTNER {tag}")[0] == ids  # the name, in any case
    assert listed(search=f"org {tag} 2")[0] == [ids[2]]  # the subject
    assert listed(search=f"{tag} root 1", purpose=purpose)[0] == [ids[1]]
    assert listed(search="100%_literal")[0] == []  # wildcards are literal
    assert listed(search=tag, per_page=2, page=2) == (
        [ids[2]],
        {"page": 2, "per_page": 2, "total": 3},
    )
    assert listed(search=tag, purpose="")[1]["total"] == 3  # empty: no filter
    for bad in ({"purpose": "x" * 65}, {"search": "x" * 201}):
        assert "at most" in error(api.get(f"{API}/truststore", params=bad), 400)
    error(api.get(f"{API}/truststore", params={"search": "a\x00b"}), 400)
    assert "per_page" in error(api.get(f"{API}/truststore", params={"per_page": 101}), 422)
    with server.client(api_key=foreign_admin_key(server)) as other:
        theirs = other.get(f"{API}/truststore", params={"search": tag}).json()
    assert theirs["data"] == [] and theirs["meta"]["total"] == 0


# 2. Long serials on the certificate import path: whole up to the column's 32 octets, else 400


def _with_serial(workdir: Path, issuer: ForeignCert, serial_hex: str) -> str:
    _key, csr = openssl_csr(workdir, f"/CN={unique('long-serial')}.example", "ec")
    out = workdir / f"{unique('serial')}.pem"
    signed = openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(issuer.cert_path),
        "-CAkey", str(issuer.key_path), "-set_serial", f"0x{serial_hex}",
        "-days", "30", "-out", str(out),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr.decode()
    return out.read_text()


def test_certificate_import_keeps_a_32_octet_serial_whole_and_refuses_a_longer_one(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = foreign_root(workdir, f"/CN={unique('Long Serial Root')}")
    whole = "7" + "A" * 63  # 32 octets: the serial column's 64 hex digits
    imported = data(
        api.post(
            f"{API}/certificates/import", json={"certificate": _with_serial(workdir, root, whole)}
        ),
        201,
    )
    assert imported["serial_number"] == f"0x{whole}"
    shown = data(api.get(f"{API}/certificates/{imported['id']}"))["serial_number"]
    assert shown == f"0x{whole}"
    longer = {"certificate": _with_serial(workdir, root, "7" + "B" * 65)}  # 33 octets
    message = error(api.post(f"{API}/certificates/import", json=longer), 400)
    assert "longer than 32 octets" in message
    smart = data(api.post(f"{API}/import/execute", json={"content": longer["certificate"]}))
    assert "longer than 32 octets" in smart["errors"][0]["message"]


def test_truststore_keeps_a_serial_longer_than_32_octets_whole(
    api: httpx.Client, workdir: Path
) -> None:
    """The trust store holds certificates from anywhere: a 40-octet serial is stored and shown
    whole (it was cut to 64 hex digits, naming another serial)."""
    root = foreign_root(workdir, f"/CN={unique('Trusted Long Serial Root')}")
    serial = "7" + "C" * 79  # 40 octets
    body = {"certificate": _with_serial(workdir, root, serial), "name": unique("long serial")}
    added = data(api.post(f"{API}/truststore", json=body), 201)
    shown = data(api.get(f"{API}/truststore/{added['id']}"))
    assert shown["serial_number"].upper().endswith(serial), shown["serial_number"]
