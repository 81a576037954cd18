"""CRLs end to end: a real `tessera serve`, certificates revoked through the API, and the CRLs
fetched from the distribution points by openssl (through the CDP URL in the certificate),
GnuTLS certtool and pkilint; delta CRLs applied by openssl; the management API."""

import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests.e2e.accounts_helpers import audit_rows, create_user, key_for
from tests.e2e.helpers import (
    API,
    create_intermediate,
    create_root,
    data,
    error,
    foreign_root,
    import_ca_file,
    issue,
    unique,
)
from tests.support import Server, admin_api_key, database, module_server, start_server, stop_server
from tests.tools import openssl, pkilint_crl_findings

BACKENDS = ["sqlite", "postgresql"]
WAIT = 90.0  # seconds to wait for a CRL to reflect a revocation (a bound, not a target)
# Revocations are batched per CA for this long; long enough that a test's burst of
# revocations shows the batching even on a busy machine.
DEBOUNCE = "2"


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {"TESSERA_CRL_DEBOUNCE_SECONDS": DEBOUNCE}
    with module_server(request.param, tmp_path_factory.mktemp("crl") / "data", env) as running:
        yield running


@pytest.fixture(scope="module")
def hierarchy(server: Server) -> dict[str, Any]:
    """A root and an issuing intermediate, with their PEMs."""
    with server.client() as api:
        root = create_root(api, unique("CRL Root"))
        inter = create_intermediate(api, root["id"], unique("CRL Issuing CA"))
        for ca in (root, inter):
            ca["pem"] = data(api.get(f"{API}/cas/{ca['id']}"))["pem"]
    return {"root": root, "inter": inter}


# Helpers ---------------------------------------------------------------------------------


def fetch(server: Server, reference: object, kind: str = "full") -> httpx.Response:
    suffix = "-delta.crl" if kind == "delta" else ".crl"
    return httpx.get(f"{server.http_url}/cdp/{reference}{suffix}", timeout=30)


def wait_for_crl(
    server: Server,
    reference: object,
    ready: Callable[[x509.CertificateRevocationList], bool],
    kind: str = "full",
) -> tuple[bytes, x509.CertificateRevocationList]:
    deadline = time.monotonic() + WAIT
    while True:
        response = fetch(server, reference, kind)
        if response.status_code == 200:
            crl = x509.load_der_x509_crl(response.content)
            if ready(crl):
                return response.content, crl
        else:
            assert response.status_code == 503, response.text  # the first CRL is on its way
        assert time.monotonic() < deadline, f"no {kind} CRL of {reference} became ready"
        time.sleep(0.3)


def listed(serial_hex: str) -> Callable[[x509.CertificateRevocationList], bool]:
    serial = int(serial_hex.removeprefix("0x"), 16)
    return lambda crl: crl.get_revoked_certificate_by_serial_number(serial) is not None


def not_listed(serial_hex: str) -> Callable[[x509.CertificateRevocationList], bool]:
    serial = int(serial_hex.removeprefix("0x"), 16)
    return lambda crl: crl.get_revoked_certificate_by_serial_number(serial) is None


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def entry_reason(crl: x509.CertificateRevocationList, serial_hex: str) -> x509.ReasonFlags | None:
    entry = crl.get_revoked_certificate_by_serial_number(int(serial_hex.removeprefix("0x"), 16))
    assert entry is not None
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def revoke(api: httpx.Client, cert: dict[str, Any], reason: str) -> None:
    data(api.post(f"{API}/certificates/{cert['id']}/revoke", json={"reason": reason}))


def leaf(api: httpx.Client, ca_id: int, workdir: Path, name: str) -> dict[str, Any]:
    cert = issue(api, ca_id, f"{name}.example.com")
    cert["pem"] = data(api.get(f"{API}/certificates/{cert['id']}"))["pem"]
    cert["path"] = workdir / f"{name}.pem"
    cert["path"].write_text(cert["pem"])
    return cert


def files(workdir: Path, hierarchy: dict[str, Any]) -> tuple[Path, Path]:
    root, inter = workdir / "root.pem", workdir / "inter.pem"
    root.write_text(hierarchy["root"]["pem"])
    inter.write_text(hierarchy["inter"]["pem"])
    return root, inter


