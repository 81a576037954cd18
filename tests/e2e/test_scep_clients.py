"""SCEP with the real clients installed on this machine: micromdm's `scepclient` (Debian
`scep`), strongSwan's `pki --scepca` / `pki --scep` (Debian `strongswan-pki`) and certmonger
(`scep-submit`, and the daemon with `getcert` on a private D-Bus session bus). Issued
certificates are checked with `openssl verify` and pkilint."""

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import data, unique
from tests.support import Server, module_server
from tests.tools import openssl, openssl_verify, pkilint_findings

API = "/api/v2"
CLIENT_TIMEOUT = 180


@dataclass
class Setup:
    server: Server
    ca_id: int
    ca_pem: str
    challenge: str

    def url(self, path: str = "/scep/pkiclient.exe") -> str:
        return f"{self.server.http_url}{path}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """micromdm's scepclient encrypts with single DES only, which RFC 8894 forbids and
    Tessera refuses unless allowed (docs/scep.md)."""
    env = {"TESSERA_SCEP_ALLOW_DES": "true"}
    with module_server(request.param, tmp_path_factory.mktemp("scep") / "data", env) as running:
        yield running


@pytest.fixture(scope="module")
def setup(server: Server) -> Iterator[Setup]:
    with server.client() as api:
        body = {
            "common_name": unique("SCEP Clients Root"),
            "key_algorithm": "RSA",
            "key_size": 2048,
            "ca_type": "root",
        }
        ca = data(api.post(f"{API}/cas", json=body), 201)
        config = {"enabled": True, "ca_id": ca["id"], "auto_approve": True}
        data(api.patch(f"{API}/scep/config", json=config))
        challenge = data(api.get(f"{API}/scep/challenge/{ca['id']}"))["challenge"]
        pem = api.get(f"{API}/cas/{ca['id']}/export", params={"format": "pem"}).text
        yield Setup(server, int(ca["id"]), pem, challenge)


def new_profile(api: httpx.Client, setup: Setup, **settings: Any) -> str:
    slug = unique("c").lower()
    body = {"slug": slug, "enabled": True, "ca_id": setup.ca_id, **settings}
    data(api.post(f"{API}/scep/profiles", json=body), 201)
    return f"/scep/{slug}/pkiclient.exe"


def run(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, **kwargs
    )


def scepclient(setup: Setup, cwd: Path, cn: str, challenge: str | None, path: str = "") -> Any:
    args = [
        "scepclient",
        "-server-url",
        setup.url(path or "/scep/pkiclient.exe"),
        "-private-key",
        "key.pem",
        "-certificate",
        "cert.pem",
        "-cn",
        cn,
    ]
    if challenge is not None:
        args.append(f"-challenge={challenge}")
    return run(args, cwd)


def check_issued(setup: Setup, workdir: Path, cert_pem: str) -> None:
    verified = openssl_verify(workdir, cert_pem, [setup.ca_pem])
    assert "OK" in verified, verified
    assert pkilint_findings(workdir, cert_pem) == ""


def pending_request(api: httpx.Client, common_name: str) -> dict[str, Any]:
    """Wait (bounded) until the client's request shows up in the approval queue."""
    for _ in range(120):
        rows = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
        for row in rows:
            if row["common_name"] == common_name:
                return dict(row)
        time.sleep(0.5)
    raise AssertionError(f"no pending SCEP request for {common_name}")


# --- micromdm scepclient ----------------------------------------------------------------


