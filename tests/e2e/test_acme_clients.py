"""The ACME server with real clients: certbot (Debian), lego and dehydrated, against a real
`tessera serve`, validating through pebble-challtestsrv as the DNS server."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.acme_helpers import AcmeEnv, webroot_server
from tests.e2e.helpers import API, data, unique

# Debian's certbot by its path: the venv's certbot 5 (test_certbot5.py) would shadow it on a
# PATH that holds .venv/bin.
CERTBOT = "/usr/bin/certbot"
pytestmark = pytest.mark.skipif(
    not (Path(CERTBOT).exists() and shutil.which("lego") and shutil.which("pebble-challtestsrv")),
    reason="certbot, lego and pebble-challtestsrv (Debian packages) are needed",
)
LEGO = shutil.which("lego") or "lego"
DEHYDRATED = shutil.which("dehydrated") or "dehydrated"


def run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{args[0]} failed ({result.returncode}):\n{output}"
    return output


def names() -> tuple[str, str]:
    base = unique("site")
    return f"{base}.acme.test", f"www.{base}.acme.test"


def certbot(env: AcmeEnv, *args: str, home: Path, binary: str | Path = CERTBOT) -> str:
    base = [
        str(binary),
        "--non-interactive",
        "--config-dir",
        str(home / "config"),
        "--work-dir",
        str(home / "work"),
        "--logs-dir",
        str(home / "logs"),
        "--server",
        env.directory,
    ]
    return run([*base, *args], env={"REQUESTS_CA_BUNDLE": str(env.server.ca_bundle)})


def lego(env: AcmeEnv, home: Path, *args: str, extra_env: dict[str, str] | None = None) -> str:
    base = [
        LEGO,
        "--accept-tos",
        "--server",
        env.directory,
        "--path",
        str(home),
        "--email",
        "ops@example.org",
    ]
    variables = {"LEGO_CA_CERTIFICATES": str(env.server.ca_bundle), **(extra_env or {})}
    return run([*base, *args], env=variables)


def inventory_entry(env: AcmeEnv, cert: x509.Certificate) -> dict:
    """The certificate's row in the inventory, found by its name and matched by serial."""
    name = cert.subject.rfc4514_string().removeprefix("CN=")
    with env.api() as api:
        rows = data(api.get(f"{API}/certificates", params={"search": name, "per_page": 100}))
    serial = format(cert.serial_number, "X")
    matching = [r for r in rows if _hex(r.get("serial_number")) == serial]
    assert matching, f"serial {serial} not in the inventory: {rows}"
    return matching[0]


def _hex(value: object) -> str:
    return str(value or "").upper().removeprefix("0X").replace(":", "").lstrip("0")


