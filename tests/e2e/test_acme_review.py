"""ACME paths found wrong in a review against RFC 8555 and RFC 9773, each pinned by a test
that failed before its fix."""

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.accounts_helpers import db
from tests.e2e.acme_helpers import (
    Acme,
    AcmeEnv,
    acme_name,
    b64,
    csr_for,
    needs_challtestsrv,
    problem,
)
from tests.e2e.helpers import API, data, import_ca_file, self_signed_ca, unique

pytestmark = needs_challtestsrv


def issued(account: Acme, host: str) -> x509.Certificate:
    order = account.ready_order(host)
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    return x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]


def ari_id(cert: x509.Certificate) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    serial = cert.serial_number.to_bytes(cert.serial_number.bit_length() // 8 + 1, "big")
    return f"{b64(aki or b'')}.{b64(serial)}"


def test_renewal_info_finds_certificates_of_every_ca_with_the_same_key(
    env: AcmeEnv, account: Acme
) -> None:
    """RFC 9773 4.1: a certificate is named by its issuer's key identifier and its serial. A
    root re-issued with the same key is a CA of its own here (same key identifier): the
    certificates either one issued have renewal information and can be replaced."""
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = unique("Reissued ACME Root")
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ca_ids = []
    with env.api() as api:
        for lifetime in (timedelta(days=365), timedelta(days=730)):
            cert, _ = self_signed_ca(common_name, lifetime, key=key)
            bundle = cert.public_bytes(serialization.Encoding.PEM) + pem_key
            ca_ids.append(int(data(import_ca_file(api, bundle, "root.pem"), 201)["id"]))
    certificates = []
    try:
        for ca_id in ca_ids:
            env.settings(issuing_ca_id=ca_id)
            host = acme_name()
            certificates.append((host, issued(account, host)))
    finally:
        env.settings(issuing_ca_id=env.ca["id"])
    for host, cert in certificates:
        info = account.http.get(f"{account.dir['renewalInfo']}/{ari_id(cert)}")
        assert info.status_code == 200, info.text
        assert "suggestedWindow" in info.json()
        replacing = account.order(host, replaces=ari_id(cert))
        assert replacing.status_code == 201, replacing.text
        assert replacing.json()["replaces"] == ari_id(cert)


def test_the_orders_list_leaves_out_an_order_that_expired(env: AcmeEnv, account: Acme) -> None:
    """RFC 8555 7.1.2.1: the list SHOULD NOT include invalid orders, and an order past its
    expiry is invalid (7.1.6) as soon as it is read, before the cleanup job marks it so. A
    valid order stays valid, and listed, past its expiry."""
    kept = account.order(acme_name()).headers["location"]
    expired = account.order(acme_name()).headers["location"]
    host = acme_name()
    valid = account.ready_order(host)["url"]
    finalized = account.post(valid + "/finalize", {"csr": csr_for(host)[0]})
    assert finalized.json()["status"] == "valid", finalized.text
    past = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None)
    for url in (expired, valid):
        order_id = int(url.rsplit("/", 1)[1])
        db(env.server, "UPDATE acme_orders SET expires_at = ? WHERE id = ?", (past, order_id))
    listed = account.get(account.kid + "/orders").json()["orders"]
    assert set(listed) == {kept, valid}, listed
    assert account.get(expired).json()["status"] == "invalid"


def short_lived_ca(env: AcmeEnv, days: int) -> int:
    """A root of the given lifetime, imported with its key: its id."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert, _ = self_signed_ca(unique("Short ACME Root"), timedelta(days=days), key=key)
    bundle = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with env.api() as api:
        return int(data(import_ca_file(api, bundle, "root.pem"), 201)["id"])


def test_a_not_after_beyond_the_issuing_ca_is_refused_not_cut_short(
    env: AcmeEnv, account: Acme
) -> None:
    """RFC 8555 7.4: the server "MUST NOT issue a certificate with contents other than those
    requested". A notAfter later than the issuing CA's end cannot be honoured (a certificate
    ends with its issuer at the latest): refused at new-order, not issued ending earlier."""
    env.settings(issuing_ca_id=short_lived_ca(env, 10))
    try:
        late = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0)
        refused = problem(account.order(acme_name(), notAfter=late.isoformat()), "malformed", 400)
        assert "issuing CA" in refused["detail"], refused
        end = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
        host = acme_name()
        order = account.ready_order(host, notAfter=end.isoformat())
        done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
        pem = account.get(done["certificate"]).content
        assert x509.load_pem_x509_certificates(pem)[0].not_valid_after_utc == end
    finally:
        env.settings(issuing_ca_id=env.ca["id"])


def test_an_approval_is_refused_when_the_ca_now_ends_before_the_orders_not_after(
    env: AcmeEnv, account: Acme
) -> None:
    """The issuing CA changed, between finalize and the administrator's approval, to one that
    ends before the order's notAfter: the approval is a 409 saying why (as for a CA that
    cannot issue), and nothing is issued cut short."""
    host = acme_name()
    late = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0)
    order = account.ready_order(host, notAfter=late.isoformat())
    env.settings(require_approval=True)
    try:
        waiting = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
        assert waiting["status"] == "processing", waiting
        env.settings(issuing_ca_id=short_lived_ca(env, 10))
        order_id = order["url"].rsplit("/", 1)[1]
        with env.api() as api:
            refused = api.post(f"{API}/acme/orders/{order_id}/approve")
        assert refused.status_code == 409, refused.text
        assert "notAfter" in refused.json()["message"], refused.text
        assert account.get(order["url"]).json()["status"] == "processing"
    finally:
        env.settings(require_approval=False, issuing_ca_id=env.ca["id"])


def test_an_approval_refused_for_a_withdrawn_profile_is_a_native_api_error(
    env: AcmeEnv, account: Acme
) -> None:
    """The order's profile was withdrawn between finalize and the approval: the administrator
    gets the native API's 409 saying why, not the ACME problem document the client would get
    (whose shape no /api/v2 client reads)."""
    before = env.settings()["profiles"]
    env.settings(profiles={**before, "day": {"description": "24 hours", "validity_days": 1}})
    host = acme_name()
    order = account.ready_order(host, profile="day")
    env.settings(require_approval=True)
    try:
        waiting = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
        assert waiting["status"] == "processing", waiting
        env.settings(profiles=before)
        order_id = order["url"].rsplit("/", 1)[1]
        with env.api() as api:
            refused = api.post(f"{API}/acme/orders/{order_id}/approve")
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] is True and "no longer offered" in body["message"], body
    finally:
        env.settings(require_approval=False, profiles=before)
