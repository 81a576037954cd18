"""Uploads through the native API that must not be taken loosely: a `private_key` field is
read as a key or refused (never dropped), JSON fields that are text must be text, a PEM key
export under a password is encrypted, and a CA is a duplicate only when it is the very same
certificate."""

from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.helpers import (
    API,
    create_root,
    data,
    db_rows,
    error,
    foreign_root,
    foreign_signed,
    import_ca_file,
    issue,
    signed_pem,
    unique,
)
from tests.support import Server
from tests.tools import openssl_csr


def count(server: Server, table: str) -> int:
    return int(db_rows(server, f"SELECT count(*) FROM {table}")[0][0])


# 1. A private_key field is read as a key, or the import is refused


def test_unreadable_private_key_refuses_certificate_import(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = foreign_root(workdir, f"/CN={unique('Key Field Root')}")
    leaf = foreign_signed(workdir, root, "/CN=key-field.example", "v3_leaf")
    before = count(server, "certificates")
    for garbage in ("garbage", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
        body = {"certificate": leaf.pem, "private_key": garbage}
        message = error(api.post(f"{API}/certificates/import", json=body), 400)
        assert "not a private key" in message
    multipart = api.post(
        f"{API}/certificates/import",
        files={"file": ("leaf.pem", leaf.pem.encode(), "application/octet-stream")},
        data={"private_key": "garbage"},
    )
    assert "not a private key" in error(multipart, 400)
    refused = {"certificate": leaf.pem, "private_key": 12345}
    assert "private_key must be text" in error(
        api.post(f"{API}/certificates/import", json=refused), 400
    )
    assert count(server, "certificates") == before  # nothing written

    # The key of another certificate: refused as before; the right key is kept.
    other = foreign_signed(workdir, root, "/CN=other.example", "v3_leaf")
    wrong = {"certificate": leaf.pem, "private_key": other.key_path.read_text()}
    error(api.post(f"{API}/certificates/import", json=wrong), 422)
    good = {"certificate": leaf.pem, "private_key": leaf.key_path.read_text()}
    imported = data(api.post(f"{API}/certificates/import", json=good), 201)
    assert imported["private_key_available"] is True
    # An empty key field is no key: the same certificate is then a plain duplicate.
    blank = {"certificate": leaf.pem, "private_key": ""}
    error(api.post(f"{API}/certificates/import", json=blank), 409)


def test_unreadable_private_key_refuses_ca_import(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    root = foreign_root(workdir, f"/CN={unique('Key Field CA')}")
    before = count(server, "certificate_authorities")
    body = {"certificate": root.pem, "private_key": "garbage"}
    assert "not a private key" in error(api.post(f"{API}/cas/import", json=body), 400)
    multipart = import_ca_file(api, root.pem.encode(), "root.pem", private_key="garbage")
    assert "not a private key" in error(multipart, 400)
    assert count(server, "certificate_authorities") == before  # nothing written

    # import_key=false still reads the key given (and keeps none).
    no_key = {"certificate": root.pem, "private_key": "garbage", "import_key": False}
    error(api.post(f"{API}/cas/import", json=no_key), 400)
    # A key inside the uploaded file is read as before; given apart too, it must agree.
    both = root.pem + root.key_path.read_text()
    other = foreign_root(workdir, f"/CN={unique('Other CA')}")
    clash = {"certificate": both, "private_key": other.key_path.read_text()}
    error(api.post(f"{API}/cas/import", json=clash), 400)
    ca = data(api.post(f"{API}/cas/import", json={"certificate": both}), 201)
    assert ca["has_private_key"] is True


# 2. JSON fields that are text must be text


def test_json_fields_must_be_text(server: Server, api: httpx.Client, workdir: Path) -> None:
    _, csr_path = openssl_csr(workdir, f"/CN={unique('typed')}.example")
    csr = csr_path.read_text()
    csrs, trusted = count(server, "csrs"), count(server, "trusted_certificates")
    for name in ({"a": 1}, ["a"], 7, True):
        message = error(api.post(f"{API}/csrs/upload", json={"pem": csr, "name": name}), 400)
        assert message == "name must be text"
        error(api.post(f"{API}/csrs/import", json={"pem_content": csr, "name": name}), 400)
    root = foreign_root(workdir, f"/CN={unique('Typed Trust')}")
    for field in ("name", "description", "purpose", "notes"):
        body = {"certificate": root.pem, field: ["a"]}
        message = error(api.post(f"{API}/truststore/import", json=body), 400)
        assert message == f"{field} must be text"
    assert (count(server, "csrs"), count(server, "trusted_certificates")) == (csrs, trusted)

    bad_ca = {"certificate": root.pem, "password": {"p": 1}}
    assert error(api.post(f"{API}/cas/import", json=bad_ca), 400) == "password must be text"
    bad_flag = {"certificate": root.pem, "import_key": ["no"]}
    assert "import_key" in error(api.post(f"{API}/cas/import", json=bad_flag), 400)
    leaf = foreign_signed(workdir, root, "/CN=typed-leaf.example", "v3_leaf")
    bad_id = {"certificate": leaf.pem, "ca_id": {"id": 1}}
    assert "ca_id" in error(api.post(f"{API}/certificates/import", json=bad_id), 400)

    # Strings, flags as booleans and ids as numbers are still taken.
    row = data(api.post(f"{API}/csrs/upload", json={"pem": csr, "name": "typed csr"}), 201)
    assert row["name"] == "typed csr"
    named = {"certificate": root.pem, "name": "Typed Trust", "notes": "n"}
    added = data(api.post(f"{API}/truststore/import", json=named), 201)
    assert "Typed Trust" in str(added)
    ca_body = {"certificate": root.pem, "import_key": False}
    ca = data(api.post(f"{API}/cas/import", json=ca_body), 201)
    leaf_body = {"certificate": leaf.pem, "ca_id": ca["id"], "import_key": True, "name": "x"}
    data(api.post(f"{API}/certificates/import", json=leaf_body), 201)


def test_content_given_as_another_json_type_is_named(server: Server, api: httpx.Client) -> None:
    """The content field itself sent as an array or a number (a template import's
    `json_content` as the array rather than its text) is "<field> must be text", not "one of
    [...] is required" as if it were missing; nothing is written."""
    templates = count(server, "templates")
    for content in ([{"name": unique("Typed")}], {"name": unique("Typed")}, 7):
        body = {"json_content": content, "update_existing": True}
        message = error(api.post(f"{API}/templates/import", json=body), 400)
        assert message.startswith("json_content must be text"), message
    assert count(server, "templates") == templates
    assert error(api.post(f"{API}/csrs/import", json={"pem_content": 5}), 400).startswith(
        "pem_content must be text"
    )
    message = error(api.post(f"{API}/certificates/import", json={"certificate": ["x"]}), 400)
    assert message.startswith("certificate must be text"), message
    assert "is required" in error(api.post(f"{API}/csrs/import", json={"name": "x"}), 400)


# 3. A PEM export with the key, under a password


def test_pem_export_with_password_encrypts_the_key(server: Server, api: httpx.Client) -> None:
    root = create_root(api, unique("Export Pass Root"))
    cert = issue(api, root["id"], f"{unique('pass')}.example.com")
    password = unique("pw")
    path = f"{API}/certificates/{cert['id']}/export"
    params = {"format": "pem", "include_key": "true", "password": password}
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.text
    assert "BEGIN ENCRYPTED PRIVATE KEY" in body and "BEGIN PRIVATE KEY" not in body
    key_block = body[body.index("-----BEGIN ENCRYPTED PRIVATE KEY") :].encode()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(key_block, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(key_block, password=b"wrong")
    key = serialization.load_pem_private_key(key_block, password=password.encode())
    leaf = x509.load_pem_x509_certificate(body.encode())
    assert key.public_key() == leaf.public_key()

    # Without a password the key is plain PEM, as before.
    plain = api.get(path, params={"format": "pem", "include_key": "true"}).text
    assert "BEGIN PRIVATE KEY" in plain and "ENCRYPTED" not in plain

    # Each key export is audited as before; the password is nowhere in the audit or the log.
    rows = db_rows(
        server,
        "SELECT action, details FROM audit_logs WHERE resource_type = ? AND resource_id = ?",
        "certificate",
        str(cert["id"]),
    )
    exports = [r for r in rows if r[0] == "certificate.export_key"]
    assert len(exports) == 2
    assert all("pem" in str(details) for _, details in exports)
    assert password not in str(db_rows(server, "SELECT * FROM audit_logs"))
    assert password not in server.log()


# 4. A duplicate CA is the very same certificate


def _cas_named(server: Server, subject: str) -> int:
    rows = db_rows(server, "SELECT id FROM certificate_authorities WHERE subject = ?", subject)
    return len(rows)


def test_ca_without_ski_is_imported_once(server: Server, api: httpx.Client) -> None:
    cn = unique("No SKI Root")
    pem = signed_pem(ec.generate_private_key(ec.SECP256R1()), cn, ca=True, ski=False)[1]
    first = data(api.post(f"{API}/cas/import", json={"certificate": pem}), 201)
    message = error(api.post(f"{API}/cas/import", json={"certificate": pem}), 409)
    assert message == f"this CA is already present (CA {first['id']})"
    error(import_ca_file(api, pem.encode(), "again.pem"), 409)
    error(api.post(f"{API}/certificates/import", json={"certificate": pem}), 409)
    smart = data(api.post(f"{API}/import/execute", json={"content": pem}))
    assert smart["cas_imported"] == 0
    assert _cas_named(server, f"CN={cn}") == 1


def test_reissued_root_with_the_same_key_is_a_new_ca(server: Server, api: httpx.Client) -> None:
    cn = unique("Reissued Root")
    key = ec.generate_private_key(ec.SECP256R1())
    old, new = signed_pem(key, cn, ca=True, ski=True)[1], signed_pem(key, cn, ca=True, ski=True)[1]
    first = data(api.post(f"{API}/cas/import", json={"certificate": old}), 201)
    second = data(api.post(f"{API}/cas/import", json={"certificate": new}), 201)
    assert second["id"] != first["id"]
    error(api.post(f"{API}/cas/import", json={"certificate": new}), 409)
    assert _cas_named(server, f"CN={cn}") == 2


def test_a_name_too_long_is_refused_not_cut(server: Server, api: httpx.Client) -> None:
    cn = unique("Long Name Root")
    pem = signed_pem(ec.generate_private_key(ec.SECP256R1()), cn, ca=True, ski=True)[1]
    refused = api.post(f"{API}/cas/import", json={"certificate": pem, "name": "n" * 201})
    assert "at most 200" in error(refused, 400)
    assert _cas_named(server, f"CN={cn}") == 0
    named = data(api.post(f"{API}/cas/import", json={"certificate": pem, "name": "n" * 200}), 201)
    assert named["name"] == "n" * 200


def test_what_came_before_its_issuer_is_linked_when_the_issuer_comes(api: httpx.Client) -> None:
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name, root = signed_pem(root_key, unique("Late Root"), ca=True)
    inter_name, inter = signed_pem(inter_key, unique("Late Inter"), (root_name, root_key), ca=True)
    _, leaf = signed_pem(leaf_key, "late.example.com", (inter_name, inter_key), ca=False)
    # A certificate of the same names signed by another key must stay unlinked.
    _, forged = signed_pem(leaf_key, "forged.example.com", (inter_name, leaf_key), ca=False)
    leaf_id = data(api.post(f"{API}/certificates/import", json={"certificate": leaf}), 201)["id"]
    forged_id = data(api.post(f"{API}/certificates/import", json={"certificate": forged}), 201)
    inter_id = data(api.post(f"{API}/cas/import", json={"certificate": inter}), 201)["id"]
    assert data(api.get(f"{API}/certificates/{leaf_id}"))["ca_id"] == inter_id
    assert data(api.get(f"{API}/certificates/{forged_id['id']}"))["ca_id"] is None
    assert data(api.get(f"{API}/cas/{inter_id}"))["parent_id"] is None
    root_id = data(api.post(f"{API}/cas/import", json={"certificate": root}), 201)["id"]
    assert data(api.get(f"{API}/cas/{inter_id}"))["parent_id"] == root_id
    chain = api.get(f"{API}/certificates/{leaf_id}/export", params={"format": "chain"})
    assert chain.text.count("BEGIN CERTIFICATE") == 3


def test_a_flag_that_is_no_yes_or_no_word_is_refused(
    server: Server, api: httpx.Client, workdir: Path
) -> None:
    """`import_key=ture` (or `y`, or empty) used to mean false: the key was silently left
    behind. Only the words for true and false are taken, in any case; anything else is a 400
    and nothing is written."""
    root = foreign_root(workdir, f"/CN={unique('Flag Root')}")
    leaf = foreign_signed(workdir, root, f"/CN={unique('flag')}.example", "v3_leaf")
    upload = {"file": ("leaf.pem", (leaf.pem + leaf.key_pem).encode(), "application/x-pem")}
    before = count(server, "certificates")
    for word in ("ture", "y", "", "maybe"):
        for path, name in (
            ("certificates/import", "import_key"),
            ("import/execute", "import_keys"),
        ):
            refused = api.post(f"{API}/{path}", files=upload, data={name: word})
            assert error(refused, 400) == f"{name} must be true or false", (path, word)
    assert count(server, "certificates") == before
    kept = data(
        api.post(f"{API}/certificates/import", files=upload, data={"import_key": " ON "}), 201
    )
    assert kept["private_key_available"] is True
