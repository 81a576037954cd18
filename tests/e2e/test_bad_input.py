"""Bad input to the native API: a clear 4xx in the seed's error format, never a 500, and
nothing half-written (the CA and certificate inventory is unchanged afterwards)."""

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import data, self_signed_ca, unique
from tests.e2e.helpers import error as assert_error
from tests.support import Server

HUGE = 2**63  # past every INTEGER column, on SQLite and PostgreSQL alike


def inventory(api: httpx.Client) -> tuple[int, int, int]:
    """(CAs, certificates, revoked certificates) as the list and stats endpoints count them."""
    listing = api.get("/api/v2/cas", params={"per_page": 100})
    assert listing.status_code == 200, listing.text
    stats = data(api.get("/api/v2/certificates/stats"))
    return listing.json()["meta"]["total"], stats["total"], stats["revoked"]


@contextmanager
def nothing_written(api: httpx.Client) -> Iterator[None]:
    before = inventory(api)
    yield
    assert inventory(api) == before


@pytest.fixture(scope="module")
def root(server: Server) -> dict[str, Any]:
    """One EC root CA (ten years) shared by the module's tests."""
    with server.client() as client:
        body = {
            "common_name": "Bad Input Root",
            "key_algorithm": "EC",
            "key_size": 256,
            "validity_days": 3650,
        }
        return dict(data(client.post("/api/v2/cas", json=body), 201))


def issue(api: httpx.Client, ca_id: int, **extra: object) -> dict[str, Any]:
    body = {"common_name": "leaf.example.com", "ca_id": ca_id, "key_algorithm": "EC", **extra}
    return dict(data(api.post("/api/v2/certificates", json=body), 201))


# --- things built locally with `cryptography` -----------------------------------------------------


def make_csr(key_size: int = 2048, name: str = "csr.example.com") -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def pem(der: bytes, label: str) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def ca_pkcs12(password: bytes) -> bytes:
    cert, key = self_signed_ca(unique("Foreign P12 Root"))
    return pkcs12.serialize_key_and_certificates(
        b"foreign", key, cert, None, serialization.BestAvailableEncryption(password)
    )


# --- malformed bodies and wrong types -------------------------------------------------------------

MALFORMED = [b'{"common_name": ', b'{"common_name": "x",}', b"common_name=x", b"\xff\xfe{}"]


@pytest.mark.parametrize("body", MALFORMED, ids=["truncated", "trailing-comma", "form", "binary"])
@pytest.mark.parametrize(
    "path", ["/api/v2/cas", "/api/v2/certificates", "/api/v2/users", "/api/v2/account/apikeys"]
)
def test_malformed_json_is_400(api: httpx.Client, path: str, body: bytes) -> None:
    users = len(data(api.get("/api/v2/users")))
    with nothing_written(api):
        response = api.post(path, content=body, headers={"content-type": "application/json"})
        assert_error(response, 400)
    assert len(data(api.get("/api/v2/users"))) == users


WRONG_TYPES = [
    ("/api/v2/cas", {"common_name": "x", "validity_days": "abc"}, "validity_days"),
    ("/api/v2/cas", {"common_name": "x", "key_size": "big"}, "key_size"),
    ("/api/v2/cas", {"common_name": "x", "ca_type": "leaf"}, "ca_type"),
    ("/api/v2/cas", {"common_name": ""}, "common_name"),
    ("/api/v2/cas", {"common_name": "x" * 65}, "common_name"),
    ("/api/v2/cas", {"common_name": "x", "country": "USA"}, "country"),
    ("/api/v2/cas", {"common_name": "x", "validity_days": 0}, "validity_days"),
    ("/api/v2/cas", {"organization": "no name"}, "common_name"),
    ("/api/v2/cas", ["common_name", "x"], "body"),
    ("/api/v2/certificates", {"ca_id": "ROOT", "validity_days": "abc"}, "validity_days"),
    ("/api/v2/certificates", {"common_name": "x", "ca_id": "first"}, "ca_id"),
    ("/api/v2/certificates", {"common_name": "x"}, "ca_id"),
    ("/api/v2/certificates", {"common_name": "x", "ca_id": "ROOT", "san": "dns:x"}, "san"),
    ("/api/v2/certificates", {"common_name": "x", "ca_id": "ROOT", "key_usage": "x"}, "key_usage"),
    ("/api/v2/certificates", {"common_name": "x", "ca_id": 1.5}, "ca_id"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "field"), WRONG_TYPES)
