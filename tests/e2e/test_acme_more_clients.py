"""More real ACME clients against a real `tessera serve`, each with its own JWS and HTTP
code: uacme (C, libcurl/GnuTLS), acme-tiny (Python, signs with the openssl command line) and
acmetool (Go), all from Debian. Validation goes through pebble-challtestsrv as the DNS
server, as in test_acme_clients.py, whose fixtures and helpers this module reuses."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.e2e.acme_helpers import (
    AcmeEnv,
    dns_names,
    private_mounts,
    verified_chain,
    webroot_server,
)
from tests.e2e.helpers import API, data
from tests.e2e.test_acme_clients import (
    assert_revocation_published,
    inventory_entry,
    load_pem,
    names,
    run,
)

UACME = shutil.which("uacme") or "/usr/bin/uacme"
ACME_TINY = shutil.which("acme-tiny") or "/usr/bin/acme-tiny"
ACMETOOL = shutil.which("acmetool") or "/usr/bin/acmetool"
pytestmark = pytest.mark.skipif(
    not shutil.which("pebble-challtestsrv"),
    reason="pebble-challtestsrv (Debian pebble) is needed",
)
needs_uacme = pytest.mark.skipif(not shutil.which("uacme"), reason="uacme (Debian) is needed")


# --- uacme ------------------------------------------------------------------------------
#
# uacme 1.7.4 (Debian 12) has no option for the CA that signs the server's TLS certificate:
# libcurl, unlike the curl tool, reads no CURL_CA_BUNDLE, and GnuTLS no SSL_CERT_FILE; it
# trusts /etc/ssl/certs (UACME_CAINFO arrived in uacme 1.7.6). So uacme runs in a mount
# namespace of its own where a directory holding Tessera's TLS certificate is mounted over
# /etc/ssl/certs: the host's store is left alone. Its hooks run in that namespace too.
# Where namespaces are forbidden (a container without CAP_SYS_ADMIN or user namespaces)
# these tests fail with unshare's message rather than skip.


def uacme_command(env: AcmeEnv, home: Path, *args: str) -> list[str]:
    trust = home / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    (trust / "ca-certificates.crt").write_bytes(env.server.ca_bundle.read_bytes())
    prefix = private_mounts({"/etc/ssl/certs": trust})
    return [*prefix, UACME, "-v", "-c", str(home / "uacme"), "-a", env.directory, *args]


def uacme(env: AcmeEnv, home: Path, *args: str) -> str:
    return run(uacme_command(env, home, *args))


def uacme_result(env: AcmeEnv, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        uacme_command(env, home, *args), capture_output=True, text=True, timeout=180
    )


def uacme_hook(home: Path, body: str) -> Path:
    """A hook uacme calls as `hook begin|done|failed TYPE IDENT TOKEN AUTH`; a non-zero exit
    on `begin` declines that challenge, and uacme tries the authorization's next one."""
    script = home / "uacme-hook.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib, httpx\n"
        "method, kind, ident, token, auth = sys.argv[1:6]\n" + body
    )
    script.chmod(0o755)
    return script


def http01_hook(home: Path, challenges: Path) -> Path:
    """Writes the key authorization where the test's web server serves it."""
    return uacme_hook(
        home,
        "if kind != 'http-01':\n"
        "    sys.exit(1)\n"
        f"path = pathlib.Path({str(challenges)!r}) / token\n"
        "if method == 'begin':\n"
        "    path.write_text(auth)\n"
        "else:\n"
        "    path.unlink(missing_ok=True)\n",
    )


def dns01_hook(env: AcmeEnv, home: Path) -> Path:
    """Publishes the TXT record (uacme passes it already hashed) in pebble-challtestsrv."""
    return uacme_hook(
        home,
        "if kind != 'dns-01':\n"
        "    sys.exit(1)\n"
        f"base = 'http://127.0.0.1:{env.dns.management_port}'\n"
        "host = '_acme-challenge.' + ident + '.'\n"
        "if method == 'begin':\n"
        "    body = {'host': host, 'value': auth}\n"
        "    httpx.post(base + '/set-txt', json=body).raise_for_status()\n"
        "else:\n"
        "    httpx.post(base + '/clear-txt', json={'host': host}).raise_for_status()\n",
    )


def account_id(output: str) -> int:
    match = re.search(r"/acme/acct/(\d+)", output)
    assert match, output
    return int(match.group(1))


def acme_account(env: AcmeEnv, number: int) -> dict:
    with env.api() as api:
        account: dict = data(api.get(f"{API}/acme/accounts/{number}"))
        return account