def verify(*args: str) -> tuple[int, str]:
    result = openssl("verify", *args)
    return result.returncode, (result.stdout + result.stderr).decode()


def pem_file(workdir: Path, name: str, der: bytes) -> Path:
    """openssl verify -CRLfile reads PEM."""
    path = workdir / f"{name}.pem"
    converted = openssl("crl", "-inform", "DER", "-out", str(path), input=der)
    assert converted.returncode == 0, converted.stderr.decode()
    return path


# Relying parties -------------------------------------------------------------------------


def test_openssl_downloads_the_crl_from_the_certificate(
    server: Server, hierarchy: dict[str, Any], workdir: Path
) -> None:
    inter = hierarchy["inter"]
    with server.client() as api:
        good = leaf(api, inter["id"], workdir, "crl-good")
        bad = leaf(api, inter["id"], workdir, "crl-bad")
        revoke(api, bad, "keyCompromise")
    cert = x509.load_pem_x509_certificate(good["pem"].encode())
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = points[0].full_name[0].value
    assert url == f"{server.http_url}/cdp/{inter['refid']}.crl"
    freshest = cert.extensions.get_extension_for_class(x509.FreshestCRL).value
    delta_url = freshest[0].full_name[0].value
    assert delta_url == f"{server.http_url}/cdp/{inter['refid']}-delta.crl"
    _, crl = wait_for_crl(server, inter["refid"], listed(bad["serial_number"]))
    assert entry_reason(crl, bad["serial_number"]) == x509.ReasonFlags.key_compromise
    root, chain = files(workdir, hierarchy)
    common = ["-crl_check", "-crl_download", "-CAfile", str(root), "-untrusted", str(chain)]
    status, text = verify(*common, str(bad["path"]))
    assert status != 0 and "certificate revoked" in text, text
    status, text = verify(*common, str(good["path"]))
    assert status == 0 and "OK" in text, text
    # The whole chain: the intermediate's status from the root's CRL (the trust anchor has
    # no CDP of its own, so that CRL is handed over as a file).
    root_der, _ = wait_for_crl(server, hierarchy["root"]["refid"], lambda crl: True)
    root_crl = pem_file(workdir, "root-crl", root_der)
    status, text = verify(*common, "-crl_check_all", "-CRLfile", str(root_crl), str(good["path"]))
    assert status == 0 and "OK" in text, text


def test_certtool_verifies_the_crl_and_refuses_the_revoked_certificate(
    server: Server, hierarchy: dict[str, Any], workdir: Path
) -> None:
    inter = hierarchy["inter"]
    with server.client() as api:
        good = leaf(api, inter["id"], workdir, "gnutls-good")
        bad = leaf(api, inter["id"], workdir, "gnutls-bad")
        revoke(api, bad, "superseded")
    wait_for_crl(server, inter["refid"], listed(bad["serial_number"]))
    pem = httpx.get(f"{server.http_url}/cdp/{inter['refid']}.pem", timeout=30)
    assert pem.status_code == 200 and pem.text.startswith("-----BEGIN X509 CRL-----")
    crl_file = workdir / "crl.pem"
    crl_file.write_text(pem.text)
    root, chain = files(workdir, hierarchy)
    checked = certtool("--verify-crl", "--load-ca-certificate", str(chain), "--infile", crl_file)
    assert checked.returncode == 0 and "Verified" in checked.stdout, checked.stdout
    wrong = certtool("--verify-crl", "--load-ca-certificate", str(root), "--infile", crl_file)
    assert wrong.returncode != 0, wrong.stdout
    for cert, expected_ok in ((good, True), (bad, False)):
        bundle = workdir / "bundle.pem"
        bundle.write_text(cert["pem"] + hierarchy["inter"]["pem"])
        result = certtool(
            "--verify",
            "--load-ca-certificate",
            str(root),
            "--load-crl",
            str(crl_file),
            "--infile",
            bundle,
        )
        assert (result.returncode == 0) is expected_ok, result.stdout
        if not expected_ok:
            assert "revoked" in result.stdout.lower(), result.stdout