def test_wrong_types_are_422(
    api: httpx.Client, root: dict[str, Any], path: str, body: Any, field: str
) -> None:
    if isinstance(body, dict):
        body = {k: root["id"] if v == "ROOT" else v for k, v in body.items()}
    with nothing_written(api):
        assert field in assert_error(api.post(path, json=body), 422)


def test_huge_ids_in_json_bodies_are_422(api: httpx.Client, root: dict[str, Any]) -> None:
    with nothing_written(api):
        big_ca = {"common_name": "x.example.com", "ca_id": HUGE}
        assert "ca_id" in assert_error(api.post("/api/v2/certificates", json=big_ca), 422)
        big_template = {"common_name": "x.example.com", "ca_id": root["id"], "template_id": HUGE}
        message = assert_error(api.post("/api/v2/certificates", json=big_template), 422)
        assert "template_id" in message
        parent = {"common_name": "Sub", "ca_type": "intermediate", "parent_id": HUGE}
        assert "parent_id" in assert_error(api.post("/api/v2/cas", json=parent), 422)
        bulk = {"ids": [root["id"], HUGE]}
        assert_error(api.post("/api/v2/cas/bulk/delete", json=bulk), 422)
    assert data(api.get(f"/api/v2/cas/{root['id']}"))["id"] == root["id"]


def test_nul_characters_in_json_strings_are_422(server: Server, api: httpx.Client) -> None:
    users = len(data(api.get("/api/v2/users")))
    with nothing_written(api):
        ca = {"common_name": "Nul\u0000Root", "key_algorithm": "EC"}
        assert "common_name" in assert_error(api.post("/api/v2/cas", json=ca), 422)
        user = {"username": "nul\u0000user", "password": "long-enough-password"}
        assert "username" in assert_error(api.post("/api/v2/users", json=user), 422)
        with server.client(api_key="") as anonymous:
            login = {"username": "admin\u0000", "password": "whatever-password"}
            assert_error(anonymous.post("/api/v2/auth/login/password", json=login), 422)
    assert len(data(api.get("/api/v2/users"))) == users


def test_unpaired_surrogates_in_json_are_400(
    server: Server, api: httpx.Client, root: dict[str, Any]
) -> None:
    """JSON allows the escape "\\ud800", but it decodes to no character: it is refused at
    the door, in the issuance lane as on routed endpoints, logged in or not, and inside
    JSON carried in a string (a template import)."""
    lone = b'"\\ud800"'
    headers = {"Content-Type": "application/json"}
    with nothing_written(api):
        issue = b'{"ca_id": %d, "common_name": "s.example.com", "csr": %s}' % (root["id"], lone)
        assert "surrogate" in assert_error(
            api.post("/api/v2/certificates", content=issue, headers=headers), 400
        )
        ca = b'{"common_name": %s, "key_algorithm": "EC"}' % lone
        assert_error(api.post("/api/v2/cas", content=ca, headers=headers), 400)
        with server.client(api_key="") as anonymous:
            methods = b'{"username": %s}' % lone
            assert_error(
                anonymous.post("/api/v2/auth/methods", content=methods, headers=headers), 400
            )
        inner = '[{"name": "\\ud800", "validity_days": 30}]'
        imported = api.post("/api/v2/templates/import", json={"json_content": inner})
        assert_error(imported, 400)
    # a pair is one character, and passes
    pair = b'{"common_name": "Pair \\ud83d\\ude00 Root", "key_algorithm": "EC"}'
    created = data(api.post("/api/v2/cas", content=pair, headers=headers), 201)
    assert created["common_name"] == "Pair \U0001f600 Root"


