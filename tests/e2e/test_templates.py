"""Issuing with a template: the core applies it, and refuses requests that contradict it."""

import uuid
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.tools import openssl_csr, pkilint_findings


def template_id(api: httpx.Client, name: str) -> int:
    listed = api.get("/api/v2/templates")
    assert listed.status_code == 200, listed.text
    return next(t["id"] for t in listed.json()["data"] if t["name"] == name)


def make_root(api: httpx.Client) -> int:
    body = {"common_name": "Template Root", "ca_type": "root", "key_algorithm": "EC"}
    created = api.post("/api/v2/cas", json=body)
    assert created.status_code == 201, created.text
    return int(created.json()["data"]["id"])


def test_client_template_sets_eku_and_validity(api: httpx.Client, workdir: Path) -> None:
    ca_id, tid = make_root(api), template_id(api, "Client Authentication")
    issued = api.post(
        "/api/v2/certificates",
        json={
            "common_name": "bob",
            "ca_id": ca_id,
            "template_id": tid,
            "san": ["email:bob@example.com"],
        },
    )
    assert issued.status_code == 201, issued.text
    data = issued.json()["data"]
    assert data["template_id"] == tid
    pem = api.get(f"/api/v2/certificates/{data['id']}/export", params={"format": "pem"}).text
    cert = x509.load_pem_x509_certificate(pem.encode())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 365
    assert pkilint_findings(workdir, pem) == ""


def test_request_conflicting_with_template_is_refused(api: httpx.Client) -> None:
    ca_id, tid = make_root(api), template_id(api, "Web Server")
    before = api.get("/api/v2/certificates/stats").json()["data"]["total"]
    conflicting = api.post(
        "/api/v2/certificates",
        json={
            "common_name": "web.example.com",
            "ca_id": ca_id,
            "template_id": tid,
            "extended_key_usage": ["clientAuth"],
        },
    )
    assert conflicting.status_code == 422
    assert "conflicts with template" in conflicting.json()["message"]
    too_long = api.post(
        "/api/v2/certificates",
        json={
            "common_name": "web.example.com",
            "ca_id": ca_id,
            "template_id": tid,
            "validity_days": 1000,
        },
    )
    assert too_long.status_code == 422
    assert "at most 397 days" in too_long.json()["message"]
    assert api.get("/api/v2/certificates/stats").json()["data"]["total"] == before


def test_unknown_template_is_404(api: httpx.Client) -> None:
    assert api.get("/api/v2/templates/999999").status_code == 404
    issued = api.post(
        "/api/v2/certificates",
        json={"common_name": "x.example.com", "ca_id": make_root(api), "template_id": 999999},
    )
    assert issued.status_code == 404
    assert issued.json() == {"error": True, "code": 404, "message": "template 999999 not found"}


def test_usages_spelled_otherwise_are_the_same_usages(api: httpx.Client) -> None:
    """nonRepudiation is contentCommitment (RFC 5280 4.2.1.3) and an EKU may be written as its
    OID: a request, or the renewal of the template's own certificate (which reads its usages
    back as contentCommitment and serverAuth), naming the same usages does not conflict."""
    body = {
        "name": f"Signing {uuid.uuid4().hex[:8]}",
        "key_type": "EC",
        "key_usage": ["digitalSignature", "nonRepudiation"],
        "extended_key_usage": ["1.3.6.1.5.5.7.3.1"],
    }
    created = api.post("/api/v2/templates", json=body)
    assert created.status_code == 201, created.text
    request = {"common_name": "nr.example.com", "ca_id": make_root(api)}
    request["template_id"] = created.json()["data"]["id"]
    same = {"key_usage": ["contentCommitment", "digitalSignature"]}
    same |= {"extended_key_usage": ["serverAuth"]}
    issued = api.post("/api/v2/certificates", json={**request, **same})
    assert issued.status_code == 201, issued.text
    cert_id = issued.json()["data"]["id"]
    renewed = api.post(f"/api/v2/certificates/{cert_id}/renew", json={})
    assert renewed.status_code == 201, renewed.text
    bulk = api.post("/api/v2/certificates/bulk/renew", json={"ids": [cert_id]})
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["data"]["success"] == [cert_id], bulk.text
    narrower = api.post("/api/v2/certificates", json={**request, "key_usage": ["digitalSignature"]})
    assert narrower.status_code == 422
    assert "conflicts with template" in narrower.json()["message"]


