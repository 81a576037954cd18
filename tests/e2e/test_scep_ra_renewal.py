"""SCEP RA renewal end to end: an RA that nears its end is renewed by the `scep-ra-renewal`
job of a real `tessera serve`, GetCACert hands out the new RA, requests still encrypted to the
old one are served (and answered by it), and clients enroll through the new one.

The RA is brought near its end without touching the clock: the first server issues it with
`TESSERA_SCEP_RA_DAYS=20` (renewed when a third of that is left, so not yet), and the second
server, on the same data, runs with the default 365 days, whose 30-day window the 20-day RA
is inside; its renewal job runs at start."""

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import BACKENDS
from tests.e2e.helpers import data, unique
from tests.e2e.test_scep_protocol import (
    CERT_POLL,
    PENDING,
    SUCCESS,
    ca_certificates,
    csr_der,
    issuer_and_subject,
    new_client,
    pki_message,
    read_reply,
    rsa_ca,
    split,
)
from tests.support import Server, admin_api_key, database, start_server, stop_server
from tests.tools import openssl_verify, pkilint_findings

API = "/api/v2"
PATH = "/scep/pkiclient.exe"
CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


@dataclass
class Restartable:
    """A data directory and database that several servers run on, one after the other."""

    data_dir: Path
    database_url: str | None
    running: Server | None = None

    def start(self, **env: str) -> Server:
        self.stop()
        self.running = start_server(self.data_dir, self.database_url, env=env)
        self.running.api_key = admin_api_key(self.running)
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            stop_server(self.running)
            self.running = None


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Restartable]:
    with database(request.param) as url:
        site = Restartable(tmp_path / "data", url)
        try:
            yield site
        finally:
            site.stop()


def current_ra(server: Server) -> x509.Certificate:
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        return split(ca_certificates(http, PATH))[1]


def renewed_ra(server: Server, old: x509.Certificate, timeout: float = 60) -> x509.Certificate:
    """The RA GetCACert hands out once the job (which runs at start) has replaced `old`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ra = current_ra(server)
        if ra != old:
            return ra
        time.sleep(0.5)
    raise AssertionError(f"the RA was not renewed:\n{server.log()}")


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - datetime.now(UTC)) / timedelta(days=1)


def public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def post(server: Server, der: bytes) -> httpx.Response:
    with httpx.Client(base_url=server.http_url, timeout=60) as http:
        return http.post(
            f"{PATH}?operation=PKIOperation",
            content=der,
            headers={"content-type": "application/x-pki-message"},
        )


def check_ra(workdir: Path, ra: x509.Certificate, ca: x509.Certificate) -> None:
    eku = ra.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [CMC_RA]
    usage = ra.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    pem = ra.public_bytes(Encoding.PEM).decode()
    assert pkilint_findings(workdir, pem, "ra.pem") == ""
    verified = openssl_verify(workdir, pem, [ca.public_bytes(Encoding.PEM).decode()])
    assert "OK" in verified, verified


def test_ra_renewal_end_to_end(site: Restartable, tmp_path: Path) -> None:
    # 1. A server that issues 20-day RAs: the profile's RA is not yet due there.
    first = site.start(TESSERA_SCEP_RA_DAYS="20")
    with first.client() as api:
        ca_id = rsa_ca(api, unique("SCEP Renewal Root"))
        config = {"enabled": True, "ca_id": ca_id, "auto_approve": False}
        data(api.patch(f"{API}/scep/config", json=config))
        challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
    with httpx.Client(base_url=first.http_url, timeout=30) as http:
        ca, old_ra = split(ca_certificates(http, PATH))
    assert 19 < days_left(old_ra) <= 20
    check_ra(tmp_path, old_ra, ca)
    # A device enrolls through the old RA and is queued; it will poll after the renewal.
    device = new_client()
    sent = pki_message(device, old_ra, csr_der(device, "in-flight", challenge))
    assert read_reply(post(first, sent.der), device, old_ra).status == PENDING
    # A request built for the old RA but only sent after the renewal.
    late = new_client()
    late_sent = pki_message(late, old_ra, csr_der(late, "late", challenge))

    # 2. The default 365-day server on the same data: 20 days left is inside its window.
    second = site.start(TESSERA_SCEP_ALLOW_DES="true")  # for scepclient below (single DES)
    new_ra = renewed_ra(second, old_ra)
    assert new_ra.issuer == ca.subject and new_ra.serial_number != old_ra.serial_number
    assert public_der(new_ra) != public_der(old_ra)
    assert 364 < days_left(new_ra) <= 365
    check_ra(tmp_path, new_ra, ca)
    with second.client() as api:
        ras = data(api.get(f"{API}/certificates", params={"search": "SCEP RA default"}))
        assert len(ras) == 2 and {c["status"] for c in ras} == {"active"}, ras
        # The queued request is approved; the device still only knows the old RA.
        pending = data(api.get(f"{API}/scep/requests", params={"status": "pending"}))
        row = next(r for r in pending if r["transaction_id"] == sent.transaction_id)
        data(api.post(f"{API}/scep/{row['id']}/approve"))
    poll = pki_message(
        device,
        old_ra,
        issuer_and_subject(ca.subject, "in-flight"),
        kind=CERT_POLL,
        transaction_id=sent.transaction_id,
    )
    polled = read_reply(post(second, poll.der), device, old_ra)  # opened and signed by it
    assert polled.status == SUCCESS and polled.certificates[0].issuer == ca.subject
    assert read_reply(post(second, late_sent.der), late, old_ra).status == PENDING

    # 3. New enrollments go through the new RA: the protocol helpers and scepclient.
    with second.client() as api:
        data(api.patch(f"{API}/scep/config", json={"auto_approve": True}))
    assert current_ra(second) == new_ra  # saving the profile did not reissue a fresh RA
    fresh = new_client()
    reply = read_reply(
        post(second, pki_message(fresh, new_ra, csr_der(fresh, "after", challenge)).der),
        fresh,
        new_ra,
    )
    assert reply.status == SUCCESS and reply.certificates[0].issuer == ca.subject
    enroll_with_scepclient(second, tmp_path / "scepclient", challenge, ca)


def enroll_with_scepclient(
    server: Server, workdir: Path, challenge: str, ca: x509.Certificate
) -> None:
    """micromdm's scepclient fetches GetCACert itself, so it encrypts to the new RA."""
    cn = unique("mdm-after-renewal")
    args = ["scepclient", "-server-url", f"{server.http_url}{PATH}", "-private-key", "key.pem"]
    args += ["-certificate", "cert.pem", "-cn", cn, f"-challenge={challenge}"]
    workdir.mkdir()
    ran = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    pem = (workdir / "cert.pem").read_text()
    verified = openssl_verify(workdir, pem, [ca.public_bytes(Encoding.PEM).decode()])
    assert "OK" in verified, verified
    issued = x509.load_pem_x509_certificate(pem.encode())
    names = issued.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [n.value for n in names] == [cn]