def test_a_templates_wrapper_that_holds_no_array_is_400(api: httpx.Client) -> None:
    """{"templates": ...} is the export's wrapper; holding anything but an array of templates,
    it is refused as such, not read as one template named by nothing."""
    with nothing_written(api):
        for held in (5, "x", {"name": unique("wrapped")}, None):
            upload = {"file": ("t.json", json.dumps({"templates": held}).encode(), "text/json")}
            message = assert_error(api.post("/api/v2/templates/import", files=upload), 400)
            assert "array of templates" in message


def test_json_in_another_encoding_than_utf8_is_400(
    server: Server, api: httpx.Client, root: dict[str, Any]
) -> None:
    """RFC 8259 8.1: JSON is exchanged in UTF-8. Python's parser would read UTF-16 and
    UTF-32 too, where a surrogate escape hides from a look at the bytes."""
    headers = {"Content-Type": "application/json"}
    with nothing_written(api):
        for encoding in ("utf-16", "utf-16-le", "utf-32"):
            issue = {"ca_id": root["id"], "common_name": "s.example.com", "csr": "\ud800"}
            body = json.dumps(issue).encode(encoding)
            assert "UTF-8" in assert_error(
                api.post("/api/v2/certificates", content=body, headers=headers), 400
            )
            with server.client(api_key="") as anonymous:
                methods = json.dumps({"username": "\ud800"}).encode(encoding)
                assert_error(
                    anonymous.post("/api/v2/auth/methods", content=methods, headers=headers), 400
                )
            template = json.dumps([{"name": "t", "subject_defaults": {"organization": "\ud800"}}])
            upload = {"file": ("t.json", template.encode(encoding), "application/json")}
            assert_error(api.post("/api/v2/templates/import", files=upload), 400)
    # UTF-8 with a byte order mark is still UTF-8 (RFC 8259 8.1 lets a parser ignore it)
    body = (
        b"\xef\xbb\xbf"
        + json.dumps({"common_name": unique("BOM Root"), "key_algorithm": "EC"}).encode()
    )
    data(api.post("/api/v2/cas", content=body, headers=headers), 201)