def test_a_key_type_the_template_does_not_allow_is_refused_by_name(api: httpx.Client) -> None:
    """The seed's template fixes RSA-2048: asking it for another key type is a 422 naming the
    template's key and the one asked for, not a complaint about the template's own size, and
    no certificate is issued."""
    body = {"name": f"RSA only {uuid.uuid4().hex[:8]}", "key_size": 2048}
    created = api.post("/api/v2/templates", json=body)
    assert created.status_code == 201, created.text
    request = {"common_name": "key.example.com", "ca_id": make_root(api)}
    request["template_id"] = created.json()["data"]["id"]
    before = api.get("/api/v2/certificates/stats").json()["data"]["total"]
    for algorithm, label in (("EC", "EC-P256"), ("Ed25519", "Ed25519")):
        refused = api.post("/api/v2/certificates", json={**request, "key_algorithm": algorithm})
        assert refused.status_code == 422, refused.text
        message = refused.json()["message"]
        assert "requires RSA-2048" in message and label in message, message
    assert api.get("/api/v2/certificates/stats").json()["data"]["total"] == before
    issued = api.post("/api/v2/certificates", json={**request, "key_algorithm": "RSA"})
    assert issued.status_code == 201, issued.text
    assert issued.json()["data"]["key_size"] == 2048


def test_renewal_follows_the_template_as_it_is_now(api: httpx.Client) -> None:
    """Templates change (validity shortened as the CA/Browser Forum asks, RSA raised to 3072
    bits, a usage added): renewing, alone or in bulk, a certificate issued under the old
    rules gives one under the new ones instead of a 422 for the old certificate's values. A
    period asked for explicitly is still held to the template."""
    body = {
        "name": f"Evolving {uuid.uuid4().hex[:8]}",
        "validity_days": 100,
        "key_size": 2048,
        "extended_key_usage": ["serverAuth"],
    }
    created = api.post("/api/v2/templates", json=body)
    assert created.status_code == 201, created.text
    template = created.json()["data"]["id"]
    request = {"ca_id": make_root(api), "template_id": template}
    ids = []
    for name in ("one.example.com", "two.example.com"):
        issued = api.post("/api/v2/certificates", json={**request, "common_name": name})
        assert issued.status_code == 201, issued.text
        ids.append(issued.json()["data"]["id"])
    changes = {
        "validity_days": 50,
        "key_size": 3072,
        "extended_key_usage": ["serverAuth", "clientAuth"],
    }
    changed = api.put(f"/api/v2/templates/{template}", json=changes)
    assert changed.status_code == 200, changed.text

    too_long = api.post(f"/api/v2/certificates/{ids[0]}/renew", json={"validity_days": 80})
    assert too_long.status_code == 422
    assert "at most 50 days" in too_long.json()["message"]
    single = api.post(f"/api/v2/certificates/{ids[0]}/renew", json={})
    assert single.status_code == 201, single.text
    bulk = api.post("/api/v2/certificates/bulk/renew", json={"ids": [ids[1]]})
    assert bulk.status_code == 200 and bulk.json()["data"]["success"] == [ids[1]], bulk.text
    renewed_ids = [single.json()["data"]["id"], bulk.json()["data"]["renewed"][0]["new_id"]]
    for renewed_id in renewed_ids:
        pem = api.get(f"/api/v2/certificates/{renewed_id}/export", params={"format": "pem"})
        cert = x509.load_pem_x509_certificate(pem.content)
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 50
        assert cert.public_key().key_size == 3072  # type: ignore[union-attr]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_a_ca_template_refuses_an_end_entity_request_and_says_why(
    api: httpx.Client, workdir: Path
) -> None:
    body = {
        "name": f"Sub CA {uuid.uuid4().hex[:8]}",
        "key_usage": ["keyCertSign", "cRLSign"],
        "basic_constraints": {"ca": True, "path_length": 0},
    }
    created = api.post("/api/v2/templates", json=body)
    assert created.status_code == 201, created.text
    request = {"ca_id": make_root(api), "template_id": created.json()["data"]["id"]}
    issued = api.post("/api/v2/certificates", json={**request, "common_name": "leaf.example"})
    folder = workdir / f"ca-template-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    _, csr = openssl_csr(folder, "/CN=leaf.example", "ec", "DNS:leaf.example")
    uploaded = api.post("/api/v2/csrs", json={"csr": csr.read_text()})
    assert uploaded.status_code == 201, uploaded.text
    signed = api.post(f"/api/v2/csrs/{uploaded.json()['data']['id']}/sign", json=request)
    for refused in (issued, signed):
        assert refused.status_code == 422, refused.text
        message = refused.json()["message"]
        assert "issues CA certificates only" in message and "end-entity" in message, message


