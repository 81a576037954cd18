"""certbot 5 from PyPI (the one installed next to this interpreter) against a real `tessera
serve`: http-01 standalone, manual dns-01 through hooks, renewal driven by ARI (RFC 9773),
ACME profiles, EAB and revocation seen in OCSP and the CRL. Debian's certbot 2.1 runs in
test_acme_clients.py, whose fixtures and helpers this module reuses."""

import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.acme_helpers import AcmeEnv, dns_names
from tests.e2e.helpers import API, data, unique
from tests.e2e.test_acme_clients import (
    assert_revocation_published,
    certbot,
    inventory_entry,
    load_pem,
    manual_dns,
    names,
    run,
)
from tests.e2e.test_acme_protocol import ari_id

CERTBOT5 = Path(sys.executable).parent / "certbot"
pytestmark = pytest.mark.skipif(
    not (CERTBOT5.exists() and shutil.which("pebble-challtestsrv")),
    reason="certbot 5 (the test extras) and pebble-challtestsrv (Debian pebble) are needed",
)


def certbot5(env: AcmeEnv, *args: str, home: Path) -> str:
    return certbot(env, *args, home=home, binary=CERTBOT5)


def standalone(env: AcmeEnv) -> list[str]:
    return [
        "--standalone",
        "--preferred-challenges",
        "http",
        "--http-01-port",
        str(env.http01_port),
    ]


def issue_http01(
    env: AcmeEnv, home: Path, lineage: str, *hosts: str, extra: tuple[str, ...] = ()
) -> Path:
    """certonly --standalone for the hosts; returns the lineage's live directory."""
    domains = [arg for host in hosts for arg in ("-d", host)]
    certbot5(
        env,
        "certonly",
        *standalone(env),
        "--agree-tos",
        "-m",
        "ops@example.org",
        *domains,
        "--cert-name",
        lineage,
        *extra,
        home=home,
    )
    return home / "config" / "live" / lineage


def test_certbot5_is_the_pypi_release() -> None:
    assert run([str(CERTBOT5), "--version"]).startswith("certbot 5.")


def test_certbot5_http01_standalone_and_revoke(env: AcmeEnv, tmp_path: Path) -> None:
    name, www = names()
    live = issue_http01(env, tmp_path, "site", name, www)
    chain = load_pem(live / "fullchain.pem")
    leaf = chain[0]
    assert dns_names(leaf) == sorted([name, www])
    assert leaf.issuer == chain[1].subject
    assert inventory_entry(env, leaf)["source"] == "acme"

    certbot5(
        env,
        "revoke",
        "--cert-path",
        str(live / "cert.pem"),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
        home=tmp_path,
    )
    assert inventory_entry(env, leaf)["status"] == "revoked"
    assert_revocation_published(tmp_path, leaf, load_pem(live / "chain.pem")[0])


def test_certbot5_manual_dns01_wildcard(env: AcmeEnv, tmp_path: Path) -> None:
    name, _ = names()
    certbot5(
        env,
        "certonly",
        *manual_dns(env, tmp_path),
        "--agree-tos",
        "-m",
        "ops@example.org",
        "-d",
        name,
        "-d",
        f"*.{name}",
        "--cert-name",
        "dns",
        home=tmp_path,
    )
    leaf = load_pem(tmp_path / "config" / "live" / "dns" / "cert.pem")[0]
    assert leaf.subject.rfc4514_string() == f"CN={name}"
    assert dns_names(leaf) == sorted([name, f"*.{name}"])