@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")  # made so on purpose
def test_csr_subjects_within_rfc5280_bounds(api: httpx.Client, root: dict[str, Any]) -> None:
    """A CSR brings the subject it likes; what breaks RFC 5280's upper bounds (appendix A.1)
    is refused before signing, whatever path it takes."""
    key = rsa.generate_private_key(65537, 2048)
    for attribute, message in (
        (x509.NameAttribute(NameOID.COMMON_NAME, "a" * 100, _validate=False), "CN"),
        (x509.NameAttribute(NameOID.COUNTRY_NAME, "XYZ", _validate=False), "country"),
        (x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o" * 65, _validate=False), "O"),
    ):
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([attribute]))
            .sign(key, hashes.SHA256())
        )
        body = {"ca_id": root["id"], "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}
        with nothing_written(api):
            assert message in assert_error(api.post("/api/v2/certificates", json=body), 422)


def test_huge_ids_in_acme_settings_are_422(api: httpx.Client) -> None:
    for body in (
        {"issuing_ca_id": HUGE},
        {"template_id": HUGE},
        {"caa_check_ca_ids": [HUGE]},
        {"profiles": {"p": {"template_id": HUGE}}},
    ):
        assert_error(api.patch("/api/v2/acme/settings", json=body), 422)


def test_nul_in_san_list_is_422(api: httpx.Client, root: dict[str, Any]) -> None:
    with nothing_written(api):
        body = {"common_name": "x.example.com", "ca_id": root["id"], "san": ["dns:a\u0000b"]}
        assert "san" in assert_error(api.post("/api/v2/certificates", json=body), 422)


# --- unknown ids ----------------------------------------------------------------------------------

UNKNOWN = [
    ("GET", "/api/v2/cas/999999", None),
    ("PATCH", "/api/v2/cas/999999", {"name": "renamed"}),
    ("DELETE", "/api/v2/cas/999999", None),
    ("GET", "/api/v2/cas/999999/export", None),
    ("GET", "/api/v2/cas/999999/certificates", None),
    ("GET", "/api/v2/certificates/999999", None),
    ("DELETE", "/api/v2/certificates/999999", None),
    ("GET", "/api/v2/certificates/999999/export", None),
    ("POST", "/api/v2/certificates/999999/revoke", {"reason": "superseded"}),
    ("POST", "/api/v2/certificates/999999/renew", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN)
def test_unknown_ids_are_404(api: httpx.Client, method: str, path: str, body: Any) -> None:
    with nothing_written(api):
        assert "999999" in assert_error(api.request(method, path, json=body), 404)


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v2/cas/{HUGE}",
        f"/api/v2/certificates/{HUGE}",
        f"/api/v2/certificates?ca_id={HUGE}",
        f"/api/v2/certificates?page={HUGE}",
    ],
)
def test_huge_ids_in_paths_and_queries_are_4xx(server: Server, path: str) -> None:
    with server.client() as client:  # a fresh connection: a 500 closes it
        response = client.get(path)
    assert response.status_code in (404, 422), response.text
    assert_error(response, response.status_code)


def test_nul_in_search_query_is_4xx(server: Server) -> None:
    with server.client() as client:
        response = client.get("/api/v2/certificates", params={"search": "a\u0000b"})
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code)


def test_nul_in_multipart_import_name_is_4xx(server: Server) -> None:
    p12 = ca_pkcs12(b"right-password")
    with server.client() as client:
        before = inventory(client)
        response = client.post(
            "/api/v2/cas/import",
            files={"file": ("ca.p12", p12, "application/x-pkcs12")},
            data={"password": "right-password", "name": "Nul\u0000Name"},
        )
    with server.client() as client:
        assert inventory(client) == before
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code)


# --- CSRs, keys and names -------------------------------------------------------------------------


GARBAGE_CSRS = [
    "this is not a CSR",
    "-----BEGIN CERTIFICATE REQUEST-----\nnot*base64*at*all\n-----END CERTIFICATE REQUEST-----",
    pem(base64.b64decode("MIIBIjANBgkqhkiG9w0BAQEF"), "CERTIFICATE REQUEST"),
    pem(b"\x30\x82\x01\x00" + b"\x00" * 40, "CERTIFICATE REQUEST"),
]


@pytest.mark.parametrize("csr", GARBAGE_CSRS, ids=["text", "bad-base64", "truncated", "zeros"])
def test_garbage_csr_is_400(api: httpx.Client, root: dict[str, Any], csr: str) -> None:
    with nothing_written(api):
        response = api.post("/api/v2/certificates", json={"ca_id": root["id"], "csr": csr})
        assert "certificate signing request" in assert_error(response, 400)


def test_csr_whose_signature_does_not_verify_is_422(
    api: httpx.Client, root: dict[str, Any]
) -> None:
    der = bytearray(make_csr())
    der[-20] ^= 0x01  # inside the signature BIT STRING, the last element of the CSR
    tampered = x509.load_der_x509_csr(bytes(der))
    assert tampered.is_signature_valid is False  # still parses; only the signature is wrong
    with nothing_written(api):
        body = {"ca_id": root["id"], "csr": pem(bytes(der), "CERTIFICATE REQUEST")}
        assert "signature" in assert_error(api.post("/api/v2/certificates", json=body), 422)
    intact = {"ca_id": root["id"], "csr": pem(make_csr(), "CERTIFICATE REQUEST")}
    assert data(api.post("/api/v2/certificates", json=intact), 201)["san"] == [
        "dns:csr.example.com"
    ]


