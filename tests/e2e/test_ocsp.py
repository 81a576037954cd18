"""OCSP responder (RFC 6960 / RFC 5019), checked with openssl ocsp, GnuTLS ocsptool, curl-like
GET requests and pkilint, on both storage backends; bad input gets OCSP error statuses."""

import base64
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.e2e.helpers import (
    API,
    cert_of,
    create_root,
    data,
    foreign_root,
    import_ca_file,
    issue,
    self_signed_ca,
    unique,
)
from tests.support import Server, admin_api_key, module_server, start_server, stop_server
from tests.tools import openssl, pkilint_findings, pkilint_ocsp_findings

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


@dataclass
class PKI:
    dir: Path
    ca: dict
    good: dict
    revoked: dict

    @property
    def ca_pem(self) -> Path:
        return self.dir / "ca.pem"

    def pem(self, name: str) -> Path:
        return self.dir / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(server: Server, tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("ocsp")
    with server.client() as api:
        ca = create_root(api, unique("OCSP Root"))
        good = issue(api, ca["id"], "good.ocsp.test")
        revoked = issue(api, ca["id"], "revoked.ocsp.test")
        body = {"reason": "keyCompromise"}
        data(api.post(f"{API}/certificates/{revoked['id']}/revoke", json=body))
        ca = data(api.get(f"{API}/cas/{ca['id']}"))
        good = data(api.get(f"{API}/certificates/{good['id']}"))
    made = PKI(folder, ca, good, revoked)
    made.ca_pem.write_text(ca["pem"])
    made.pem("good").write_text(good["pem"])
    made.pem("revoked").write_text(data_pem(server, revoked["id"]))
    return made


def data_pem(server: Server, cert_id: int) -> str:
    with server.client() as api:
        return str(data(api.get(f"{API}/certificates/{cert_id}"))["pem"])


def ask(server: Server, pki: PKI, *args: str) -> str:
    """`openssl ocsp` against the plain-HTTP listener; stdout and stderr together."""
    url, issuer = f"{server.http_url}/ocsp", str(pki.ca_pem)
    result = subprocess.run(
        ["openssl", "ocsp", "-url", url, "-issuer", issuer, "-CAfile", issuer, *args],
        capture_output=True,
        timeout=60,
    )
    return (result.stdout + result.stderr).decode()


@pytest.mark.parametrize("nonce", ["-nonce", "-no_nonce"])
def test_openssl_good_revoked_unknown(server: Server, pki: PKI, nonce: str) -> None:
    unknown = "0x" + secrets.token_hex(16)
    out = ask(server, pki, nonce, "-cert", str(pki.pem("good")), "-resp_text")
    assert "Response verify OK" in out, out
    assert f"{pki.pem('good')}: good" in out, out
    assert ("WARNING: no nonce in response" in out) is False, out
    out = ask(server, pki, nonce, "-cert", str(pki.pem("revoked")))
    assert "Response verify OK" in out, out
    assert f"{pki.pem('revoked')}: revoked" in out, out
    assert "Reason: keyCompromise" in out and "Revocation Time:" in out, out
    out = ask(server, pki, nonce, "-serial", unknown)
    assert "Response verify OK" in out, out
    assert f"{unknown}: unknown" in out, out


def test_several_certificates_in_one_request(server: Server, pki: PKI) -> None:
    unknown = "0x" + secrets.token_hex(12)
    for nonce in ("-nonce", "-no_nonce"):
        out = ask(
            server,
            pki,
            nonce,
            "-cert",
            str(pki.pem("good")),
            "-cert",
            str(pki.pem("revoked")),
            "-serial",
            unknown,
        )
        assert "Response verify OK" in out, out
        assert f"{pki.pem('good')}: good" in out, out
        assert f"{pki.pem('revoked')}: revoked" in out, out
        assert f"{unknown}: unknown" in out, out


def test_sha256_cert_ids(server: Server, pki: PKI) -> None:
    out = ask(server, pki, "-sha256", "-cert", str(pki.pem("revoked")), "-no_nonce")
    assert "Response verify OK" in out and ": revoked" in out, out
    out = ask(server, pki, "-sha256", "-nonce", "-cert", str(pki.pem("good")))
    assert "Response verify OK" in out and ": good" in out, out


def _request_der(pki: PKI, name: str, nonce: bool = False, algorithm: str = "-sha1") -> bytes:
    path = pki.dir / f"{name}-{secrets.token_hex(4)}.req"
    flag = "-nonce" if nonce else "-no_nonce"
    result = openssl(
        "ocsp",
        "-issuer",
        str(pki.ca_pem),
        algorithm,  # openssl wants the digest before -cert
        "-cert",
        str(pki.pem(name)),
        flag,
        "-reqout",
        str(path),
    )
    assert result.returncode == 0, result.stderr.decode()
    return path.read_bytes()


def _get(server: Server, der: bytes) -> httpx.Response:
    encoded = quote(base64.b64encode(der).decode(), safe="")
    return httpx.get(f"{server.http_url}/ocsp/{encoded}", timeout=30)


def _verify_response(pki: PKI, der: bytes, name: str) -> str:
    path = pki.dir / f"{name}-{secrets.token_hex(4)}.resp"
    path.write_bytes(der)
    result = openssl(
        "ocsp",
        "-respin",
        str(path),
        "-issuer",
        str(pki.ca_pem),
        "-cert",
        str(pki.pem(name)),
        "-CAfile",
        str(pki.ca_pem),
    )
    return (result.stdout + result.stderr).decode()


@pytest.mark.parametrize("name", ["good", "revoked"])
def test_get_with_cache_headers(server: Server, pki: PKI, name: str) -> None:
    response = _get(server, _request_der(pki, name))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ocsp-response"
    control = response.headers["cache-control"]
    assert "public" in control and "max-age=" in control, control
    max_age = int(control.split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 3600
    assert response.headers["etag"].startswith('"')
    assert "last-modified" in response.headers and "expires" in response.headers
    out = _verify_response(pki, response.content, name)
    assert "Response verify OK" in out and f": {name}" in out, out
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.next_update_utc is not None
    expires = parsed.next_update_utc.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert response.headers["expires"] == expires
    again = _get(server, _request_der(pki, name))
    assert again.headers["etag"] == response.headers["etag"]  # the same pre-signed response


def test_head_answers_as_get(server: Server, pki: PKI) -> None:
    """HEAD /ocsp/{request} answers as GET, without the body (RFC 9110 9.3.2); it was a 405."""
    der = _request_der(pki, "good")
    got = _get(server, der)
    encoded = quote(base64.b64encode(der).decode(), safe="")
    head = httpx.head(f"{server.http_url}/ocsp/{encoded}", timeout=30)
    assert head.status_code == 200 and head.content == b""
    for name in ("content-type", "content-length", "etag"):
        assert head.headers[name] == got.headers[name], name
    # max-age counts down to the answer's nextUpdate: the HEAD, sent after, may be a second on
    assert _max_age_apart(head.headers["cache-control"]) == _max_age_apart(
        got.headers["cache-control"]
    )
    assert _max_age(head.headers["cache-control"]) <= _max_age(got.headers["cache-control"])
    refused = httpx.head(f"{server.http_url}/ocsp", timeout=30)  # POST only
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"


def _max_age(cache_control: str) -> int:
    return int(cache_control.split("max-age=", 1)[1].split(",", 1)[0])


def _max_age_apart(cache_control: str) -> list[str]:
    """The directives but max-age's value."""
    return [d.strip() for d in cache_control.split(",") if not d.strip().startswith("max-age=")]


def _unknown_request(pki: PKI, nonce: bool = False) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *_issuer_hashes(pki), secrets.randbits(100), hashes.SHA1()
    )
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_unknown_is_good_for_a_minute_only(server: Server, pki: PKI) -> None:
    """RFC 5019 6.2 ties caching to nextUpdate: an "unknown" answer (a serial that may still
    be issued) says so for a minute, not the hour of good and revoked answers, in its
    nextUpdate and in its cache headers; with a nonce too."""
    response = _get(server, _unknown_request(pki))
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    assert parsed.next_update_utc is not None
    assert (parsed.next_update_utc - parsed.this_update_utc).total_seconds() <= 60
    max_age = int(response.headers["cache-control"].split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 60, response.headers
    with_nonce = httpx.post(
        f"{server.http_url}/ocsp", content=_unknown_request(pki, nonce=True), headers=OCSP_REQUEST
    )
    parsed = ocsp.load_der_ocsp_response(with_nonce.content)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    assert parsed.next_update_utc is not None
    assert (parsed.next_update_utc - parsed.this_update_utc).total_seconds() <= 60


def test_get_with_nonce_is_not_cacheable(server: Server, pki: PKI) -> None:
    response = _get(server, _request_der(pki, "good", nonce=True))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "etag" not in response.headers
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert any(isinstance(e.value, x509.OCSPNonce) for e in parsed.extensions)


def test_get_accepts_url_safe_base64_with_slashes(server: Server, pki: PKI) -> None:
    der = _request_der(pki, "good")
    raw = base64.b64encode(der).decode()
    # Plain (unencoded) base64 in the path, slashes and '+' as they are.
    response = httpx.get(f"{server.http_url}/ocsp/{raw}", timeout=30)
    assert ocsp.load_der_ocsp_response(response.content).certificate_status.name == "GOOD"
    urlsafe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    response = httpx.get(f"{server.http_url}/ocsp/{urlsafe}", timeout=30)
    assert ocsp.load_der_ocsp_response(response.content).certificate_status.name == "GOOD"


def test_delegated_signer(server: Server, pki: PKI) -> None:
    response = httpx.post(
        f"{server.http_url}/ocsp",
        content=_request_der(pki, "good"),
        headers=OCSP_REQUEST,
        timeout=30,
    )
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert len(parsed.certificates) == 1
    signer = parsed.certificates[0]
    ca = cert_of(pki.ca["pem"])
    assert signer.issuer == ca.subject
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    # No status pointers in a certificate whose status is not to be checked (RFC 6960
    # 4.2.2.2.1); BR 7.1.2.8 forbids the CRL distribution point in it.
    pointers = (x509.CRLDistributionPoints, x509.FreshestCRL, x509.AuthorityInformationAccess)
    assert not [e for e in signer.extensions if isinstance(e.value, pointers)], signer.extensions
    signer_pem = signer.public_bytes(serialization.Encoding.PEM).decode()
    assert pkilint_findings(pki.dir, signer_pem, "ocsp-signer.pem") == ""
    assert (
        parsed.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(
            signer.public_key()  # type: ignore[arg-type]
        ).digest
    )
    with server.client() as api:
        status = data(api.get(f"{API}/ocsp/status"))
    assert status["signer_mode"] == "delegated"
    mine = next(r for r in status["responders"] if r["ca_id"] == pki.ca["id"])
    assert mine["served"] is True
    assert mine["signer"]["serial_number"] == format(signer.serial_number, "X")
    assert mine["signer"]["valid"] is True


def test_ocsptool_ask(server: Server, pki: PKI) -> None:
    for name, expected in (("good", "good"), ("revoked", "revoked")):
        result = subprocess.run(
            [
                "ocsptool",
                f"--ask={server.http_url}/ocsp",
                "--load-issuer",
                str(pki.ca_pem),
                "--load-cert",
                str(pki.pem(name)),
                "--load-trust",
                str(pki.ca_pem),
                "--nonce",
            ],
            capture_output=True,
            timeout=60,
        )
        out = (result.stdout + result.stderr).decode()
        assert result.returncode == 0 or expected == "revoked", out
        assert f"Certificate Status: {expected}" in out, out
        assert "Verifying OCSP Response: Success" in out, out


@pytest.mark.parametrize("kind", ["good", "revoked", "unknown", "nonce"])
def test_pkilint_responses(server: Server, pki: PKI, kind: str) -> None:
    if kind == "unknown":
        der = _unknown_request(pki)
    else:
        der = _request_der(pki, "good" if kind == "nonce" else kind, nonce=kind == "nonce")
    response = httpx.post(f"{server.http_url}/ocsp", content=der, headers=OCSP_REQUEST)
    assert pkilint_ocsp_findings(pki.dir, response.content, f"{kind}.der") == ""


def _issuer_hashes(pki: PKI) -> tuple[bytes, bytes]:
    request = ocsp.load_der_ocsp_request(_request_der(pki, "good"))
    return request.issuer_name_hash, request.issuer_key_hash


def _status_of(response: httpx.Response) -> ocsp.OCSPResponseStatus:
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    return ocsp.load_der_ocsp_response(response.content).response_status


def test_bad_input(server: Server, pki: PKI, workdir: Path) -> None:
    url = f"{server.http_url}/ocsp"
    good = _request_der(pki, "good")
    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    unauthorized = ocsp.OCSPResponseStatus.UNAUTHORIZED
    for body in (b"", b"garbage", secrets.token_bytes(300), good[: len(good) // 2], good + b"x"):
        assert _status_of(httpx.post(url, content=body, headers=OCSP_REQUEST)) == malformed
    assert _status_of(httpx.get(f"{url}/not*base64!")) == malformed
    assert _status_of(httpx.get(f"{url}/")) == malformed
    # Oversized: refused from Content-Length before the body is read.
    big = httpx.post(url, content=b"\x30" * 100_000, headers=OCSP_REQUEST)
    assert big.status_code == 413
    assert httpx.get(f"{url}/{'A' * 20_000}").status_code in (413, 414, 431)
    assert httpx.put(url, content=good).status_code == 405
    # A CA that is not served here (made by openssl alone).
    foreign = foreign_root(workdir, "/CN=Foreign OCSP Root")
    result = openssl(
        "ocsp", "-issuer", str(foreign.cert_path), "-serial", "0x1234", "-no_nonce", "-reqout",
        str(workdir / "foreign.req"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    foreign_req = (workdir / "foreign.req").read_bytes()
    assert _status_of(httpx.post(url, content=foreign_req, headers=OCSP_REQUEST)) == unauthorized
    # Unsupported CertID hashes (our own CA, hashed with SHA3-256 or MD5): not answered for.
    for digest in ("-sha3-256", "-md5"):
        der = _request_der(pki, "good", algorithm=digest)
        assert _status_of(httpx.post(url, content=der, headers=OCSP_REQUEST)) == unauthorized
    name_hash, key_hash = _issuer_hashes(pki)
    # A nonce longer than RFC 9654 allows (128 octets; RFC 8954 allowed 32).
    long_nonce = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, 5, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"n" * 129), critical=False)
    )
    der = long_nonce.build().public_bytes(serialization.Encoding.DER)
    assert _status_of(httpx.post(url, content=der, headers=OCSP_REQUEST)) == malformed
    assert "Traceback" not in server.log()


def _with_extensions(der: bytes, request: list[dict], single: list[dict]) -> bytes:
    """The request re-built by asn1crypto with these request and singleRequest extensions."""
    tbs = asn1_ocsp.OCSPRequest.load(der)["tbs_request"]
    requests = [
        {"req_cert": one["req_cert"], "single_request_extensions": single or None}
        for one in tbs["request_list"]
    ]
    rebuilt = {"request_list": requests, "request_extensions": request or None}
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": rebuilt}).dump())


def _openssl_checks_nonce(server: Server, pki: PKI, der: bytes) -> str:
    """`openssl ocsp -reqin`: sends our request and checks the response's nonce against it."""
    path = pki.dir / f"nonce-{secrets.token_hex(4)}.req"
    path.write_bytes(der)
    url, issuer = f"{server.http_url}/ocsp", str(pki.ca_pem)
    result = openssl("ocsp", "-url", url, "-reqin", str(path), "-CAfile", issuer, "-resp_text")
    return (result.stdout + result.stderr).decode()


def test_nonces_up_to_128_octets_are_echoed(server: Server, pki: PKI) -> None:
    """RFC 9654 (which obsoletes RFC 8954) allows nonces of 1 to 128 octets: longer ones
    than 32 are echoed, for one certificate and for several, not refused as malformed."""
    good = _request_der(pki, "good")
    several = _request_for_serials(
        pki, int(pki.good["serial_number"], 16), int(pki.revoked["serial_number"], 16)
    )
    for length in (33, 64, 128):
        nonce = secrets.token_bytes(length)
        extension = {"extn_id": "nonce", "critical": False, "extn_value": nonce}
        for der in (good, several):
            out = _openssl_checks_nonce(server, pki, _with_extensions(der, [extension], []))
            assert "Response verify OK" in out, (length, out)
            assert "Nonce Verify error" not in out and "no nonce" not in out, (length, out)
            assert nonce.hex().upper()[:16] in out.replace(":", "").upper(), (length, out)


def _with_raw_nonce(der: bytes, raw: bytes) -> bytes:
    """The request with a nonce whose extnValue holds `raw` itself, not an OCTET STRING of
    it (RFC 2560's reading, still sent by a few clients). asn1crypto cannot build that, so
    an RFC nonce of the same encoded length is put in and its extnValue overwritten."""
    placeholder = secrets.token_bytes(len(raw) - 2)
    extension = {"extn_id": "nonce", "critical": False, "extn_value": placeholder}
    wrapped = b"\x04" + bytes([len(placeholder)]) + placeholder
    built = _with_extensions(der, [extension], [])
    assert built.count(wrapped) == 1
    return built.replace(wrapped, raw)


def _nonce_of(response: httpx.Response) -> bytes:
    assert _status_of(response) == ocsp.OCSPResponseStatus.SUCCESSFUL
    nonce = ocsp.load_der_ocsp_response(response.content).extensions.get_extension_for_class(
        x509.OCSPNonce
    )
    return nonce.value.nonce


def test_nonces_are_echoed_alike_for_one_and_several_certificates(server: Server, pki: PKI) -> None:
    """RFC 6960 4.4.1 / RFC 9654: the nonce is echoed. A nonce whose octets happen to read as
    an OCTET STRING is echoed as sent (it was unwrapped twice for several certificates, so
    openssl saw another nonce), and a raw nonce is answered for several certificates as for
    one (it was a malformedRequest)."""
    url = f"{server.http_url}/ocsp"
    one = _request_der(pki, "good")
    several = _request_for_serials(
        pki, int(pki.good["serial_number"], 16), int(pki.revoked["serial_number"], 16)
    )
    inner = secrets.token_bytes(16)
    looks_like_der = b"\x04" + bytes([len(inner)]) + inner
    extension = {"extn_id": "nonce", "critical": False, "extn_value": looks_like_der}
    raw = b"\x30\x81" + secrets.token_bytes(14)  # no OCTET STRING (nor valid DER at all)
    for der in (one, several):
        out = _openssl_checks_nonce(server, pki, _with_extensions(der, [extension], []))
        assert "Response verify OK" in out, out
        assert "Nonce Verify error" not in out and "no nonce" not in out, out
        asked = _with_raw_nonce(der, raw)
        assert _nonce_of(httpx.post(url, content=asked, headers=OCSP_REQUEST)) == raw
        assert _nonce_of(_get(server, asked)) == raw
    assert "Traceback" not in server.log()


def test_critical_extensions_not_understood_are_malformed(server: Server, pki: PKI) -> None:
    """RFC 6960 4.4 (after RFC 5280 4.2): an unrecognised extension is ignored unless it is
    critical; a critical one the responder does not understand, in the request or in one of
    its single requests, makes it a malformedRequest rather than an answer that ignores it."""
    url = f"{server.http_url}/ocsp"
    good = _request_der(pki, "good")
    several = _request_for_serials(
        pki, int(pki.good["serial_number"], 16), int(pki.revoked["serial_number"], 16)
    )

    def unknown(critical: bool) -> dict:
        return {"extn_id": "1.3.6.1.4.1.32473.9.9", "critical": critical, "extn_value": b"x"}

    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    successful = ocsp.OCSPResponseStatus.SUCCESSFUL
    nonce = {"extn_id": "nonce", "critical": True, "extn_value": secrets.token_bytes(16)}
    for der in (good, several):
        for request, single, expected in (
            ([unknown(True)], [], malformed),
            ([], [unknown(True)], malformed),
            ([unknown(False)], [unknown(False)], successful),
            ([nonce], [], successful),  # critical, but understood
        ):
            asked = _with_extensions(der, request, single)
            for answer in (
                httpx.post(url, content=asked, headers=OCSP_REQUEST),
                _get(server, asked),
            ):
                assert _status_of(answer) == expected, (request, single)
    assert "Traceback" not in server.log()


def _request_for_serials(pki: PKI, *serials: int) -> bytes:
    """A request naming our CA's certificates by serial, built by asn1crypto (cryptography
    refuses to build a negative serial)."""
    name_hash, key_hash = _issuer_hashes(pki)
    cert_ids = [
        asn1_ocsp.CertId(
            {
                "hash_algorithm": {"algorithm": "sha1"},
                "issuer_name_hash": name_hash,
                "issuer_key_hash": key_hash,
                "serial_number": serial,
            }
        )
        for serial in serials
    ]
    tbs = {"request_list": [{"req_cert": cert_id} for cert_id in cert_ids]}
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def test_negative_serial_is_a_malformed_request(server: Server, pki: PKI) -> None:
    """RFC 5280 4.1.2.2: a serial number is positive, so asking for a negative one is a
    malformedRequest (RFC 6960 2.3), not an internalError with a traceback in the log."""
    url = f"{server.http_url}/ocsp"
    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    good_serial = int(pki.good["serial_number"], 16)
    for serials in ((-1,), (-(2**71),), (good_serial, -1)):
        der = _request_for_serials(pki, *serials)
        assert _status_of(httpx.post(url, content=der, headers=OCSP_REQUEST)) == malformed
        assert _status_of(_get(server, der)) == malformed
    assert "Traceback" not in server.log()


def test_an_extension_twice_is_malformed_whatever_the_request_size(
    server: Server, pki: PKI
) -> None:
    """Two nonces (an extension appears once, RFC 5280 4.2 / RFC 6960 4.4) make any request
    malformed, not only one naming a single certificate: a request for several must not be
    answered with one of its nonces picked."""
    url = f"{server.http_url}/ocsp"
    malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    good_serial = int(pki.good["serial_number"], 16)
    revoked_serial = int(pki.revoked["serial_number"], 16)
    for serials in ((good_serial,), (good_serial, revoked_serial)):
        request = asn1_ocsp.OCSPRequest.load(_request_for_serials(pki, *serials))
        nonces = [
            {"extn_id": "nonce", "critical": False, "extn_value": value}
            for value in (b"first-nonce", b"second-nonce")
        ]
        tbs = asn1_ocsp.TBSRequest(
            {"request_list": request["tbs_request"]["request_list"], "request_extensions": nonces}
        )
        der = bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())
        assert _status_of(httpx.post(url, content=der, headers=OCSP_REQUEST)) == malformed
        assert _status_of(_get(server, der)) == malformed


def test_requests_the_responder_cannot_answer_are_answered_cleanly(
    server: Server, pki: PKI
) -> None:
    """Two nonces are a malformedRequest (RFC 5280 4.2: an extension appears once); a CA
    that cannot issue its responder certificate (it expired) is unauthorized; a CA whose
    name fills the responder's commonName gets its responder. No traceback in the log."""
    url = f"{server.http_url}/ocsp"
    name_hash, key_hash = _issuer_hashes(pki)
    cert_id = {
        "hash_algorithm": {"algorithm": "sha1"},
        "issuer_name_hash": name_hash,
        "issuer_key_hash": key_hash,
        "serial_number": int(pki.good["serial_number"], 16),
    }
    nonces = [{"extn_id": "nonce", "extn_value": secrets.token_bytes(16)} for _ in range(2)]
    tbs = {"request_list": [{"req_cert": cert_id}], "request_extensions": nonces}
    twice = bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())
    answer = httpx.post(url, content=twice, headers=OCSP_REQUEST)
    assert _status_of(answer) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    lifetime, started = -timedelta(days=1), timedelta(days=30)
    expired, key = self_signed_ca(unique("Expired OCSP CA"), lifetime, started)
    bundle = expired.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with server.client() as api:
        data(import_ca_file(api, bundle, "expired.pem"), 201)
        long_name = data(
            api.post(f"{API}/cas", json={"common_name": "Ж" * 30, "key_algorithm": "EC"}), 201
        )
        leaf = issue(api, long_name["id"], "under-a-long-name.example")
        long_name = data(api.get(f"{API}/cas/{long_name['id']}"))
    asked = ocsp.OCSPRequestBuilder().add_certificate(expired, expired, hashes.SHA1()).build()
    answer = httpx.post(
        url, content=asked.public_bytes(serialization.Encoding.DER), headers=OCSP_REQUEST
    )
    assert _status_of(answer) == ocsp.OCSPResponseStatus.UNAUTHORIZED
    asked = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(
            cert_of(data_pem(server, leaf["id"])), cert_of(long_name["pem"]), hashes.SHA1()
        )
        .build()
    )
    answer = httpx.post(
        url, content=asked.public_bytes(serialization.Encoding.DER), headers=OCSP_REQUEST
    )
    assert _status_of(answer) == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert "Traceback" not in server.log()


