"""A PKCSReq sent again late in its certificate's life is a renewal, not a retry: certmonger
renews this way by default (same key, so the same transactionID, and no RenewalReq). The
server is restarted under libfaketime (the `faketime` package, LD_PRELOAD) to stand 300 days
later; nothing in the product is faked."""

import glob
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import unique
from tests.e2e.test_scep_protocol import (
    BAD_CERT_ID,
    FAILURE,
    RENEWAL_REQ,
    SUCCESS,
    Client,
    Sent,
    ca_certificates,
    csr_der,
    default_profile,
    new_client,
    pki_message,
    read_reply,
    split,
)
from tests.support import Server, admin_api_key, database, start_server, stop_server

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))


def later(days: int) -> dict[str, str]:
    assert LIBFAKETIME, "libfaketime is not installed (Debian package faketime)"
    # Monotonic time stays real: timeouts and the job loop keep their pace.
    return {
        "LD_PRELOAD": LIBFAKETIME[0],
        "FAKETIME": f"+{days}d",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def started(folder: Path, url: str | None, env: dict[str, str] | None = None) -> Server:
    running = start_server(folder, url, env=env)
    running.api_key = admin_api_key(running)
    return running


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_same_pkcsreq_renews_once_the_certificate_is_due(backend: str, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    with database(backend) as url:
        # The server's own TLS certificate outlives the restarts below, or the server,
        # standing within 30 days of its end, would replace it with one not yet valid for
        # the test's own (real) clock.
        running = started(folder, url, {"TESSERA_TLS_CERT_DAYS": "825"})
        try:
            with default_profile(running, unique("SCEP Window Root")) as scep:
                client, cn = new_client(), unique("w")
                sent = pki_message(client, scep.ra, csr_der(client, cn, scep.challenge))
                first = read_reply(scep.post(sent), client, scep.ra)
                retried = read_reply(scep.post(sent), client, scep.ra)  # a lost answer
                ra = scep.ra
        finally:
            stop_server(running)
        assert first.status == retried.status == SUCCESS
        (issued,) = first.certificates
        assert retried.certificates == [issued]
        lifetime = issued.not_valid_after_utc - issued.not_valid_before_utc
        assert lifetime.days * 2 / 3 < 300 < lifetime.days  # 300 days on: in its last third

        running = started(folder, url, later(300))
        try:
            with httpx.Client(base_url=running.http_url, timeout=60) as http:

                def post() -> httpx.Response:
                    return http.post(
                        "/scep/pkiclient.exe?operation=PKIOperation",
                        content=sent.der,
                        headers={"content-type": "application/x-pki-message"},
                    )

                renewed = read_reply(post(), client, ra)
                assert renewed.status == SUCCESS
                (new,) = renewed.certificates
                assert new.serial_number != issued.serial_number
                assert new.public_key() == issued.public_key() and new.subject == issued.subject
                # signed at the server's (shifted) time
                assert new.not_valid_before_utc > issued.not_valid_before_utc + timedelta(days=299)
                again = read_reply(post(), client, ra)  # and that one is retried as such
                assert again.certificates == [new]
                # A RenewalReq signed by the certificate near its end renews it.
                holder = Client(client.key, issued)
                renewal = pki_message(holder, ra, csr_der(holder, cn, None), RENEWAL_REQ)
                assert read_reply(post_to(http, renewal), holder, ra).status == SUCCESS
        finally:
            stop_server(running)

        # Once it has expired it renews nothing: badCertId (the client enrolls again). The
        # RA known before has expired too: the one the RA renewal job made answers.
        running = started(folder, url, later(lifetime.days + 30))
        try:
            with httpx.Client(base_url=running.http_url, timeout=60) as http:
                _ca, ra = split(ca_certificates(http, "/scep/pkiclient.exe"))
                renewal = pki_message(holder, ra, csr_der(holder, cn, None), RENEWAL_REQ)
                expired = read_reply(post_to(http, renewal), holder, ra)
                assert (expired.status, expired.fail_info) == (FAILURE, BAD_CERT_ID)
        finally:
            stop_server(running)


def post_to(http: httpx.Client, sent: Sent) -> httpx.Response:
    return http.post(
        "/scep/pkiclient.exe?operation=PKIOperation",
        content=sent.der,
        headers={"content-type": "application/x-pki-message"},
    )