def test_certbot5_renews_when_ari_says_so(env: AcmeEnv, tmp_path: Path) -> None:
    """Two fresh lineages; an administrator marks one for early renewal. A plain `certbot
    renew` asks renewalInfo for both and renews only the marked one: a fresh certificate is
    far from certbot's own two-thirds-of-lifetime default, so only ARI can move it."""
    marked_live = issue_http01(env, tmp_path, "marked", names()[0])
    kept_live = issue_http01(env, tmp_path, "kept", names()[0])
    marked, kept = load_pem(marked_live / "cert.pem")[0], load_pem(kept_live / "cert.pem")[0]
    with env.api() as api:
        data(api.post(f"{API}/acme/renewal/{inventory_entry(env, marked)['id']}"))

    output = certbot5(env, "renew", "--no-random-sleep-on-renew", home=tmp_path)
    assert "not yet due for renewal" in output, output
    renewed = load_pem(marked_live / "cert.pem")[0]
    assert renewed.serial_number != marked.serial_number
    assert dns_names(renewed) == dns_names(marked)
    assert inventory_entry(env, renewed)["source"] == "acme"
    assert load_pem(kept_live / "cert.pem")[0].serial_number == kept.serial_number
    assert "ACME Renewal Information (ARI)" not in output, output  # certbot's ARI warning
    log = (tmp_path / "logs" / "letsencrypt.log").read_text()
    for cert in (marked, kept):
        assert f'"GET /acme/renewalInfo/{ari_id(cert)} HTTP/1.1" 200' in log


def profile_template(env: AcmeEnv, days: int) -> int:
    body = {
        "name": unique("ACME short"),
        "template_type": "server",
        "validity_days": days,
        "extended_key_usage": ["serverAuth"],
    }
    with env.api() as api:
        return int(data(api.post(f"{API}/templates", json=body), 201)["id"])


def test_certbot5_preferred_profile(env: AcmeEnv, tmp_path: Path) -> None:
    """The directory lists the profiles; --preferred-profile picks one, and the certificate
    has the validity of the profile's template rather than the server's default."""
    days = 7
    before: dict[str, Any] = env.settings()["profiles"]
    profiles = {"short": {"description": "a week", "template_id": profile_template(env, days)}}
    env.settings(profiles=profiles)
    try:
        name, _ = names()
        live = issue_http01(env, tmp_path, "short", name, extra=("--preferred-profile", "short"))
        leaf = load_pem(live / "cert.pem")[0]
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=days)
        cert_id = inventory_entry(env, leaf)["id"]
        with env.api() as api:
            orders = data(api.get(f"{API}/acme/orders", params={"status": "valid"}))  # newest first
        order = next(o for o in orders if o["certificate_id"] == cert_id)
        assert order["profile"] == "short"
        assert (
            "preferred_profile = short"
            in (tmp_path / "config" / "renewal" / "short.conf").read_text()
        )
    finally:
        env.settings(profiles=before)


def test_certbot5_eab_register_and_revoke_by_certificate_key(env: AcmeEnv, tmp_path: Path) -> None:
    with env.api() as api:
        key = data(api.post(f"{API}/acme/eab", json={"comment": "certbot 5"}), 201)
    env.settings(require_eab=True)
    try:
        base = ["register", "--agree-tos", "-m", "ops@example.org"]
        # certbot() asserts a zero exit; its message carries certbot's output
        with pytest.raises(AssertionError, match=r"(?i)external account binding"):
            certbot5(env, *base, home=tmp_path / "refused")
        # One argument each: a base64url key may start with "-" (an option, to argparse).
        eab = (f"--eab-kid={key['kid']}", f"--eab-hmac-key={key['hmac_key']}")
        certbot5(env, *base, *eab, home=tmp_path)
        live = issue_http01(env, tmp_path, "eab", names()[0])
    finally:
        env.settings(require_eab=False)
    with env.api() as api:
        used = next(k for k in data(api.get(f"{API}/acme/eab")) if k["kid"] == key["kid"])
    assert used["status"] == "used" and used["account_id"]
    leaf = load_pem(live / "cert.pem")[0]
    certbot5(
        env,
        "revoke",
        "--cert-path",
        str(live / "cert.pem"),
        "--key-path",
        str(live / "privkey.pem"),
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
        home=tmp_path,
    )
    assert inventory_entry(env, leaf)["status"] == "revoked"
    assert_revocation_published(tmp_path, leaf, load_pem(live / "chain.pem")[0])