@needs_uacme
def test_uacme_http01_issue_and_revoke(env: AcmeEnv, tmp_path: Path) -> None:
    name, www = names()
    created = uacme(env, tmp_path, "-y", "new", "ops@example.org")
    assert acme_account(env, account_id(created))["contact"] == ["mailto:ops@example.org"]
    with webroot_server(env.http01_port, tmp_path / "www") as challenges:
        hook = http01_hook(tmp_path, challenges)
        uacme(env, tmp_path, "-t", "EC", "-h", str(hook), "issue", name, www)
    cert = tmp_path / "uacme" / name / "cert.pem"
    chain = verified_chain(env, cert.read_bytes(), tmp_path / "verify")
    leaf = chain[0]
    assert dns_names(leaf) == sorted([name, www])
    assert inventory_entry(env, leaf)["source"] == "acme"

    # Signed by the account (kid); reason 1, keyCompromise. uacme renames the file.
    uacme(env, tmp_path, "-r", "1", "revoke", str(cert))
    assert not cert.exists()
    assert inventory_entry(env, leaf)["status"] == "revoked"
    assert_revocation_published(tmp_path, leaf, chain[1])


@needs_uacme
def test_uacme_dns01_wildcard(env: AcmeEnv, tmp_path: Path) -> None:
    """The hook declines http-01, so uacme answers each authorization with dns-01."""
    name, _ = names()
    uacme(env, tmp_path, "-y", "new")
    hook = dns01_hook(env, tmp_path)
    output = uacme(env, tmp_path, "-h", str(hook), "issue", f"*.{name}", name)
    assert "challenge http-01 declined" in output
    # uacme names the directory after the identifier without its wildcard label.
    chain = verified_chain(
        env, (tmp_path / "uacme" / name / "cert.pem").read_bytes(), tmp_path / "verify"
    )
    assert dns_names(chain[0]) == sorted([name, f"*.{name}"])


@needs_uacme
def test_uacme_revoke_by_certificate_key_then_ocsp_reissue(env: AcmeEnv, tmp_path: Path) -> None:
    """`uacme revoke CERT KEY` signs with the certificate's key (jwk); uacme's own OCSP
    client (GnuTLS) then reads the revocation from Tessera's responder and reissues a
    certificate it would otherwise keep for weeks."""
    name, _ = names()
    uacme(env, tmp_path, "-y", "new")
    hook = dns01_hook(env, tmp_path)
    uacme(env, tmp_path, "-h", str(hook), "issue", name)
    cert = tmp_path / "uacme" / name / "cert.pem"
    first = verified_chain(env, cert.read_bytes(), tmp_path / "verify")[0]

    kept = uacme_result(env, tmp_path, "-h", str(hook), "issue", name)
    # Exit status 1: "not reissued because it is still current", after asking OCSP.
    assert kept.returncode == 1, kept.stdout + kept.stderr
    assert "OCSP certificate status is GOOD" in kept.stderr

    copy = tmp_path / "to-revoke.pem"
    copy.write_bytes(cert.read_bytes())
    key = tmp_path / "uacme" / "private" / name / "key.pem"
    uacme(env, tmp_path, "-r", "4", "revoke", str(copy), str(key))
    assert inventory_entry(env, first)["status"] == "revoked"
    # The responder follows revocations in the background (docs/ocsp.md): wait until it
    # reports this one before uacme asks.
    issuer = load_pem(cert)[1]
    assert_revocation_published(tmp_path, first, issuer, reason="superseded")

    reissued = uacme(env, tmp_path, "-h", str(hook), "issue", name)
    assert "OCSP certificate status is REVOKED" in reissued
    second = verified_chain(env, cert.read_bytes(), tmp_path / "verify")[0]
    assert second.serial_number != first.serial_number
    assert dns_names(second) == [name]


@needs_uacme
def test_uacme_account_eab_update_key_change_deactivate(env: AcmeEnv, tmp_path: Path) -> None:
    """An ES384 account bound with EAB; contact update, key rollover (RFC 8555 7.3.5),
    deactivation, each seen by the management API."""
    with env.api() as api:
        eab = data(api.post(f"{API}/acme/eab", json={"comment": "uacme"}), 201)
    env.settings(require_eab=True)
    try:
        refused = uacme_result(env, tmp_path, "-t", "EC", "-b", "384", "-y", "new")
        assert refused.returncode != 0
        assert "requires external credentials" in refused.stderr, refused.stderr
        created = uacme(
            env,
            tmp_path,
            "-t",
            "EC",
            "-b",
            "384",
            "-y",
            f"--eab={eab['kid']}:{eab['hmac_key']}",
            "new",
            "ops@example.org",
        )
    finally:
        env.settings(require_eab=False)
    number = account_id(created)
    account = acme_account(env, number)
    assert account["eab_kid"] == eab["kid"] and account["key_type"] == "EC"

    uacme(env, tmp_path, "update", "ops2@example.org")
    assert acme_account(env, number)["contact"] == ["mailto:ops2@example.org"]

    uacme(env, tmp_path, "-t", "EC", "newkey")
    rolled = acme_account(env, number)
    assert rolled["key_thumbprint"] != account["key_thumbprint"]
    # The old key is kept as key-TIMESTAMP.pem; the new one is now the account's.
    assert list((tmp_path / "uacme" / "private").glob("key-*.pem"))

    uacme(env, tmp_path, "update")  # no email: the contact is removed
    assert acme_account(env, number)["contact"] == []

    uacme(env, tmp_path, "deactivate")
    assert acme_account(env, number)["status"] == "deactivated"