def certtool(*args: object) -> subprocess.CompletedProcess[str]:
    command = ["certtool", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_delta_crls_with_openssl_and_pkilint(
    server: Server, hierarchy: dict[str, Any], workdir: Path
) -> None:
    inter = hierarchy["inter"]
    with server.client() as api:
        held = leaf(api, inter["id"], workdir, "delta-held")
        late = leaf(api, inter["id"], workdir, "delta-late")
        good = leaf(api, inter["id"], workdir, "delta-good")
        revoke(api, held, "certificateHold")
        base_der, base = wait_for_crl(server, inter["refid"], listed(held["serial_number"]))
        assert entry_reason(base, held["serial_number"]) == x509.ReasonFlags.certificate_hold
        # After the base was fetched: one more revocation and the hold released.
        revoke(api, late, "cessationOfOperation")
        revoke(api, held, "removeFromCRL")

    def complete(crl: x509.CertificateRevocationList) -> bool:
        return listed(late["serial_number"])(crl) and listed(held["serial_number"])(crl)

    delta_der, delta = wait_for_crl(server, inter["refid"], complete, kind="delta")
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number <= number(base) < number(delta)
    assert entry_reason(delta, held["serial_number"]) == x509.ReasonFlags.remove_from_crl
    assert entry_reason(delta, late["serial_number"]) == x509.ReasonFlags.cessation_of_operation
    full_der, full = wait_for_crl(server, inter["refid"], not_listed(held["serial_number"]))
    assert full.extensions.get_extension_for_oid(ExtensionOID.FRESHEST_CRL)
    root, chain = files(workdir, hierarchy)
    base_file, delta_file = pem_file(workdir, "base", base_der), pem_file(workdir, "d", delta_der)
    common = ["-crl_check", "-CAfile", str(root), "-untrusted", str(chain)]
    with_delta = [*common, "-use_deltas", "-CRLfile", str(base_file), "-CRLfile", str(delta_file)]
    status, text = verify(*with_delta, str(late["path"]))
    assert status != 0 and "certificate revoked" in text, text  # listed in the delta only
    status, text = verify(*with_delta, str(held["path"]))
    assert status == 0, text  # on hold in the base, released by the delta
    status, text = verify(*with_delta, str(good["path"]))
    assert status == 0, text
    status, text = verify(*common, "-CRLfile", str(base_file), str(held["path"]))
    assert status != 0 and "certificate revoked" in text, text  # the base alone: still held
    for name, der in (("full.crl", full_der), ("delta.crl", delta_der), ("base.crl", base_der)):
        assert pkilint_crl_findings(workdir, der, name) == "", name


def test_root_crl_and_key_types_lint_clean(server: Server, workdir: Path) -> None:
    with server.client() as api:
        for algorithm, size in (("RSA", 2048), ("EC", 384), ("Ed25519", None)):
            root = create_root(api, unique(f"Lint {algorithm}"), algorithm, size)
            cert = issue(api, root["id"], f"lint-{algorithm.lower()}.example.com")
            revoke(api, cert, "affiliationChanged")
            der, crl = wait_for_crl(server, root["id"], listed(cert["serial_number"]))
            ca = x509.load_pem_x509_certificate(
                data(api.get(f"{API}/cas/{root['id']}"))["pem"].encode()
            )
            assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
            aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            assert aki.key_identifier == ski.digest
            assert pkilint_crl_findings(workdir, der, f"{algorithm}.crl") == "", algorithm
            delta = fetch(server, root["refid"], "delta")
            assert delta.status_code == 200
            assert pkilint_crl_findings(workdir, delta.content, f"{algorithm}-d.crl") == ""


# Publication -----------------------------------------------------------------------------


def test_a_burst_of_revocations_makes_few_crls(server: Server) -> None:
    with server.client() as api:
        root = create_root(api, unique("Burst Root"))
        certs = [issue(api, root["id"], f"burst-{i}.example.com") for i in range(24)]
        _, first = wait_for_crl(server, root["id"], lambda crl: True)
        before = number(first)

        def revoke_one(cert: dict[str, Any]) -> None:
            with server.client() as client:
                revoke(client, cert, "superseded")

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(revoke_one, certs))
    _, crl = wait_for_crl(server, root["id"], lambda c: len(c) == len(certs))
    # Every CRL takes two numbers (full and delta); 24 revocations made far fewer CRLs.
    regenerations = (number(crl) - before) / 2
    assert 1 <= regenerations <= len(certs) / 3, (before, number(crl))