def test_rsa_1024_is_refused_with_422(api: httpx.Client, root: dict[str, Any]) -> None:
    with nothing_written(api):
        weak = {
            "common_name": "weak.example.com",
            "ca_id": root["id"],
            "key_algorithm": "RSA",
            "key_size": 1024,
        }
        assert "2048" in assert_error(api.post("/api/v2/certificates", json=weak), 422)
        weak_ca = {"common_name": "Weak CA", "key_algorithm": "RSA", "key_size": 1024}
        assert "2048" in assert_error(api.post("/api/v2/cas", json=weak_ca), 422)
        csr = {"ca_id": root["id"], "csr": pem(make_csr(1024), "CERTIFICATE REQUEST")}
        assert "2048" in assert_error(api.post("/api/v2/certificates", json=csr), 422)


def test_a_key_size_is_answered_alike_at_both_ends_and_everywhere(
    api: httpx.Client, root: dict[str, Any]
) -> None:
    """One rule (core/keys.parse_key_spec) for CAs, certificates and templates: an RSA size
    Tessera does not generate is 422 below the floor and above it alike (0 is no "default");
    an EC size that names no curve is 400 however small or large."""
    templates = len(data(api.get("/api/v2/templates")))

    def refused(algorithm: str, size: int) -> list[tuple[str, int, str]]:
        answers = []
        for path, body in (
            ("/api/v2/cas", {"common_name": unique("Sized CA")}),
            ("/api/v2/certificates", {"common_name": "sized.example.com", "ca_id": root["id"]}),
            ("/api/v2/templates", {"name": unique("Sized")}),
        ):
            key = "key_type" if path.endswith("templates") else "key_algorithm"
            response = api.post(path, json={**body, key: algorithm, "key_size": size})
            answers.append((path, response.status_code, response.text))
        return answers

    with nothing_written(api):
        for size in (1, 100_000, 0, -1, 1024, 2047, 3000, 4097, 8192, 2**40):
            for path, status, text in refused("RSA", size):
                assert status == 422, (size, path, text)
                assert "2048" in json.loads(text)["message"], (size, path, text)
        for size in (1, 100_000, 0, -1, 255, 2048):
            for path, status, text in refused("EC", size):
                assert status == 400, (size, path, text)
                assert "EC key size" in json.loads(text)["message"], (size, path, text)
    assert len(data(api.get("/api/v2/templates"))) == templates


def test_unknown_ca_and_template_are_404(api: httpx.Client, root: dict[str, Any]) -> None:
    with nothing_written(api):
        no_ca = {"common_name": "x.example.com", "ca_id": 999999, "key_algorithm": "EC"}
        assert "CA 999999" in assert_error(api.post("/api/v2/certificates", json=no_ca), 404)
        no_template = {"common_name": "x.example.com", "ca_id": root["id"], "template_id": 999999}
        message = assert_error(api.post("/api/v2/certificates", json=no_template), 404)
        assert "template 999999" in message
        orphan = {"common_name": "Orphan", "ca_type": "intermediate", "parent_id": 999999}
        assert "CA 999999" in assert_error(api.post("/api/v2/cas", json=orphan), 404)


def test_ca_hierarchy_mistakes(api: httpx.Client, root: dict[str, Any]) -> None:
    with nothing_written(api):
        outliving = {
            "common_name": "Outliving Sub CA",
            "ca_type": "intermediate",
            "parent_id": root["id"],
            "key_algorithm": "EC",
            "validity_days": 7300,
        }
        assert "outlive" in assert_error(api.post("/api/v2/cas", json=outliving), 422)
        no_parent = {"common_name": "Sub", "ca_type": "intermediate", "key_algorithm": "EC"}
        assert "parent_id" in assert_error(api.post("/api/v2/cas", json=no_parent), 400)
        root_with_parent = {"common_name": "Root", "parent_id": root["id"], "key_algorithm": "EC"}
        assert_error(api.post("/api/v2/cas", json=root_with_parent), 400)
        bad_algorithm = {"common_name": "Odd", "key_algorithm": "DSA"}
        assert "DSA" in assert_error(api.post("/api/v2/cas", json=bad_algorithm), 400)
        bad_curve = {"common_name": "Odd", "key_algorithm": "EC", "key_size": 255}
        assert_error(api.post("/api/v2/cas", json=bad_curve), 400)