def public(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=30)


def test_a_revoked_ra_stops_answering_until_the_job_replaces_it(site: Restartable) -> None:
    """Clients encrypt to the RA and trust what it signs: once its certificate is revoked,
    GetCACert and enrollments are 503 in every process at once (the responder each process
    keeps is not reused), and the renewal job issues the next RA (at start, then every
    minute)."""
    server = site.start()
    with server.client() as api:
        ca_id = rsa_ca(api, unique("SCEP Revoked RA Root"))
        config = {"enabled": True, "ca_id": ca_id, "auto_approve": True}
        data(api.patch(f"{API}/scep/config", json=config))
        challenge = data(api.get(f"{API}/scep/challenge/{ca_id}"))["challenge"]
        ca, old_ra = split(ca_certificates(public(server), PATH))
        [row] = data(api.get(f"{API}/certificates", params={"search": "SCEP RA default"}))
        assert int(row["serial_number"], 16) == old_ra.serial_number
        revoke = {"reason": "keyCompromise"}
        data(api.post(f"{API}/certificates/{row['id']}/revoke", json=revoke))
    with public(server) as http:
        for _ in range(4):  # the responder this process built before is not reused
            refused = http.get(f"{PATH}?operation=GetCACert")
            assert refused.status_code == 503, refused.text
            assert "revoked" in refused.text
    device = new_client()
    sent = pki_message(device, old_ra, csr_der(device, "to-a-revoked-ra", challenge))
    assert post(server, sent.der).status_code == 503

    restarted = site.start()  # the renewal job runs at start
    new_ra = renewed_ra(restarted, old_ra)
    assert new_ra.serial_number != old_ra.serial_number and new_ra.issuer == ca.subject
    fresh = new_client()
    answer = post(restarted, pki_message(fresh, new_ra, csr_der(fresh, "after", challenge)).der)
    assert read_reply(answer, fresh, new_ra).status == SUCCESS