def test_crl_numbers_only_increase(server: Server) -> None:
    with server.client() as api:
        root = create_root(api, unique("Numbers Root"))
        wait_for_crl(server, root["id"], lambda crl: True)
        seen = []
        for _ in range(3):
            regenerated = data(api.post(f"{API}/crl/{root['id']}/regenerate"))
            seen.append(regenerated["crl_number"])
            assert regenerated["delta"]["crl_number"] == regenerated["crl_number"] + 1
        assert seen == sorted(seen) and len(set(seen)) == 3
        _, crl = wait_for_crl(server, root["refid"], lambda c: number(c) >= seen[-1])
        assert number(crl) == seen[-1]  # the newest is served at once (same process)


def test_deleting_a_revoked_certificate_keeps_its_crl_entry(server: Server) -> None:
    with server.client() as api:
        root = create_root(api, unique("Delete Root"))
        cert = issue(api, root["id"], "deleted-but-revoked.example.com")
        revoke(api, cert, "keyCompromise")
        wait_for_crl(server, root["id"], listed(cert["serial_number"]))
        assert api.delete(f"{API}/certificates/{cert['id']}").status_code == 204
        regenerated = data(api.post(f"{API}/crl/{root['id']}/regenerate"))
        assert regenerated["revoked_count"] == 1
    _, crl = wait_for_crl(server, root["id"], lambda c: number(c) >= regenerated["crl_number"])
    assert entry_reason(crl, cert["serial_number"]) == x509.ReasonFlags.key_compromise


def test_deleting_an_unrevoked_certificate_lists_it_on_no_crl(server: Server) -> None:
    """A deletion is logged as a status change (OCSP must stop saying good), but a
    certificate that was never revoked is on no CRL: the delta must not list it with
    removeFromCRL. A released hold deleted afterwards still is (the base may list the hold)."""
    with server.client() as api:
        root = create_root(api, unique("Tidy Root"))
        tidied, held, marker = (issue(api, root["id"], f"{n}.tidy.example") for n in "abc")
        revoke(api, held, "certificateHold")
        wait_for_crl(server, root["id"], listed(held["serial_number"]))
        revoke(api, held, "removeFromCRL")
        for cert in (tidied, held):
            assert api.delete(f"{API}/certificates/{cert['id']}").status_code == 204
        revoke(api, marker, "superseded")  # published after the deletions were logged
    _, delta = wait_for_crl(server, root["id"], listed(marker["serial_number"]), "delta")
    assert not_listed(tidied["serial_number"])(delta)
    assert entry_reason(delta, held["serial_number"]) == x509.ReasonFlags.remove_from_crl


def test_a_held_certificate_is_revoked_for_good_without_leaving_the_crls(server: Server) -> None:
    """certificateHold, then keyCompromise: every full and delta CRL lists the certificate,
    first on hold, then with the new reason and the date of the hold."""
    with server.client() as api:
        root = create_root(api, unique("Hold Root"))
        cert = issue(api, root["id"], "held-for-good.example.com")
        serial = int(cert["serial_number"].removeprefix("0x"), 16)
        revoke(api, cert, "certificateHold")
        _, held = wait_for_crl(server, root["id"], listed(cert["serial_number"]))
        assert entry_reason(held, cert["serial_number"]) == x509.ReasonFlags.certificate_hold
        revoke(api, cert, "keyCompromise")

    def compromised(crl: x509.CertificateRevocationList) -> bool:
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        return entry is not None and entry_reason(crl, cert["serial_number"]) == (
            x509.ReasonFlags.key_compromise
        )

    for kind in ("full", "delta"):
        _, crl = wait_for_crl(server, root["id"], compromised, kind)
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        before = held.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None and before is not None
        assert entry.revocation_date_utc == before.revocation_date_utc


def invalidity_date(crl: x509.CertificateRevocationList, serial_hex: str) -> datetime | None:
    entry = crl.get_revoked_certificate_by_serial_number(int(serial_hex.removeprefix("0x"), 16))
    assert entry is not None
    try:
        return entry.extensions.get_extension_for_class(
            x509.InvalidityDate
        ).value.invalidity_date_utc
    except x509.ExtensionNotFound:
        return None