def test_stats(server: Server, pki: PKI) -> None:
    with server.client() as api:
        before = data(api.get(f"{API}/ocsp/stats"))
        ask(server, pki, "-no_nonce", "-cert", str(pki.pem("good")))
        after = data(api.get(f"{API}/ocsp/stats"))
    assert after["total_requests"] > before["total_requests"]
    assert after["good"] > before["good"]
    for field in ("revoked", "unknown", "malformed", "unauthorized", "cache_hits"):
        assert isinstance(after[field], int)


def test_management_needs_authentication(server: Server) -> None:
    with server.client(api_key="") as anonymous:
        assert anonymous.get(f"{API}/ocsp/status").status_code == 401
        assert anonymous.get(f"{API}/ocsp/stats").status_code == 401


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with module_server("postgresql", tmp_path_factory.mktemp("ocsp2") / "data", workers=2) as up:
        yield up


def _one_leaf(server: Server, tmp_path: Path, name: str) -> tuple[PKI, dict[str, Any], bytes]:
    """A new root with one leaf (written as `name`.pem) and a DER OCSP request for it."""
    with server.client() as api:
        ca = data(api.get(f"{API}/cas/{create_root(api, unique('OCSP Workers Root'))['id']}"))
        leaf = data(
            api.get(f"{API}/certificates/{issue(api, ca['id'], f'{name}.ocsp.test')['id']}")
        )
    pki = PKI(tmp_path, ca, leaf, leaf)
    pki.ca_pem.write_text(ca["pem"])
    pki.pem(name).write_text(leaf["pem"])
    return pki, leaf, _request_der(pki, name)


