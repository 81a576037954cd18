"""Downloads named after things in any script. HTTP header values are Latin-1 at most (and
only ASCII is safe), so Content-Disposition carries an ASCII `filename` for old clients and
the real name as `filename*` (RFC 6266 4.3, RFC 8187), which wget reads back."""

import string
import subprocess
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from tests.e2e.helpers import API, create_root, data, download, issue, unique
from tests.support import Server
from tests.tools import openssl_csr

# RFC 8187 attr-char, and "%" for pct-encoded octets.
ATTR_CHARS = set(string.ascii_letters + string.digits + "!#$&+-.^_`|~%")


def disposition(response: httpx.Response) -> str:
    value = response.headers["content-disposition"]
    assert value.isascii(), value
    return str(value)


def chosen_name(header: str) -> str:
    """The file name a recipient takes (RFC 6266 4.3): `filename*` (RFC 8187, charset ''
    percent-encoded octets) over `filename`. Python's email package takes the first of the
    two, so this reads the header itself."""
    kind, *parameters = (part.strip() for part in header.split(";"))
    assert kind == "attachment", header
    params = dict(p.split("=", 1) for p in parameters)
    if "filename*" not in params:
        return params["filename"].strip('"')
    charset, _, encoded = params["filename*"].split("'", 2)
    assert charset == "UTF-8" and set(encoded) <= ATTR_CHARS, header
    return unquote(encoded, errors="strict")


def fallback_name(header: str) -> str:
    """The plain `filename` an old client falls back to: ASCII, quoted, never empty."""
    plain = header.split('filename="', 1)[1].split('"', 1)[0]
    assert plain.isascii() and plain.strip("._"), header
    return plain


@pytest.mark.parametrize(
    ("name", "fmt", "suffix"),
    [
        ("Корень", "pem", ".pem"),
        ("Корень", "der", ".der"),
        ("Корень", "chain", "-chain.pem"),
        ("١٢٣ CA", "pem", ".pem"),
        ("Köln Root", "pem", ".pem"),
    ],
)
def test_ca_export_in_any_script(api: httpx.Client, name: str, fmt: str, suffix: str) -> None:
    ca = create_root(api, f"{name} {unique('x')}")
    header = disposition(download(api, f"{API}/cas/{ca['id']}/export", format=fmt))
    stem = ca["name"].replace(" ", "_")
    assert chosen_name(header) == stem + suffix
    assert fallback_name(header).endswith(suffix)
    assert header.startswith(f'attachment; filename="{fallback_name(header)}"; ')


@pytest.mark.parametrize("fmt", ["pem", "der", "chain", "pkcs12", "pkcs7", "pkcs7-der"])
def test_certificate_export_in_any_script(api: httpx.Client, fmt: str) -> None:
    ca = create_root(api, unique("Filename Root"))
    cert = issue(api, ca["id"], "١٢٣.example")
    params = {"format": fmt, "include_key": "true"}
    if fmt in ("pem", "pkcs12"):  # the formats that hold the key the password protects
        params["password"] = "pw-12345678"
    header = disposition(download(api, f"{API}/certificates/{cert['id']}/export", **params))
    assert chosen_name(header).startswith("١٢٣.example")


def test_template_and_csr_exports_in_any_script(api: httpx.Client, workdir: Path) -> None:
    template = data(api.post(f"{API}/templates", json={"name": f"١٢٣ {unique('t')}"}), 201)
    header = disposition(download(api, f"{API}/templates/{template['id']}/export"))
    assert chosen_name(header) == template["name"].replace(" ", "_") + ".json"
    _, csr_path = openssl_csr(workdir, "/CN=Пример")
    body = {"csr": csr_path.read_text(), "name": "Пример"}
    csr = data(api.post(f"{API}/csrs", json=body), 201)
    header = disposition(download(api, f"{API}/csrs/{csr['id']}/export"))
    assert chosen_name(header) == "Пример.csr" and fallback_name(header).endswith(".csr")


def test_ascii_names_keep_the_plain_header(api: httpx.Client) -> None:
    ca = create_root(api, unique("Plain-Root"))
    header = disposition(download(api, f"{API}/cas/{ca['id']}/export"))
    assert header == f'attachment; filename="{ca["name"]}.pem"'


def test_wget_saves_under_the_real_name(server: Server, api: httpx.Client, workdir: Path) -> None:
    ca = create_root(api, f"Корень {unique('w')}")
    result = subprocess.run(
        [
            "wget", "--quiet", "--content-disposition", "--restrict-file-names=nocontrol",
            "--ca-certificate", str(server.ca_bundle), "--header", f"X-API-Key: {server.api_key}",
            "--directory-prefix", str(workdir), f"{server.url}{API}/cas/{ca['id']}/export",
        ],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    saved = workdir / (ca["name"].replace(" ", "_") + ".pem")
    assert saved.read_text() == data(api.get(f"{API}/cas/{ca['id']}"))["pem"]