def test_invalidity_dates_are_listed_in_full_and_delta_crls(server: Server, workdir: Path) -> None:
    # Given with a zone other than UTC and with microseconds: CRLs carry it in UTC, to the second.
    given = datetime.now(timezone(timedelta(hours=2))) - timedelta(days=2)
    expected = given.astimezone(UTC).replace(microsecond=0)
    with server.client() as api:
        root = create_root(api, unique("Invalidity Root"))
        cert = issue(api, root["id"], "invalid-since.example.com")
        plain = issue(api, root["id"], "no-invalidity.example.com")
        body = {"reason": "keyCompromise", "invalidity_date": given.isoformat()}
        revoked = data(api.post(f"{API}/certificates/{cert['id']}/revoke", json=body))
        assert revoked["invalidity_date"] == expected.replace(tzinfo=None).isoformat() + "Z"
        revoke(api, plain, "superseded")
        shown = data(api.get(f"{API}/certificates/{cert['id']}"))
        assert shown["invalidity_date"] == revoked["invalidity_date"]
        both = [listed(cert["serial_number"]), listed(plain["serial_number"])]

        def complete(crl: x509.CertificateRevocationList) -> bool:
            return all(ready(crl) for ready in both)

        der, crl = wait_for_crl(server, root["id"], complete)
        assert invalidity_date(crl, cert["serial_number"]) == expected
        assert invalidity_date(crl, plain["serial_number"]) is None
        assert entry_reason(crl, cert["serial_number"]) == x509.ReasonFlags.key_compromise
        delta_der, delta = wait_for_crl(server, root["id"], complete, kind="delta")
        assert invalidity_date(delta, cert["serial_number"]) == expected
        assert pkilint_crl_findings(workdir, der, "invalidity.crl") == ""
        assert pkilint_crl_findings(workdir, delta_der, "invalidity-d.crl") == ""
        text = openssl("crl", "-inform", "DER", "-noout", "-text", input=der)
        assert text.returncode == 0, text.stderr.decode()
        assert "Invalidity Date" in text.stdout.decode()
        # A deleted revoked certificate keeps its entry, invalidity date included.
        assert api.delete(f"{API}/certificates/{cert['id']}").status_code == 204
        regenerated = data(api.post(f"{API}/crl/{root['id']}/regenerate"))
    _, crl = wait_for_crl(server, root["id"], lambda c: number(c) >= regenerated["crl_number"])
    assert invalidity_date(crl, cert["serial_number"]) == expected


def test_an_invalidity_date_in_the_future_is_refused(server: Server) -> None:
    with server.client() as api:
        root = create_root(api, unique("Future Invalidity Root"))
        cert = issue(api, root["id"], "future-invalidity.example.com")
        url = f"{API}/certificates/{cert['id']}/revoke"
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        message = error(api.post(url, json={"invalidity_date": future}), 400)
        assert "invalidity_date" in message and "future" in message
        error(api.post(url, json={"invalidity_date": "yesterday"}), 422)
        shown = data(api.get(f"{API}/certificates/{cert['id']}"))
        assert shown["status"] == "active" and shown["invalidity_date"] is None


# The distribution points -----------------------------------------------------------------


def test_served_by_id_and_refid_on_both_listeners(
    server: Server, hierarchy: dict[str, Any]
) -> None:
    inter = hierarchy["inter"]
    wait_for_crl(server, inter["id"], lambda crl: True)
    by_id = fetch(server, inter["id"])
    by_refid = fetch(server, inter["refid"])
    assert by_id.headers["content-type"] == "application/pkix-crl"
    assert by_id.content == by_refid.content or number(
        x509.load_der_x509_crl(by_refid.content)
    ) >= number(x509.load_der_x509_crl(by_id.content))
    with server.client(api_key="") as anonymous:
        over_tls = anonymous.get(f"/cdp/{inter['refid']}.crl")
        assert over_tls.status_code == 200
        assert over_tls.headers["content-type"] == "application/pkix-crl"
        delta = anonymous.get(f"/cdp/{inter['id']}-delta.crl")
        assert delta.status_code == 200
        assert x509.load_der_x509_crl(delta.content).extensions.get_extension_for_class(
            x509.DeltaCRLIndicator
        )
    etag = by_refid.headers["etag"]
    again = httpx.get(
        f"{server.http_url}/cdp/{inter['refid']}.crl", headers={"If-None-Match": etag}
    )
    assert again.status_code in (200, 304)  # 200 only if a newer CRL appeared meanwhile
    assert "max-age" in by_refid.headers["cache-control"]