def _statuses(server: Server, request: bytes, count: int) -> set[str]:
    seen = set()
    for _ in range(count):  # a new connection each: the kernel spreads them over workers
        body = _post_raw(server.http_port, request)
        seen.add(ocsp.load_der_ocsp_response(body).certificate_status.name)
    return seen


def _wait_for_every_worker(server: Server, request: bytes, status: str) -> float:
    """Seconds until ten answers in a row say `status` (bounded at 30 s), then twenty must."""
    started = time.monotonic()
    while time.monotonic() < started + 30 and _statuses(server, request, 10) != {status}:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    assert _statuses(server, request, 20) == {status}
    return elapsed


def test_revocation_visible_across_workers(two_workers: Server, tmp_path: Path) -> None:
    """Both processes hold a pre-signed "good" response; a revocation replaces both."""
    server = two_workers
    _, leaf, request = _one_leaf(server, tmp_path, "good")
    assert _statuses(server, request, 20) == {"GOOD"}
    with server.client() as api:
        revoke = api.post(f"{API}/certificates/{leaf['id']}/revoke", json={"reason": "superseded"})
        data(revoke)
    elapsed = _wait_for_every_worker(server, request, "REVOKED")
    print(f"revocation visible over OCSP in every worker after {elapsed:.2f} s")


