"""The server's CertReps read by OpenSSL's own CMS code, not by Tessera's: a PKCSReq built by
hand (tests/e2e/test_scep_protocol.py's small client) is sent to a real `tessera serve`, and
the answer is verified with `openssl cms -verify` (the RA's signature, chained to the CA
from GetCACert), opened with `openssl cms -decrypt` and listed with `openssl pkcs7`, as
clients built on OpenSSL (certmonger, sscep) read it. PENDING and FAILURE must verify
without detached content, as certmonger's PKCS7_verify does."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.helpers import unique
from tests.e2e.test_scep_protocol import (
    Client,
    Scep,
    ca_certificates,
    csr_der,
    default_profile,
    new_client,
    pki_message,
    profile,
    split,
)
from tests.support import Server
from tests.tools import openssl, openssl_verify, pem_blocks

PEM = serialization.Encoding.PEM
TRANSACTION_ID, PKI_STATUS, FAIL_INFO = (
    "2.16.840.1.113733.1.9.7",
    "2.16.840.1.113733.1.9.3",
    "2.16.840.1.113733.1.9.4",
)


@pytest.fixture(scope="module")
def scep(server: Server) -> Iterator[Scep]:
    with default_profile(server, "SCEP OpenSSL Root") as made:
        yield made


def ok(*args: str, input: bytes | None = None) -> bytes:
    result = openssl(*args, input=input)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def files(workdir: Path, scep: Scep, client: Client) -> tuple[str, str, str]:
    ca, cert, key = workdir / "ca.pem", workdir / "client.pem", workdir / "client.key"
    ca.write_bytes(scep.ca.public_bytes(PEM))
    cert.write_bytes(client.cert.public_bytes(PEM))
    key.write_bytes(
        client.key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(ca), str(cert), str(key)


def verified(answer: bytes, ca: str) -> bytes:
    """`openssl cms -verify`: the RA's signature over the signed attributes and the content,
    and the RA (carried in the answer) chained to the CA. The RA's only EKU is cmcRA, which
    OpenSSL's default S/MIME purpose would refuse, hence `-purpose any`."""
    args = ["cms", "-verify", "-inform", "DER", "-binary", "-CAfile", ca, "-purpose", "any"]
    return ok(*args, input=answer)


def printed(answer: bytes) -> str:
    return ok("cms", "-cmsout", "-print", "-inform", "DER", input=answer).decode()


def attribute_value(text: str, oid: str) -> str:
    """The value printed after `oid` in `openssl cms -cmsout -print`."""
    after = text.split(f"({oid})\n", 1)[1]
    return after.split("PRINTABLESTRING:", 1)[1].split("\n", 1)[0].strip()


def post(scep: Scep, der: bytes, path: str | None = None) -> bytes:
    response = scep.http.post(
        f"{path or scep.path}?operation=PKIOperation",
        content=der,
        headers={"content-type": "application/x-pki-message"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-pki-message"
    return response.content


def test_openssl_reads_a_success(scep: Scep, workdir: Path) -> None:
    client, cn = new_client(), unique("openssl-success")
    ca, cert, key = files(workdir, scep, client)
    sent = pki_message(client, scep.ra, csr_der(client, cn, scep.challenge))
    answer = post(scep, sent.der)

    envelope = verified(answer, ca)
    text = printed(answer)
    assert attribute_value(text, PKI_STATUS) == "0"
    assert attribute_value(text, TRANSACTION_ID) == sent.transaction_id
    inner = ok(
        "cms", "-decrypt", "-inform", "DER", "-binary", "-recip", cert, "-inkey", key,
        input=envelope,
    )  # fmt: skip
    listed = ok("pkcs7", "-inform", "DER", "-print_certs", input=inner).decode()
    (issued,) = pem_blocks(listed)
    verdict = openssl_verify(workdir, issued, [scep.ca.public_bytes(PEM).decode()])
    assert "OK" in verdict, verdict
    subject = ok("x509", "-noout", "-subject", input=issued.encode()).decode()
    assert cn in subject


def test_openssl_reads_pending_and_failure(scep: Scep, api: httpx.Client, workdir: Path) -> None:
    client = new_client()
    ca, _, _ = files(workdir, scep, client)
    queued = profile(api, scep, auto_approve=False)
    _, queued_ra = split(ca_certificates(scep.http, queued))  # each profile has its own RA
    request = pki_message(client, queued_ra, csr_der(client, unique("q"), scep.challenge))
    pending = post(scep, request.der, queued)
    other = new_client()
    refused = post(scep, pki_message(other, scep.ra, csr_der(other, unique("w"), "wrong")).der)

    for answer, status in ((pending, "3"), (refused, "2")):
        # No pkcsPKIEnvelope, and nothing to give as detached content: it must verify as is.
        assert verified(answer, ca) == b""
        assert attribute_value(printed(answer), PKI_STATUS) == status
    assert attribute_value(printed(refused), FAIL_INFO) == "2"  # badRequest