BAD_SANS = [
    "ip:999.1.1.1",
    "ip:not-an-ip",
    "dns:",
    "dns:exa mple.com",
    "dns:bad..example.com",
    "email:not-an-address",
    "uri:no-scheme",
    "foo:bar",
]


# cryptography takes only A-labels in DNS names, e-mail addresses and URIs (IDNA and
# percent-encoding are the caller's); a bare CN that looks like an address is no SAN then.
NON_ASCII_SANS = [
    "email:\u00fc@example.com",
    "email:a@\u00fc.example",
    "uri:http://\u00fc.example/",
    "dns:\u00fc.example",
    "\u00fc@example.com",
]


@pytest.mark.parametrize(
    ("san", "says"),
    [(san, "") for san in BAD_SANS] + [(san, "ASCII") for san in NON_ASCII_SANS],
)
def test_bad_san_values_are_400(
    api: httpx.Client, root: dict[str, Any], san: str, says: str
) -> None:
    with nothing_written(api):
        body = {"common_name": "san.example.com", "ca_id": root["id"], "san": [san]}
        message = assert_error(api.post("/api/v2/certificates", json=body), 400)
        assert "SAN" in message or "subject alternative name" in message, message
        assert says in message, message


def test_non_ascii_address_as_common_name_is_no_san(
    api: httpx.Client, root: dict[str, Any]
) -> None:
    cert = issue(api, root["id"], common_name="\u00fc@example.com")
    assert cert["common_name"] == "\u00fc@example.com" and cert["san"] == []


@pytest.mark.parametrize(
    ("algorithm", "usages"),
    [
        ("EC", ["digitalSignature", "keyEncipherment"]),
        ("EC", ["dataEncipherment"]),
        ("Ed25519", ["digitalSignature", "keyAgreement"]),
        ("EC", ["digitalSignature", "keyCertSign"]),
    ],
)
def test_key_usage_the_key_cannot_have_is_422(
    api: httpx.Client, root: dict[str, Any], algorithm: str, usages: list[str]
) -> None:
    with nothing_written(api):
        body = {
            "common_name": "usage.example.com",
            "ca_id": root["id"],
            "key_algorithm": algorithm,
            "key_usage": usages,
        }
        assert_error(api.post("/api/v2/certificates", json=body), 422)