def test_deleted_certificate_is_no_longer_good_in_any_worker(
    two_workers: Server, tmp_path: Path
) -> None:
    """Both processes hold a pre-signed "good" response; deleting the (unrevoked)
    certificate from the inventory replaces both with `unknown` (RFC 6960 2.2: the CA no
    longer knows the serial), as a revocation does, instead of `good` until the cached
    response is re-signed half an hour later. `openssl ocsp` reads the answer before and
    after."""
    server = two_workers
    pki, leaf, request = _one_leaf(server, tmp_path, "deleted")
    assert _statuses(server, request, 20) == {"GOOD"}
    out = ask(server, pki, "-no_nonce", "-cert", str(pki.pem("deleted")))
    assert "Response verify OK" in out and f"{pki.pem('deleted')}: good" in out, out
    with server.client() as api:
        assert api.delete(f"{API}/certificates/{leaf['id']}").status_code == 204
    _wait_for_every_worker(server, request, "UNKNOWN")
    out = ask(server, pki, "-no_nonce", "-cert", str(pki.pem("deleted")))
    assert "Response verify OK" in out and f"{pki.pem('deleted')}: unknown" in out, out


def _post_raw(port: int, der: bytes) -> bytes:
    """POST /ocsp over a fresh plain socket: cheap enough to poll with (httpx builds a TLS
    context per call), so the printed delay is the server's, not the client's."""
    head = b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += b"Content-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n" % len(der)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + der)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert b" 200 " in status_line, response[:300]
    return rest.partition(b"\r\n\r\n")[2]