# --- acme-tiny ----------------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("acme-tiny"), reason="acme-tiny (Debian) is needed")
def test_acme_tiny_http01(env: AcmeEnv, tmp_path: Path) -> None:
    """acme-tiny signs its RS256 JWS with `openssl dgst` and verifies TLS through Python's
    urllib, so SSL_CERT_FILE trusts Tessera's certificate. It takes an RSA account key and a
    CSR made with `openssl req`, and prints the chain on stdout."""
    name, www = names()
    account = tmp_path / "account.key"
    run(["openssl", "genrsa", "-out", str(account), "2048"])
    csr = tmp_path / "domain.csr"
    run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tmp_path / "domain.key"),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},DNS:{www}",
            "-out",
            str(csr),
        ]
    )
    with webroot_server(env.http01_port, tmp_path / "www") as challenges:
        result = subprocess.run(
            [
                ACME_TINY,
                "--account-key",
                str(account),
                "--csr",
                str(csr),
                "--acme-dir",
                str(challenges),
                "--directory-url",
                env.directory,
                "--contact",
                "mailto:ops@example.org",
                # Its self-check fetches http://NAME/.well-known/... on port 80 through the
                # system resolver, which knows nothing of these names (only challtestsrv
                # does); Tessera's own validation is what this test proves.
                "--disable-check",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "SSL_CERT_FILE": str(env.server.ca_bundle)},
        )
    assert result.returncode == 0, result.stderr
    assert "Certificate signed!" in result.stderr
    chain = verified_chain(env, result.stdout.encode(), tmp_path / "verify")
    assert dns_names(chain[0]) == sorted([name, www])
    assert chain[0].subject.rfc4514_string() == f"CN={name}"
    entry = inventory_entry(env, chain[0])
    assert entry["source"] == "acme"
    account_url = re.search(r"Account ID: (\S+)", result.stderr)
    assert account_url, result.stderr
    registered = acme_account(env, account_id(account_url.group(1)))
    assert registered["key_type"] == "RSA"
    assert registered["contact"] == ["mailto:ops@example.org"]


# --- acmetool -----------------------------------------------------------------------------
#
# acmetool 0.2.2 runs unattended with --batch and a response file (its only question here is
# the e-mail address; Tessera's directory has no terms of service by default, so there is no
# agreement to answer). Its http-01 responder always listens on :80, 402 and 4402 besides the
# configured ports (failures to bind are ignored) and always also writes the challenge into
# /var/run/acme/acme-challenge: /run is replaced by a directory of the test for it, as the
# CA store is for uacme. Go reads SSL_CERT_FILE for the trust in Tessera's certificate.
# `acmetool revoke` only marks a certificate: acmetool 0.2 never sends the revocation (its
# reconcile step that did is commented out since the ACME v2 rewrite), so there is no
# revocation to test with it.


@pytest.mark.skipif(not shutil.which("acmetool"), reason="acmetool (Debian) is needed")
@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_acmetool_http01(env: AcmeEnv, tmp_path: Path, key_type: str) -> None:
    name, www = names()
    state = tmp_path / "state"
    (state / "conf").mkdir(parents=True)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "run").mkdir()
    (state / "conf" / "target").write_text(
        "request:\n"
        f"  provider: {env.directory}\n"
        "  key:\n"
        f"    type: {key_type}\n"
        "  challenge:\n"
        "    http-ports:\n"
        f'      - "127.0.0.1:{env.http01_port}"\n'
        # The self-test would fetch http://NAME/ through the system resolver (see acme-tiny).
        "    http-self-test: false\n"
    )
    responses = tmp_path / "responses"
    responses.write_text('"acme-enter-email": "ops@example.org"\n')
    run(
        [
            *private_mounts({"/run": tmp_path / "run"}),
            ACMETOOL,
            "--state",
            str(state),
            "--hooks",
            str(tmp_path / "hooks"),
            "--batch",
            "--response-file",
            str(responses),
            "want",
            name,
            www,
        ],
        env={"SSL_CERT_FILE": str(env.server.ca_bundle)},
    )
    live = state / "live" / name
    chain = verified_chain(env, (live / "fullchain").read_bytes(), tmp_path / "verify")
    leaf = chain[0]
    assert dns_names(leaf) == sorted([name, www])
    assert (live / "fullchain").read_bytes().startswith((live / "cert").read_bytes())
    key = load_pem_private_key((live / "privkey").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    expected = ec.EllipticCurvePublicKey if key_type == "ecdsa" else rsa.RSAPublicKey
    assert isinstance(leaf.public_key(), expected)
    assert inventory_entry(env, leaf)["source"] == "acme"
    # (www.)NAME both point at the one certificate.
    assert (state / "live" / www / "fullchain").read_bytes() == (live / "fullchain").read_bytes()