def load_pem(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_certbot_http01_issue_renew_revoke(env: AcmeEnv, tmp_path: Path) -> None:
    name, www = names()
    http = [
        "--standalone",
        "--preferred-challenges",
        "http",
        "--http-01-port",
        str(env.http01_port),
    ]
    certbot(
        env,
        "certonly",
        *http,
        "--agree-tos",
        "-m",
        "ops@example.org",
        "-d",
        name,
        "-d",
        www,
        "--cert-name",
        "site",
        home=tmp_path,
    )
    live = tmp_path / "config" / "live" / "site"
    chain = load_pem(live / "fullchain.pem")
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted([name, www])
    assert leaf.issuer == chain[1].subject
    entry = inventory_entry(env, leaf)
    assert entry["source"] == "acme"

    certbot(env, "renew", "--force-renewal", "--no-random-sleep-on-renew", *http, home=tmp_path)
    renewed = load_pem(live / "fullchain.pem")[0]
    assert renewed.serial_number != leaf.serial_number

    certbot(
        env,
        "revoke",
        "--cert-path",
        str(live / "cert.pem"),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
        home=tmp_path,
    )
    revoked = inventory_entry(env, renewed)
    assert revoked["status"] == "revoked"
    assert_revocation_published(tmp_path, renewed, load_pem(live / "chain.pem")[0])


def assert_revocation_published(
    work: Path, leaf: x509.Certificate, issuer: x509.Certificate, reason: str = "keyCompromise"
) -> None:
    """The ACME revocation is the inventory's: OCSP (asked with openssl) and the CRL at the
    certificate's distribution point both report it (OCSP with the reason)."""
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_url = next(
        d.access_location.value for d in aia if d.access_method.dotted_string.endswith(".1")
    )
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = cdp[0].full_name[0].value
    (work / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    (work / "issuer.pem").write_bytes(issuer.public_bytes(Encoding.PEM))
    ocsp = ""
    listed = False
    for _ in range(60):
        ocsp = run(
            [
                "openssl",
                "ocsp",
                "-issuer",
                str(work / "issuer.pem"),
                "-cert",
                str(work / "leaf.pem"),
                "-url",
                ocsp_url,
                "-noverify",
                "-resp_text",
            ]
        )
        fetched = httpx.get(crl_url, timeout=10)  # 503 while a new CA's first CRL is made
        assert fetched.status_code in (200, 503), fetched.text
        listed = fetched.status_code == 200 and (
            x509.load_der_x509_crl(fetched.content).get_revoked_certificate_by_serial_number(
                leaf.serial_number
            )
            is not None
        )
        if ": revoked" in ocsp and listed:
            break
        time.sleep(0.5)
    assert ": revoked" in ocsp and f"Reason: {reason}" in ocsp, ocsp
    assert listed, "the revoked certificate is not on the CRL"


def lego_cert(home: Path, name: str) -> list[x509.Certificate]:
    return load_pem(home / "certificates" / f"{name.replace('*', '_')}.crt")


def test_lego_http01(env: AcmeEnv, tmp_path: Path) -> None:
    name, _ = names()
    lego(env, tmp_path, "--http", "--http.port", f"127.0.0.1:{env.http01_port}", "-d", name, "run")
    chain = lego_cert(tmp_path, name)
    assert chain[0].subject.rfc4514_string() == f"CN={name}"
    assert inventory_entry(env, chain[0])["source"] == "acme"


def test_lego_tls_alpn01(env: AcmeEnv, tmp_path: Path) -> None:
    name, _ = names()
    lego(env, tmp_path, "--tls", "--tls.port", f"127.0.0.1:{env.tlsalpn01_port}", "-d", name, "run")
    assert lego_cert(tmp_path, name)[0].subject.rfc4514_string() == f"CN={name}"


def dns_hook(env: AcmeEnv, directory: Path) -> Path:
    """lego's exec provider calls this with `present|cleanup <fqdn> <value>`; it publishes
    the TXT record in pebble-challtestsrv through its management API."""
    script = directory / "dns-hook.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, httpx\n"
        f"base = 'http://127.0.0.1:{env.dns.management_port}'\n"
        "action, fqdn, value = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "if action == 'present':\n"
        "    body = {'host': fqdn, 'value': value}\n"
        "    httpx.post(base + '/set-txt', json=body).raise_for_status()\n"
        "elif action == 'cleanup':\n"
        "    httpx.post(base + '/clear-txt', json={'host': fqdn}).raise_for_status()\n"
    )
    script.chmod(0o755)
    return script


def test_lego_dns01_wildcard(env: AcmeEnv, tmp_path: Path) -> None:
    name, _ = names()
    hook = dns_hook(env, tmp_path)
    lego(
        env,
        tmp_path,
        "--dns",
        "exec",
        "--dns.disable-cp",
        "--dns.resolvers",
        f"127.0.0.1:{env.dns.dns_port}",
        "-d",
        f"*.{name}",
        "-d",
        name,
        "run",
        extra_env={
            "EXEC_PATH": str(hook),
            "EXEC_POLLING_INTERVAL": "1",
            "EXEC_PROPAGATION_TIMEOUT": "30",
            # both names share one TXT name, so lego solves them one after the other with
            # this pause between them (60 s by default)
            "EXEC_SEQUENCE_INTERVAL": "1",
        },
    )
    leaf = lego_cert(tmp_path, f"*.{name}")[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted([name, f"*.{name}"])


def test_lego_eab_required(env: AcmeEnv, tmp_path: Path) -> None:
    with env.api() as api:
        key = data(api.post(f"{API}/acme/eab", json={"comment": "lego"}), 201)
    env.settings(require_eab=True)
    try:
        name, _ = names()
        http = ["--http", "--http.port", f"127.0.0.1:{env.http01_port}", "-d", name]
        refused = subprocess.run(
            [
                LEGO,
                "--accept-tos",
                "--server",
                env.directory,
                "--path",
                str(tmp_path / "no-eab"),
                "--email",
                "ops@example.org",
                *http,
                "run",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LEGO_CA_CERTIFICATES": str(env.server.ca_bundle)},
        )
        assert refused.returncode != 0
        assert "External Account Binding" in refused.stdout + refused.stderr
        lego(env, tmp_path, "--eab", "--kid", key["kid"], "--hmac", key["hmac_key"], *http, "run")
        assert lego_cert(tmp_path, name)
        with env.api() as api:
            listed = data(api.get(f"{API}/acme/eab"))
            used = next(k for k in listed if k["kid"] == key["kid"])
            assert used["status"] == "used" and used["account_id"]
            assert "hmac_key" not in used
    finally:
        env.settings(require_eab=False)


def manual_dns(env: AcmeEnv, directory: Path) -> list[str]:
    """certbot's arguments for dns-01 through the manual hooks below."""
    hook = str(certbot_hook(env, directory))
    return [
        "--manual",
        "--preferred-challenges",
        "dns",
        "--manual-auth-hook",
        hook,
        "--manual-cleanup-hook",
        hook,
    ]


def certbot_hook(env: AcmeEnv, directory: Path) -> Path:
    """certbot's manual auth/cleanup hook: publishes CERTBOT_VALIDATION in challtestsrv."""
    script = directory / "certbot-hook.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, httpx\n"
        f"base = 'http://127.0.0.1:{env.dns.management_port}'\n"
        "host = '_acme-challenge.' + os.environ['CERTBOT_DOMAIN'] + '.'\n"
        "if 'CERTBOT_AUTH_OUTPUT' in os.environ:\n"
        "    httpx.post(base + '/clear-txt', json={'host': host}).raise_for_status()\n"
        "else:\n"
        "    body = {'host': host, 'value': os.environ['CERTBOT_VALIDATION']}\n"
        "    httpx.post(base + '/set-txt', json=body).raise_for_status()\n"
    )
    script.chmod(0o755)
    return script


def test_certbot_manual_dns01_with_eab(env: AcmeEnv, tmp_path: Path) -> None:
    with env.api() as api:
        key = data(api.post(f"{API}/acme/eab", json={"comment": "certbot"}), 201)
    env.settings(require_eab=True)
    try:
        certbot(
            env,
            "register",
            "--agree-tos",
            "-m",
            "ops@example.org",
            # One argument each: a base64url key may start with "-", which argparse would
            # take for an option.
            f"--eab-kid={key['kid']}",
            f"--eab-hmac-key={key['hmac_key']}",
            home=tmp_path,
        )
        name, _ = names()
        certbot(
            env,
            "certonly",
            *manual_dns(env, tmp_path),
            "-d",
            name,
            "--cert-name",
            "dns",
            home=tmp_path,
        )
        leaf = load_pem(tmp_path / "config" / "live" / "dns" / "cert.pem")[0]
        assert leaf.subject.rfc4514_string() == f"CN={name}"
    finally:
        env.settings(require_eab=False)


@pytest.mark.skipif(not shutil.which("dehydrated"), reason="dehydrated (Debian) is needed")
def test_dehydrated_http01(env: AcmeEnv, tmp_path: Path) -> None:
    """dehydrated writes the challenge files; a plain web server on the http-01 port serves
    them, as a web server would in production."""
    (tmp_path / "dehydrated").mkdir()
    config = tmp_path / "config"
    with webroot_server(env.http01_port, tmp_path / "www") as wellknown:
        config.write_text(
            f'CA="{env.directory}"\n'
            f'BASEDIR="{tmp_path / "dehydrated"}"\n'
            f'WELLKNOWN="{wellknown}"\n'
            'CHALLENGETYPE="http-01"\n'
            'CONTACT_EMAIL="ops@example.org"\n'
            'KEY_ALGO="prime256v1"\n'
        )
        variables = {"CURL_CA_BUNDLE": str(env.server.ca_bundle)}
        run([DEHYDRATED, "-f", str(config), "--register", "--accept-terms"], env=variables)
        name, _ = names()
        run([DEHYDRATED, "-f", str(config), "-c", "-d", name], env=variables)
    leaf = load_pem(tmp_path / "dehydrated" / "certs" / name / "cert.pem")[0]
    assert leaf.subject.rfc4514_string() == f"CN={name}"
    assert inventory_entry(env, leaf)["source"] == "acme"