def test_hold_and_release(server: Server, pki: PKI) -> None:
    """certificateHold shows as revoked with its reason; removeFromCRL makes it good again."""
    with server.client() as api:
        held = issue(api, pki.ca["id"], "held.ocsp.test")
        pki.pem("held").write_text(data_pem(server, held["id"]))
        assert ": good" in ask(server, pki, "-no_nonce", "-cert", str(pki.pem("held")))
        hold = {"reason": "certificateHold"}
        data(api.post(f"{API}/certificates/{held['id']}/revoke", json=hold))
        out = _until(
            lambda: ask(server, pki, "-no_nonce", "-cert", str(pki.pem("held"))), "revoked"
        )
        assert "Reason: certificateHold" in out and "Response verify OK" in out, out
        release = {"reason": "removeFromCRL"}
        data(api.post(f"{API}/certificates/{held['id']}/revoke", json=release))
        out = _until(lambda: ask(server, pki, "-no_nonce", "-cert", str(pki.pem("held"))), "good")
        assert "Response verify OK" in out, out


def test_a_hold_becomes_a_permanent_revocation_without_a_good_window(
    server: Server, pki: PKI
) -> None:
    """A held certificate whose key turns out compromised is revoked for good directly: it
    stays revoked throughout (releasing the hold first would answer `good` meanwhile), keeps
    the date it has been unusable since, and takes the new reason (RFC 5280 5.3.1)."""
    with server.client() as api:
        held = issue(api, pki.ca["id"], "held-then-compromised.ocsp.test")
        pki.pem("held-kc").write_text(data_pem(server, held["id"]))
        path = f"{API}/certificates/{held['id']}/revoke"
        on_hold = data(api.post(path, json={"reason": "certificateHold"}))
        out = _until(
            lambda: ask(server, pki, "-no_nonce", "-cert", str(pki.pem("held-kc"))), "revoked"
        )
        assert "Reason: certificateHold" in out, out
        final = data(api.post(path, json={"reason": "keyCompromise"}))
        assert final["status"] == "revoked" and final["revocation_reason"] == "keyCompromise"
        assert final["revoked_at"] == on_hold["revoked_at"], final
        again = api.post(path, json={"reason": "superseded"})
        assert again.status_code == 409, again.text  # a permanent revocation is final
    deadline = time.monotonic() + 30
    out = ask(server, pki, "-no_nonce", "-cert", str(pki.pem("held-kc")))
    while "Reason: keyCompromise" not in out and time.monotonic() < deadline:
        time.sleep(0.1)
        out = ask(server, pki, "-no_nonce", "-cert", str(pki.pem("held-kc")))
    assert ": revoked" in out and "Reason: keyCompromise" in out, out
    assert "Response verify OK" in out, out