def test_scepclient_static_challenge(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    cn = unique("mdm-static")
    result = scepclient(setup, workdir, cn, setup.challenge)
    assert result.returncode == 0, result.stdout + result.stderr
    pem = (workdir / "cert.pem").read_text()
    check_issued(setup, workdir, pem)
    listed = data(api.get(f"{API}/certificates", params={"search": cn}))
    assert [c["source"] for c in listed] == ["scep"]


def test_scepclient_wrong_challenge(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    cn = unique("mdm-wrong")
    result = scepclient(setup, workdir, cn, "not-the-challenge")
    assert result.returncode != 0
    assert "badRequest" in result.stdout + result.stderr
    assert not (workdir / "cert.pem").exists()
    assert data(api.get(f"{API}/certificates", params={"search": cn})) == []


def test_scepclient_dynamic_challenge(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    body = {"common_name": unique("SCEP Dynamic"), "key_algorithm": "RSA", "key_size": 2048}
    ca = data(api.post(f"{API}/cas", json={**body, "ca_type": "root"}), 201)
    path = new_profile(api, setup, ca_id=ca["id"], challenge_type="dynamic", auto_approve=True)
    challenge = data(api.get(f"{API}/scep/challenge/{ca['id']}"))["challenge"]
    first = scepclient(setup, workdir, unique("mdm-dyn"), challenge, path)
    assert first.returncode == 0, first.stdout + first.stderr
    again = workdir / "again"
    again.mkdir()
    reused = scepclient(setup, again, unique("mdm-dyn"), challenge, path)
    assert reused.returncode != 0 and "badRequest" in reused.stdout + reused.stderr


def test_scepclient_pending_then_approved(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    path = new_profile(api, setup, auto_approve=False)
    cn = unique("mdm-pending")
    args = [
        "scepclient",
        "-server-url",
        setup.url(path),
        "-private-key",
        "key.pem",
        "-certificate",
        "cert.pem",
        "-cn",
        cn,
        f"-challenge={setup.challenge}",
    ]
    # scepclient re-sends its request every 30 s while the answer is PENDING
    process = subprocess.Popen(
        args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        row = pending_request(api, cn)
        assert not (workdir / "cert.pem").exists()
        approved = data(api.post(f"{API}/scep/{row['id']}/approve"))
        assert approved["status"] == "issued"
        output, _ = process.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "PENDING" in output
    check_issued(setup, workdir, (workdir / "cert.pem").read_text())


def test_scepclient_pending_then_rejected(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    """scepclient polls by sending its PKCSReq again: the rejection must reach it (FAILURE,
    and it stops), not make its request anew, which would queue it again and again."""
    path = new_profile(api, setup, auto_approve=False)
    cn = unique("mdm-rejected")
    args = [
        "scepclient", "-server-url", setup.url(path), "-private-key", "key.pem",
        "-certificate", "cert.pem", "-cn", cn, f"-challenge={setup.challenge}",
    ]  # fmt: skip
    process = subprocess.Popen(
        args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        row = pending_request(api, cn)
        data(api.post(f"{API}/scep/{row['id']}/reject", json={"reason": "Invalid device"}))
        output, _ = process.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, output
    assert "badRequest" in output, output
    requests = data(api.get(f"{API}/scep/requests", params={"per_page": 100}))
    assert [r["status"] for r in requests if r["common_name"] == cn] == ["rejected"]


def test_scepclient_renewal(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    cn = unique("mdm-renew")
    first = scepclient(setup, workdir, cn, setup.challenge)
    assert first.returncode == 0, first.stdout + first.stderr
    old = (workdir / "cert.pem").read_text()
    # With cert.pem present scepclient sends a RenewalReq signed by that certificate.
    second = scepclient(setup, workdir, cn, None)
    assert second.returncode == 0, second.stdout + second.stderr
    new = (workdir / "cert.pem").read_text()
    assert new != old
    check_issued(setup, workdir, new)
    requests = data(api.get(f"{API}/scep/requests", params={"per_page": 100}))
    kinds = {r["message_type"] for r in requests if r["common_name"] == cn}
    assert kinds == {"PKCSReq", "RenewalReq"}


# --- strongSwan pki ---------------------------------------------------------------------


def pki(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(["pki", *args], cwd)


def fetch_ca_certs(setup: Setup, workdir: Path, path: str = "/scep/pkiclient.exe") -> None:
    fetched = pki(
        "--scepca", "--url", setup.url(path), "--caout", "ca.der", "--raout", "ra.der",
        "--force", cwd=workdir,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "written to 'ca.der'" in fetched.stderr + fetched.stdout
    assert (workdir / "ra.der").exists()


def strongswan_enroll(
    setup: Setup, workdir: Path, cn: str, *extra: str, path: str = "/scep/pkiclient.exe"
) -> subprocess.CompletedProcess[str]:
    key = pki("--gen", "--type", "rsa", "--size", "2048", "--outform", "pem", cwd=workdir)
    (workdir / "key.pem").write_text(key.stdout)
    return pki(
        "--scep", "--url", setup.url(path), "--in", "key.pem", "--dn", f"CN={cn}, O=Tessera",
        "--san", f"{cn}.example.test", "--password", setup.challenge,
        "--cacert-enc", "ra.der", "--cacert-sig", "ra.der", "--cacert", "ca.der",
        "--outform", "pem", *extra, cwd=workdir,
    )  # fmt: skip


@pytest.mark.parametrize("cipher", ["aes", "des3"])
def test_strongswan_enrolls(setup: Setup, workdir: Path, cipher: str) -> None:
    fetch_ca_certs(setup, workdir)
    cn = unique(f"ipsec-{cipher}")
    result = strongswan_enroll(setup, workdir, cn, "--cipher", cipher)
    assert result.returncode == 0, result.stderr
    assert "Issued certificate is trusted" in result.stderr
    check_issued(setup, workdir, result.stdout)


def test_strongswan_polls_until_rejected(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    path = new_profile(api, setup, auto_approve=False)
    fetch_ca_certs(setup, workdir, path)
    cn = unique("ipsec-poll")
    key = pki("--gen", "--type", "rsa", "--size", "2048", "--outform", "pem", cwd=workdir)
    (workdir / "key.pem").write_text(key.stdout)
    args = [
        "pki", "--scep", "--url", setup.url(path), "--in", "key.pem", "--dn", f"CN={cn}",
        "--password", setup.challenge, "--cacert-enc", "ra.der", "--cacert-sig", "ra.der",
        "--cacert", "ca.der", "--interval", "1",
    ]  # fmt: skip
    process = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        row = pending_request(api, cn)
        data(api.post(f"{API}/scep/{row['id']}/reject", json={"reason": "Invalid device"}))
        _, stderr = process.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    text = stderr.decode()
    assert process.returncode != 0
    assert "polling" in text and "badRequest" in text, text


# --- certmonger -------------------------------------------------------------------------

SCEP_SUBMIT = Path("/usr/lib/certmonger/scep-submit")


def test_certmonger_scep_submit_caps_and_certs(setup: Setup, workdir: Path) -> None:
    caps = run([str(SCEP_SUBMIT), "-u", setup.url(), "-c"], workdir)
    assert caps.returncode == 0, caps.stderr
    assert {"POSTPKIOperation", "SHA-256", "AES", "Renewal"} <= set(caps.stdout.split())
    # Single DES is allowed here (see `server`): not an RFC 8894 server any more (2.9).
    assert "SCEPStandard" not in caps.stdout.split()
    certs = run([str(SCEP_SUBMIT), "-u", setup.url(), "-C"], workdir)
    assert certs.returncode == 0, certs.stderr
    assert certs.stdout.count("BEGIN CERTIFICATE") == 2  # the RA and the CA


# `settle FILE [STATES]`: wait (bounded) until the request for FILE reaches one of STATES,
# by default getcert's states once a submission has an answer (CA_WORKING: PENDING) or none
# it can read (CA_UNREACHABLE); then list it.
SETTLE = """settle() {
  for _ in $(seq 1 240); do
    getcert list -s -f "$1" | sed -n 's/^[[:space:]]*status: //p' \\
      | grep -qxE "${2:-CA_REJECTED|CA_UNREACHABLE|CA_WORKING|MONITORING}" && break
    sleep 0.5
  done
  getcert list -s -f "$1"
}
"""


def certmonger(workdir: Path, body: str) -> subprocess.CompletedProcess[str]:
    """The daemon on a private session bus (no system D-Bus in the sandbox), driven by
    `getcert` commands in `body`. It keeps its state in /var/lib/certmonger, so a request
    left tracked by one run is taken up by the next."""
    script = workdir / f"certmonger-{uuid.uuid4().hex[:8]}.sh"
    script.write_text(f"set -e\n{SETTLE}\n{body}\n")
    env = {**os.environ, "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / ".config")}
    command = ["dbus-run-session", "--", "certmonger", "-s", "-n", "-B", "-c", f"bash {script}"]
    return run(command, workdir, env=env)


def forget(workdir: Path, nickname: str, cert: Path) -> None:
    """Stop tracking and remove the CA, whatever state the test left them in."""
    certmonger(
        workdir,
        f"getcert stop-tracking -s -f {cert} || true\ngetcert remove-ca -s -c {nickname} || true",
    )


def test_certmonger_daemon_enrolls(setup: Setup, workdir: Path) -> None:
    """The daemon on a private session bus (no system D-Bus in the sandbox), driven by
    `getcert`; it writes its state under /var/lib/certmonger, which we clean up."""
    if shutil.which("dbus-run-session") is None:
        pytest.skip("dbus-run-session is not installed")
    nickname = f"tessera-{uuid.uuid4().hex[:8]}"
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    script = workdir / "enroll.sh"
    script.write_text(
        f"""set -e
getcert add-scep-ca -s -c {nickname} -u {setup.url()}
getcert request -s -c {nickname} -k {key} -f {cert} -N CN={nickname} -L {setup.challenge} -w
getcert list -s -f {cert}
getcert stop-tracking -s -f {cert}
getcert remove-ca -s -c {nickname}
"""
    )
    env = {**os.environ, "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / ".config")}
    result = run(
        ["dbus-run-session", "--", "certmonger", "-s", "-n", "-B", "-c", f"bash {script}"],
        workdir,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "status: MONITORING" in result.stdout + result.stderr
    pem = cert.read_text()
    check_issued(setup, workdir, pem)
    subject = openssl("x509", "-noout", "-subject", input=pem.encode()).stdout.decode()
    assert nickname in subject


def test_certmonger_wrong_challenge_is_rejected(setup: Setup, workdir: Path) -> None:
    """A FAILURE CertRep must reach the daemon as a rejection (CA_REJECTED), not as an answer
    it cannot read and retries forever (CA_UNREACHABLE)."""
    nickname = f"tessera-{uuid.uuid4().hex[:8]}"
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    try:
        result = certmonger(
            workdir,
            f"""getcert add-scep-ca -s -c {nickname} -u {setup.url()}
getcert request -s -c {nickname} -k {key} -f {cert} -N CN={nickname} -L wrong
settle {cert}""",
        )
    finally:
        forget(workdir, nickname, cert)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "status: CA_REJECTED" in output, output[-3000:]
    assert "Transaction either is not permitted or is not supported" in output
    assert not cert.exists()


def test_certmonger_pending_then_approved(setup: Setup, api: httpx.Client, workdir: Path) -> None:
    """A queued request: the daemon must read PENDING (CA_WORKING); once approved, the next
    daemon run polls (CertPoll) and gets the certificate."""
    path = new_profile(api, setup, auto_approve=False)
    nickname = f"tessera-{uuid.uuid4().hex[:8]}"
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    try:
        first = certmonger(
            workdir,
            f"""getcert add-scep-ca -s -c {nickname} -u {setup.url(path)}
getcert request -s -c {nickname} -k {key} -f {cert} -N CN={nickname} -L {setup.challenge}
settle {cert}""",
        )
        output = first.stdout + first.stderr
        assert first.returncode == 0, output[-3000:]
        assert "status: CA_WORKING" in output, output[-3000:]
        assert not cert.exists()
        row = pending_request(api, nickname)
        assert data(api.post(f"{API}/scep/{row['id']}/approve"))["status"] == "issued"
        # The restarted daemon polls the request it left waiting.
        second = certmonger(workdir, f"settle {cert} 'CA_REJECTED|CA_UNREACHABLE|MONITORING'")
    finally:
        forget(workdir, nickname, cert)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "status: MONITORING" in output, output[-3000:]
    check_issued(setup, workdir, cert.read_text())


def test_certmonger_rekey_gets_a_new_certificate(
    setup: Setup, api: httpx.Client, workdir: Path
) -> None:
    """`getcert rekey`: a new key, hence (certmonger derives it from the key) a new
    transactionID, and a new PKCSReq with the challenge it keeps: a new certificate."""
    nickname = f"tessera-{uuid.uuid4().hex[:8]}"
    key, cert, first = workdir / "key.pem", workdir / "cert.pem", workdir / "first.pem"
    try:
        result = certmonger(
            workdir,
            f"""getcert add-scep-ca -s -c {nickname} -u {setup.url()}
getcert request -s -c {nickname} -k {key} -f {cert} -N CN={nickname} -L {setup.challenge} -w
cp {cert} {first}
getcert rekey -s -f {cert} -w
getcert list -s -f {cert}""",
        )
    finally:
        forget(workdir, nickname, cert)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "status: MONITORING" in output, output[-3000:]
    old, new = first.read_text(), cert.read_text()
    for pem in (old, new):
        check_issued(setup, workdir, pem)

    def public_key(pem: str) -> bytes:
        return openssl("x509", "-noout", "-pubkey", input=pem.encode()).stdout

    assert public_key(old) != public_key(new)
    rows = data(api.get(f"{API}/scep/requests", params={"per_page": 100}))
    mine = [r for r in rows if r["common_name"] == nickname]
    assert [r["message_type"] for r in mine] == ["PKCSReq", "PKCSReq"]
    assert len({r["transaction_id"] for r in mine}) == 2