@pytest.mark.parametrize(
    ("field", "names", "needle"),
    [
        ("key_usage", ["digitalSignature", "teleport"], "teleport"),
        ("key_usage", ["encipherOnly"], "keyAgreement"),
        ("extended_key_usage", ["serverAuth", "mindReading"], "mindReading"),
    ],
)
def test_unknown_usage_names_are_400(
    api: httpx.Client, root: dict[str, Any], field: str, names: list[str], needle: str
) -> None:
    with nothing_written(api):
        body = {"common_name": "u.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
        body[field] = names
        assert needle in assert_error(api.post("/api/v2/certificates", json=body), 400)


# C is a PrintableString and emailAddress an IA5String (RFC 5280 A.1), and cryptography caps
# commonName at 64 octets of UTF-8: these reach none of them.
BAD_SUBJECTS = [
    ({"country": "\u00dcS"}, "country"),
    ({"country": "\u00b2\u00b2"}, "country"),
    ({"country": "U*"}, "country"),
    ({"country": "12"}, "country"),
    ({"email": "\u00fc@example.com"}, "email"),
    ({"common_name": "\u042f" * 40}, "common_name"),
]


@pytest.mark.parametrize("path", ["/api/v2/cas", "/api/v2/certificates"])
@pytest.mark.parametrize(("fields", "field"), BAD_SUBJECTS)
def test_subject_values_the_encoding_cannot_hold_are_400(
    api: httpx.Client, root: dict[str, Any], path: str, fields: dict[str, str], field: str
) -> None:
    body = {"common_name": "subject.example.com", "ca_id": root["id"], "key_algorithm": "EC"}
    with nothing_written(api):
        assert field in assert_error(api.post(path, json={**body, **fields}), 400)


def test_subject_in_any_script_where_utf8string_holds_it(
    api: httpx.Client, root: dict[str, Any]
) -> None:
    names = {"organization": "\u0401\u043b\u043a\u0430", "locality": "K\u00f6ln"}
    cn = "\u042f" * 32  # 64 octets of UTF-8
    cert = issue(api, root["id"], common_name=cn, country="de", **names)
    subject = x509.load_pem_x509_certificate(
        data(api.get(f"/api/v2/certificates/{cert['id']}"))["pem"].encode()
    ).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "K\u00f6ln"


# --- imports --------------------------------------------------------------------------------------


def test_garbage_and_truncated_imports_are_400(api: httpx.Client) -> None:
    p12 = ca_pkcs12(b"right-password")
    uploads = [
        (b"\xde\xad\xbe\xef" * 64, {}),  # not DER at all
        (b"\x30\x82\x01\x00" + b"\x00" * 64, {}),  # a DER SEQUENCE header and nothing sane
        (p12[: len(p12) // 2], {"password": "right-password"}),  # truncated PKCS#12
        (p12[:-1], {"password": "right-password"}),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", {}),
        (b"", {}),
    ]
    with nothing_written(api):
        for content, fields in uploads:
            response = api.post(
                "/api/v2/cas/import",
                files={"file": ("upload.bin", content, "application/octet-stream")},
                data=fields,
            )
            assert_error(response, 400)
        no_file = api.post("/api/v2/cas/import", files={"other": ("x", b"x")}, data={"a": "b"})
        assert "file" in assert_error(no_file, 400)
        as_json = api.post("/api/v2/cas/import", json={"certificate": "not a certificate"})
        assert_error(as_json, 400)
        assert_error(api.post("/api/v2/cas/import", json={"name": "nothing"}), 400)


def test_pkcs12_import_with_wrong_password_is_400(api: httpx.Client) -> None:
    p12 = ca_pkcs12(b"right-password")
    files = {"file": ("ca.p12", p12, "application/x-pkcs12")}
    with nothing_written(api):
        wrong = api.post("/api/v2/cas/import", files=files, data={"password": "wrong-password"})
        assert "password" in assert_error(wrong, 400)
        missing = api.post("/api/v2/cas/import", files=files)
        assert_error(missing, 400)
    right = api.post("/api/v2/cas/import", files=files, data={"password": "right-password"})
    imported = data(right, 201)
    assert imported["imported"] is True and imported["has_private_key"] is True
    with nothing_written(api):
        again = api.post("/api/v2/cas/import", files=files, data={"password": "right-password"})
        assert_error(again, 409)


# --- listings, revocation, export -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v2/certificates?per_page=101", 422),
        ("/api/v2/certificates?per_page=0", 422),
        ("/api/v2/certificates?page=0", 422),
        ("/api/v2/certificates?page=abc", 422),
        ("/api/v2/certificates?ca_id=abc", 422),
        ("/api/v2/certificates?status=bogus", 400),
        ("/api/v2/certificates?status=ACTIVE", 400),
        ("/api/v2/cas?per_page=101", 422),
        ("/api/v2/cas/ROOT/certificates?status=bogus", 400),
        ("/api/v2/cas/ROOT/certificates?per_page=101", 422),
        ("/api/v2/certificates/1/export?include_key=maybe", 422),
    ],
)
def test_bad_listing_parameters(
    api: httpx.Client, root: dict[str, Any], path: str, status: int
) -> None:
    assert_error(api.get(path.replace("ROOT", str(root["id"]))), status)


def test_empty_status_is_no_filter(api: httpx.Client, root: dict[str, Any]) -> None:
    """An empty `status` (a cleared filter box) filters nothing, on every listing taking one."""
    issue(api, root["id"])
    for path in (f"/api/v2/cas/{root['id']}/certificates", "/api/v2/certificates"):
        everything = api.get(path, params={"per_page": 100})
        empty = api.get(path, params={"status": "", "per_page": 100})
        assert [c["id"] for c in data(empty)] == [c["id"] for c in data(everything)]
        assert empty.json()["meta"]["total"] == everything.json()["meta"]["total"] > 0
    for path in ("/api/v2/csrs", "/api/v2/scep/requests", "/api/v2/acme/orders"):
        everything = api.get(path)
        empty = api.get(path, params={"status": ""})
        assert data(empty) == data(everything)
        assert empty.json()["meta"] == everything.json()["meta"]


def test_per_page_bounds_are_inclusive(api: httpx.Client) -> None:
    assert data(api.get("/api/v2/certificates", params={"per_page": 100})) is not None
    assert api.get("/api/v2/certificates?per_page=100").json()["meta"]["per_page"] == 100


def test_revocation_mistakes(api: httpx.Client, root: dict[str, Any]) -> None:
    cert = issue(api, root["id"])
    path = f"/api/v2/certificates/{cert['id']}/revoke"
    with nothing_written(api):
        assert "flying" in assert_error(api.post(path, json={"reason": "flying"}), 400)
        assert_error(api.post(path, json={"reason": 7}), 422)
    assert data(api.get(f"/api/v2/certificates/{cert['id']}"))["status"] == "active"
    revoked = data(api.post(path, json={"reason": "key_compromise", "comments": "leaked"}))
    assert revoked["status"] == "revoked" and revoked["revocation_reason"] == "keyCompromise"
    with nothing_written(api):
        assert "already revoked" in assert_error(api.post(path, json={"reason": "superseded"}), 409)
    after = data(api.get(f"/api/v2/certificates/{cert['id']}"))
    assert after["revocation_reason"] == "keyCompromise" and after["revocation_comment"] == "leaked"


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_invalidity_date_out_of_range_is_400(
    api: httpx.Client, root: dict[str, Any], moment: str
) -> None:
    cert = issue(api, root["id"])
    path = f"/api/v2/certificates/{cert['id']}/revoke"
    with nothing_written(api):
        body = {"reason": "keyCompromise", "invalidity_date": moment}
        assert "invalidity_date" in assert_error(api.post(path, json=body), 400)
    assert data(api.get(f"/api/v2/certificates/{cert['id']}"))["status"] == "active"


def test_export_mistakes(api: httpx.Client, root: dict[str, Any]) -> None:
    cert = issue(api, root["id"])
    path = f"/api/v2/certificates/{cert['id']}/export"
    for fmt in ("pkcs12", "p12", "pfx"):
        assert "password" in assert_error(api.get(path, params={"format": fmt}), 400)
        assert_error(api.get(path, params={"format": fmt, "password": ""}), 400)
    assert_error(api.get(path, params={"format": "jks"}), 400)
    ca_path = f"/api/v2/cas/{root['id']}/export"
    assert_error(api.get(ca_path, params={"format": "pkcs12", "password": "x"}), 400)
    exported = api.get(path, params={"format": "pkcs12", "password": "now-with-one"})
    assert exported.status_code == 200, exported.text
    key, leaf, _ = pkcs12.load_key_and_certificates(exported.content, b"now-with-one")
    assert key is not None and leaf is not None