def test_renewal_onto_a_new_key_type_takes_that_types_usages(api: httpx.Client) -> None:
    """A template moved from RSA to EC: the renewal of a certificate whose key the server
    made is an EC key, with the usages an EC key may have, not the RSA certificate's
    keyEncipherment (which no EC key can do, RFC 5480)."""
    body = {"name": f"To EC {uuid.uuid4().hex[:8]}", "key_size": 2048}
    created = api.post("/api/v2/templates", json=body)
    assert created.status_code == 201, created.text
    template = created.json()["data"]["id"]
    request = {"ca_id": make_root(api), "template_id": template, "common_name": "ec.example.com"}
    issued = api.post("/api/v2/certificates", json=request)
    assert issued.status_code == 201, issued.text
    changed = api.put(f"/api/v2/templates/{template}", json={"key_type": "EC"})
    assert changed.status_code == 200, changed.text
    renewed = api.post(f"/api/v2/certificates/{issued.json()['data']['id']}/renew", json={})
    assert renewed.status_code == 201, renewed.text
    assert renewed.json()["data"]["key_algorithm"] == "EC"
    pem = api.get(f"/api/v2/certificates/{renewed.json()['data']['id']}/export")
    usage = x509.load_pem_x509_certificate(pem.content).extensions.get_extension_for_class(
        x509.KeyUsage
    )
    assert usage.value.digital_signature and not usage.value.key_encipherment


def test_a_ca_is_created_under_a_ca_template(api: httpx.Client, workdir: Path) -> None:
    body = {
        "name": f"Issuing CA {uuid.uuid4().hex[:8]}",
        "validity_days": 900,
        "key_type": "EC",
        "key_size": 384,
        "key_usage": ["keyCertSign", "cRLSign"],
        "basic_constraints": {"ca": True, "path_length": 0},
        "subject_defaults": {"organization": "Template Org", "country": "DE"},
    }
    created = api.post("/api/v2/templates", json=body)
    assert created.status_code == 201, created.text
    tid, root = created.json()["data"]["id"], make_root(api)
    sub = {"common_name": "Templated Sub CA", "ca_type": "intermediate", "parent_id": root}
    made = api.post("/api/v2/cas", json={**sub, "template_id": tid})
    assert made.status_code == 201, made.text
    pem = api.get(f"/api/v2/cas/{made.json()['data']['id']}/export", params={"format": "pem"})
    cert = x509.load_pem_x509_certificate(pem.content)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert cert.public_key().key_size == 384  # type: ignore[union-attr]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 900
    assert cert.subject.rfc4514_string() == "CN=Templated Sub CA,O=Template Org,C=DE"
    assert pkilint_findings(workdir, pem.text) == ""

    longer = api.post("/api/v2/cas", json={**sub, "template_id": tid, "validity_days": 1000})
    assert longer.status_code == 422 and "at most 900 days" in longer.json()["message"]
    rsa = api.post("/api/v2/cas", json={**sub, "template_id": tid, "key_algorithm": "RSA"})
    assert rsa.status_code == 422 and "requires EC-P384" in rsa.json()["message"], rsa.text
    leaf_template = template_id(api, "Web Server")
    leafish = api.post("/api/v2/cas", json={**sub, "template_id": leaf_template})
    assert leafish.status_code == 422 and "end-entity certificates only" in leafish.text
    unknown = api.post("/api/v2/cas", json={**sub, "template_id": 999999})
    assert unknown.status_code == 404, unknown.text


def test_time_stamping_is_not_combined_with_other_purposes(api: httpx.Client) -> None:
    """RFC 3161 2.3: a time-stamping certificate's EKU holds timeStamping alone; a template
    or a request that combines it is refused, and nothing is created."""
    usages = ["timeStamping", "codeSigning"]
    name = f"TSA and more {uuid.uuid4().hex[:8]}"
    refused = api.post("/api/v2/templates", json={"name": name, "extended_key_usage": usages})
    assert refused.status_code in (400, 422), refused.text
    assert "RFC 3161" in refused.json()["message"]
    assert all(t["name"] != name for t in api.get("/api/v2/templates").json()["data"])
    request = {"common_name": "tsa.example.com", "ca_id": make_root(api)}
    issued = api.post("/api/v2/certificates", json={**request, "extended_key_usage": usages})
    assert issued.status_code in (400, 422), issued.text
    assert "RFC 3161" in issued.json()["message"]
    alone = api.post("/api/v2/certificates", json={**request, "extended_key_usage": usages[:1]})
    assert alone.status_code == 201, alone.text