def test_a_disabled_ca_still_answers_for_what_it_issued(server: Server, tmp_path: Path) -> None:
    """Disabling a CA stops issuance, not the status of what it issued: its responder (made
    after the CA was disabled) answers good and revoked, as its CRLs keep listing them,
    rather than `unauthorized`, which a soft-failing client takes for good."""
    with server.client() as api:
        root = create_root(api, unique("Disabled OCSP Root"))
        kept, dropped = (issue(api, root["id"], f"{n}.disabled.ocsp.test") for n in "ab")
        data(api.patch(f"{API}/cas/{root['id']}", json={"is_active": False}))
        data(api.post(f"{API}/certificates/{dropped['id']}/revoke", json={"reason": "superseded"}))
        status = data(api.get(f"{API}/ocsp/status"))
        root = data(api.get(f"{API}/cas/{root['id']}"))  # with its PEM
    made = PKI(tmp_path, root, kept, dropped)
    made.ca_pem.write_text(root["pem"])
    made.pem("kept").write_text(data_pem(server, kept["id"]))
    made.pem("dropped").write_text(data_pem(server, dropped["id"]))
    out = ask(server, made, "-nonce", "-cert", str(made.pem("kept")))
    assert f"{made.pem('kept')}: good" in out and "Response verify OK" in out, out
    out = _until(lambda: ask(server, made, "-nonce", "-cert", str(made.pem("dropped"))), "revoked")
    assert "Reason: superseded" in out and "Response verify OK" in out, out
    (served,) = [r["served"] for r in status["responders"] if r["ca_id"] == root["id"]]
    assert served is True