def test_if_none_match_compares_lists_and_weak_tags(server: Server) -> None:
    """RFC 9110 13.1.2: If-None-Match holds "*" or a list of entity tags, compared weakly;
    a cache revalidating with either form gets 304 for the CRL it holds, not the CRL again."""
    with server.client() as api:
        root = create_root(api, unique("Revalidated Root"))
    wait_for_crl(server, root["id"], lambda crl: True)
    url = f"{server.http_url}/cdp/{root['refid']}.crl"
    etag = httpx.get(url).headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', f'W/"other",W/{etag}', "*"):
        answer = httpx.get(url, headers={"If-None-Match": header})
        assert answer.status_code == 304, header
        assert answer.headers["etag"] == etag and not answer.content
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize(
    "reference",
    [
        "999999",
        "0",
        "-1",
        "2147483648",
        "99999999999999999999999",
        "no-such-ca",
        "00000000-0000-0000-0000-000000000000",
        "x" * 2000,
        "%E2%98%83",
        "..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_unknown_ca_references_are_404(server: Server, reference: str) -> None:
    for suffix in (".crl", ".pem", "-delta.crl", "-delta.pem"):
        response = httpx.get(f"{server.http_url}/cdp/{reference}{suffix}", timeout=30)
        assert response.status_code == 404, (suffix, response.text)
        assert "Traceback" not in response.text


def test_other_paths_under_cdp_are_404(server: Server) -> None:
    for path in ("/cdp/", "/cdp/1", "/cdp/1.der", "/cdp/1/2.crl", "/cdp/.crl"):
        response = httpx.get(f"{server.http_url}{path}", timeout=30)
        assert response.status_code in (404, 405), (path, response.status_code)


def test_a_disabled_ca_keeps_publishing_its_crls(server: Server) -> None:
    """Disabling a CA stops issuance, not revocation: a certificate it issued and that is
    revoked afterwards is listed (the API accepted the revocation), and the CRL is renewed
    before its nextUpdate like any other (RFC 5280 5.1.2.5)."""
    with server.client() as api:
        root = create_root(api, unique("Disabled Root"))
        cert = issue(api, root["id"], "revoked-after-disable.example.com")
        wait_for_crl(server, root["id"], lambda crl: True)
        data(api.patch(f"{API}/cas/{root['id']}", json={"is_active": False}))
        revoke(api, cert, "keyCompromise")
        wait_for_crl(server, root["id"], listed(cert["serial_number"]))
        wait_for_crl(server, root["id"], listed(cert["serial_number"]), "delta")
        regenerated = data(api.post(f"{API}/crl/{root['id']}/regenerate"))
        assert regenerated["status"] == "published" and regenerated["revoked_count"] == 1
        issued = api.post(
            f"{API}/certificates",
            json={"common_name": "refused.example.com", "ca_id": root["id"]},
        )
        assert issued.status_code >= 400, issued.text  # still disabled for issuance


def test_a_ca_without_its_key_has_no_crl(server: Server, workdir: Path) -> None:
    foreign = foreign_root(workdir, "/CN=Keyless Foreign Root")
    with server.client() as api:
        ca = data(import_ca_file(api, foreign.pem.encode(), "keyless.pem"), 201)
        for suffix in (".crl", "-delta.crl"):
            response = httpx.get(f"{server.http_url}/cdp/{ca['id']}{suffix}", timeout=30)
            assert response.status_code == 404
        view = data(api.get(f"{API}/crl/{ca['id']}"))
        assert view["status"] == "unavailable" and view["crl_number"] is None
        error(api.post(f"{API}/crl/{ca['id']}/regenerate"), 422)


# Management API --------------------------------------------------------------------------


def test_management_endpoints(server: Server, hierarchy: dict[str, Any]) -> None:
    inter = hierarchy["inter"]
    wait_for_crl(server, inter["id"], lambda crl: True)
    with server.client() as api:
        listing = api.get(f"{API}/crl").json()
        entry = next(e for e in listing["data"] if e["ca_id"] == inter["id"])
        assert entry["status"] == "published" and entry["crl_number"] >= 1
        assert entry["cdp_url"] == f"{server.http_url}/cdp/{inter['refid']}.crl"
        assert entry["delta_url"] == f"{server.http_url}/cdp/{inter['refid']}-delta.crl"
        assert entry["delta"]["base_crl_number"] <= entry["crl_number"]
        assert listing["meta"]["total"] == len(listing["data"])
        detail = data(api.get(f"{API}/crl/{inter['id']}"))
        parsed = x509.load_pem_x509_crl(detail["crl_pem"].encode())
        assert number(parsed) == detail["crl_number"]
        assert len(parsed) == detail["revoked_count"]
        regenerated = api.post(f"{API}/crl/{inter['id']}/regenerate")
        body = regenerated.json()
        assert regenerated.status_code == 200 and body["message"] == "CRL regenerated successfully"
        assert body["data"]["crl_number"] > detail["crl_number"]
        rows = audit_rows(server, "crl.regenerate")
        assert any(r["details"].get("crl_number") == body["data"]["crl_number"] for r in rows)
        assert all(r["username"] == "admin" for r in rows)
        error(api.get(f"{API}/crl/999999"), 404)
        error(api.post(f"{API}/crl/999999/regenerate"), 404)
        error(api.get(f"{API}/crl/abc"), 422)
        viewer = create_user(api, "viewer")
    with server.client(api_key=key_for(server, viewer["username"])) as client:
        assert client.get(f"{API}/crl").status_code == 200
        assert client.get(f"{API}/crl/{inter['id']}").status_code == 200
        error(client.post(f"{API}/crl/{inter['id']}/regenerate"), 403)
    with server.client(api_key="") as anonymous:
        error(anonymous.get(f"{API}/crl"), 401)
        error(anonymous.post(f"{API}/crl/{inter['id']}/regenerate"), 401)
    # The management API is not on the plain-HTTP listener.
    assert httpx.get(f"{server.http_url}{API}/crl", timeout=30).status_code == 404


# Turning delta CRLs off --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_turning_deltas_off_withdraws_the_delta_crl(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A server restarted with TESSERA_CRL_DELTA_ENABLED=false publishes no delta CRL: the
    last one published before must not go on being served (stale, past its nextUpdate
    soon), the full CRL must stop pointing to it (Freshest CRL, RFC 5280 5.2.6), and the
    management API must not show it."""
    folder = tmp_path_factory.mktemp("crl-deltas-off") / "data"
    with database(backend) as url:
        running = start_server(folder, url)
        try:
            running.api_key = admin_api_key(running)
            with running.client() as api:
                root = create_root(api, unique("Deltas Off Root"))
            wait_for_crl(running, root["refid"], lambda crl: True, kind="delta")
            _, full = wait_for_crl(running, root["refid"], lambda crl: True)
            assert full.extensions.get_extension_for_oid(ExtensionOID.FRESHEST_CRL)
        finally:
            stop_server(running)
        running = start_server(folder, url, env={"TESSERA_CRL_DELTA_ENABLED": "false"})
        try:
            running.api_key = admin_api_key(running)
            for suffix in ("-delta.crl", "-delta.pem"):
                for reference in (root["refid"], root["id"]):
                    response = httpx.get(f"{running.http_url}/cdp/{reference}{suffix}")
                    assert response.status_code == 404, (suffix, response.status_code)
            with running.client(api_key="") as anonymous:
                assert anonymous.get(f"/cdp/{root['refid']}-delta.crl").status_code == 404

            def no_freshest(crl: x509.CertificateRevocationList) -> bool:
                oids = {extension.oid for extension in crl.extensions}
                return ExtensionOID.FRESHEST_CRL not in oids

            deadline = time.monotonic() + 30  # republished within a second or two
            while not no_freshest(x509.load_der_x509_crl(fetch(running, root["refid"]).content)):
                assert time.monotonic() < deadline, "the full CRL still points to the delta"
                time.sleep(0.3)
            with running.client() as api:
                view = data(api.get(f"{API}/crl/{root['id']}"))
                assert view["delta_enabled"] is False and view["delta"] is None, view
                assert view["delta_url"] is None, view
                regenerated = data(api.post(f"{API}/crl/{root['id']}/regenerate"))
                assert regenerated["delta"] is None, regenerated
            assert fetch(running, root["refid"], "delta").status_code == 404
        finally:
            stop_server(running)
