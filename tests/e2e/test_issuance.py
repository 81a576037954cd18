"""CAs and certificates through the native API, checked by openssl and pkilint."""

from pathlib import Path

import httpx
import pytest

from tests.tools import openssl, openssl_csr, openssl_verify, pem_blocks, pkilint_findings

KEY_TYPES = [
    ("RSA", 2048),
    ("RSA", 3072),
    ("RSA", 4096),
    ("EC", 256),
    ("EC", 384),
    ("EC", 521),
    ("Ed25519", None),
]


def create_root(
    api: httpx.Client, name: str, algorithm: str = "EC", size: int | None = 384, **extra: object
) -> dict:
    body: dict[str, object] = {
        "common_name": name,
        "organization": "Tessera Tests",
        "country": "US",
        "ca_type": "root",
        "key_algorithm": algorithm,
        "validity_days": 3650,
        **extra,
    }
    if size:
        body["key_size"] = size
    response = api.post("/api/v2/cas", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def create_intermediate(api: httpx.Client, parent: int, name: str, **extra: object) -> dict:
    body = {
        "common_name": name,
        "ca_type": "intermediate",
        "parent_id": parent,
        "validity_days": 1825,
        "key_algorithm": "EC",
        "key_size": 256,
        **extra,
    }
    response = api.post("/api/v2/cas", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def export(api: httpx.Client, path: str, **params: str) -> httpx.Response:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response


def test_root_and_intermediate_hierarchy(api: httpx.Client, workdir: Path) -> None:
    root = create_root(api, "Hierarchy Root")
    inter = create_intermediate(api, root["id"], "Hierarchy Issuing CA")
    assert root["ca_type"] == "root" and inter["parent_id"] == root["id"]
    tree = api.get("/api/v2/cas/tree").json()["data"]
    node = next(n for n in tree if n["id"] == root["id"])
    assert [c["id"] for c in node["children"]] == [inter["id"]]
    chain = pem_blocks(export(api, f"/api/v2/cas/{inter['id']}/export", format="chain").text)
    assert len(chain) == 2
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    for index, pem in enumerate(chain):
        assert pkilint_findings(workdir, pem, f"ca{index}.pem") == ""
    der = export(api, f"/api/v2/cas/{root['id']}/export", format="der").content
    assert openssl("x509", "-inform", "DER", "-noout", "-subject", input=der).returncode == 0


@pytest.mark.parametrize(("algorithm", "size"), KEY_TYPES)
def test_issue_each_key_type(
    api: httpx.Client, workdir: Path, algorithm: str, size: int | None
) -> None:
    root = create_root(api, f"Root for {algorithm}{size}")
    inter = create_intermediate(api, root["id"], f"Issuing for {algorithm}{size}")
    body = {
        "common_name": "server.example.com",
        "ca_id": inter["id"],
        "validity_days": 90,
        "key_algorithm": algorithm,
        "san": ["dns:server.example.com", "ip:192.0.2.10"],
        "extended_key_usage": ["serverAuth"],
    }
    if size:
        body["key_size"] = size
    issued = api.post("/api/v2/certificates", json=body)
    assert issued.status_code == 201, issued.text
    cert = issued.json()["data"]
    assert cert["status"] == "active" and cert["private_key_available"] is True
    details = api.get(f"/api/v2/certificates/{cert['id']}").json()["data"]
    assert details["key_algorithm"] == algorithm
    assert details["san"] == ["dns:server.example.com", "ip:192.0.2.10"]
    assert details["extended_key_usage"] == ["serverAuth"]
    chain = pem_blocks(
        export(api, f"/api/v2/certificates/{cert['id']}/export", format="chain").text
    )
    assert len(chain) == 3
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    assert pkilint_findings(workdir, chain[0]) == ""


def test_client_certificate_and_pkcs12(api: httpx.Client, workdir: Path) -> None:
    root = create_root(api, "Client Root", "RSA", 2048)
    issued = api.post(
        "/api/v2/certificates",
        json={
            "common_name": "alice",
            "ca_id": root["id"],
            "key_algorithm": "RSA",
            "key_size": 2048,
            "san": ["email:alice@example.com"],
            "extended_key_usage": ["clientAuth"],
            "key_usage": ["digitalSignature"],
        },
    )
    assert issued.status_code == 201, issued.text
    cert_id = issued.json()["data"]["id"]
    leaf = export(api, f"/api/v2/certificates/{cert_id}/export", format="pem").text
    assert pkilint_findings(workdir, leaf) == ""
    p12 = export(
        api, f"/api/v2/certificates/{cert_id}/export", format="pkcs12", password="s3cret-pass"
    ).content
    (workdir / "alice.p12").write_bytes(p12)
    opened = openssl(
        "pkcs12",
        "-in",
        str(workdir / "alice.p12"),
        "-passin",
        "pass:s3cret-pass",
        "-nodes",
        "-info",
    )
    text = opened.stdout.decode()
    assert opened.returncode == 0, opened.stderr.decode()
    assert "BEGIN PRIVATE KEY" in text and text.count("BEGIN CERTIFICATE") == 2
    wrong = openssl("pkcs12", "-in", str(workdir / "alice.p12"), "-passin", "pass:nope", "-nodes")
    assert wrong.returncode != 0
    with_key = export(
        api, f"/api/v2/certificates/{cert_id}/export", format="pem", include_key="true"
    ).text
    assert "BEGIN PRIVATE KEY" in with_key
    logs = api.get("/api/v2/certificates/stats").json()["data"]
    assert logs["total"] >= 1


def test_csr_signing_with_openssl_request(api: httpx.Client, workdir: Path) -> None:
    root = create_root(api, "CSR Root")
    key, csr = openssl_csr(
        workdir, "/CN=csr.example.com", sans="DNS:csr.example.com,DNS:alt.example.com"
    )
    issued = api.post("/api/v2/certificates", json={"ca_id": root["id"], "csr": csr.read_text()})
    assert issued.status_code == 201, issued.text
    data = issued.json()["data"]
    assert data["private_key_available"] is False
    assert data["san"] == ["dns:csr.example.com", "dns:alt.example.com"]
    pem = export(api, f"/api/v2/certificates/{data['id']}/export", format="pem").text
    (workdir / "leaf.pem").write_text(pem)
    modulus = openssl("x509", "-in", str(workdir / "leaf.pem"), "-noout", "-pubkey").stdout
    assert modulus == openssl("pkey", "-in", str(key), "-pubout").stdout


def test_a_sub_ca_inherits_its_issuers_path_length(api: httpx.Client, workdir: Path) -> None:
    """A root with pathLen 1 allows one CA below it. An intermediate that asks for no path
    length gets one less than its issuer's (0 here), so a CA under it is refused (422) instead
    of being signed into a chain that openssl rejects ("path length constraint exceeded")."""
    root = create_root(api, "PathLen Root", path_length=1)
    inter = create_intermediate(api, root["id"], "PathLen Issuing")
    details = api.get(f"/api/v2/cas/{inter['id']}").json()["data"]
    assert details["path_length"] == 0
    below = api.post(
        "/api/v2/cas",
        json={
            "common_name": "PathLen Too Deep",
            "ca_type": "intermediate",
            "parent_id": inter["id"],
        },
    )
    assert below.status_code == 422, below.text
    issued = api.post(
        "/api/v2/certificates", json={"common_name": "pl.example.com", "ca_id": inter["id"]}
    )
    assert issued.status_code == 201, issued.text
    chain = pem_blocks(
        export(
            api, f"/api/v2/certificates/{issued.json()['data']['id']}/export", format="chain"
        ).text
    )
    assert len(chain) == 3
    assert "OK" in openssl_verify(workdir, chain[0], chain[1:])
    assert pkilint_findings(workdir, chain[1], "inter.pem") == ""