def test_deleted_revoked_certificate_stays_revoked(server: Server, pki: PKI) -> None:
    """Deleting a revoked, unexpired certificate keeps its CRL entry; OCSP agrees with it."""
    with server.client() as api:
        gone = issue(api, pki.ca["id"], "deleted.ocsp.test")
        pki.pem("deleted").write_text(data_pem(server, gone["id"]))
        body = {"reason": "superseded"}
        data(api.post(f"{API}/certificates/{gone['id']}/revoke", json=body))
        assert api.delete(f"{API}/certificates/{gone['id']}").status_code in (200, 204)
    out = ask(server, pki, "-nonce", "-cert", str(pki.pem("deleted")))
    assert f"{pki.pem('deleted')}: revoked" in out and "Reason: superseded" in out, out
    assert "Response verify OK" in out, out


def _until(query: Callable[[], str], status: str) -> str:
    deadline = time.monotonic() + 30
    out = query()
    while f": {status}" not in out and time.monotonic() < deadline:
        time.sleep(0.1)
        out = query()
    assert f": {status}" in out, out
    return out


def test_signed_by_the_ca_itself(tmp_path_factory: pytest.TempPathFactory) -> None:
    """TESSERA_OCSP_SIGNER=ca: no delegated certificate, the CA key signs (SQLite only)."""
    folder = tmp_path_factory.mktemp("ocsp-ca")
    server = start_server(folder / "data", None, env={"TESSERA_OCSP_SIGNER": "ca"})
    try:
        server.api_key = admin_api_key(server)
        with server.client() as api:
            ca = data(api.get(f"{API}/cas/{create_root(api, unique('OCSP CA-signed'))['id']}"))
            leaf = data(api.get(f"{API}/certificates/{issue(api, ca['id'], 'c.ocsp.test')['id']}"))
            status = data(api.get(f"{API}/ocsp/status"))
        assert status["signer_mode"] == "ca"
        pki = PKI(folder, ca, leaf, leaf)
        pki.ca_pem.write_text(ca["pem"])
        pki.pem("good").write_text(leaf["pem"])
        for nonce in ("-nonce", "-no_nonce"):
            out = ask(server, pki, nonce, "-cert", str(pki.pem("good")))
            assert "Response verify OK" in out and ": good" in out, out
        parsed = ocsp.load_der_ocsp_response(_post_raw(server.http_port, _request_der(pki, "good")))
        assert parsed.certificates == []
        ca_key = cert_of(ca["pem"]).public_key()
        assert (
            parsed.responder_key_hash
            == x509.SubjectKeyIdentifier.from_public_key(
                ca_key  # type: ignore[arg-type]
            ).digest
        )
    finally:
        stop_server(server)


def test_over_https(server: Server, pki: PKI) -> None:
    """The HTTPS listener serves the same responder, behind the application middleware."""
    with server.client(api_key="") as client:
        response = client.post("/ocsp", content=_request_der(pki, "revoked"), headers=OCSP_REQUEST)
        assert response.status_code == 200, response.text
        parsed = ocsp.load_der_ocsp_response(response.content)
        assert parsed.certificate_status == ocsp.OCSPCertStatus.REVOKED
        der = _request_der(pki, "good")
        encoded = quote(base64.b64encode(der).decode(), safe="")
        response = client.get(f"/ocsp/{encoded}")
        assert ocsp.load_der_ocsp_response(response.content).certificate_status.name == "GOOD"
        assert "max-age=" in response.headers["cache-control"]
        assert client.post("/ocsp", content=b"junk").content == _status_only(1)


def _status_only(status: int) -> bytes:
    """An unsigned OCSPResponse carrying only a responseStatus (RFC 6960 4.2.1)."""
    return bytes([0x30, 0x03, 0x0A, 0x01, status])


def test_the_servers_own_certificate(server: Server, tmp_path: Path) -> None:
    """The internal CA signs nothing else, but its delegated responder is the server's own."""
    chain = (server.data_dir / "tls" / "server.pem").read_text()
    end = "-----END CERTIFICATE-----\n"
    leaf, internal = (block + end for block in chain.split(end)[:2])
    (tmp_path / "leaf.pem").write_text(leaf)
    (tmp_path / "internal.pem").write_text(internal)
    issuer, cert = str(tmp_path / "internal.pem"), str(tmp_path / "leaf.pem")
    url = f"{server.http_url}/ocsp"
    result = subprocess.run(
        ["openssl", "ocsp", "-url", url, "-issuer", issuer, "-CAfile", issuer, "-cert", cert],
        capture_output=True,
        timeout=60,
    )
    out = (result.stdout + result.stderr).decode()
    assert "Response verify OK" in out and ": good" in out, out
