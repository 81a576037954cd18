"""The ACME protocol at the wire: every malformed JWS and bad request gets the right RFC 7807
problem (never a 500, nothing half-written), and the happy paths the clients do not reach:
key rollover, revocation by the certificate key, ARI, profiles, approval, EdDSA/RS256/ES384."""

import base64
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.accounts_helpers import db
from tests.e2e.acme_helpers import (
    Acme,
    AcmeEnv,
    Key,
    acme_env,
    acme_name,
    b64,
    csr_for,
    needs_challtestsrv,
    problem,
)
from tests.e2e.helpers import (
    API,
    create_intermediate,
    create_root,
    data,
    db_rows,
    error,
    unique,
)
from tests.tools import pkilint_findings

pytestmark = needs_challtestsrv


@pytest.fixture
def acme(env: AcmeEnv) -> Iterator[Acme]:
    client = Acme(env)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def account(acme: Acme) -> Acme:
    assert acme.register(contact=["mailto:ops@example.org"]).status_code == 201
    return acme


def test_directory_nonce_and_headers(env: AcmeEnv, acme: Acme) -> None:
    directory = acme.http.get(env.directory)
    assert directory.status_code == 200
    for field in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"):
        assert directory.json()[field].startswith(env.server.url + "/acme/")
    assert directory.headers["link"] == f'<{env.directory}>;rel="index"'
    head = acme.http.head(acme.dir["newNonce"])
    get = acme.http.get(acme.dir["newNonce"])
    assert (head.status_code, get.status_code) == (200, 204)
    assert head.headers["replay-nonce"] != get.headers["replay-nonce"]
    assert head.headers["cache-control"] == "no-store"


def test_directory_and_new_nonce_take_post_as_get(env: AcmeEnv, account: Acme) -> None:
    """RFC 8555 6.3: the server MUST allow POST-as-GET for these resources as well as GET."""
    directory = account.get(account.dir["newNonce"].replace("new-nonce", "directory"))
    assert directory.status_code == 200, directory.text
    assert directory.json()["newOrder"] == account.dir["newOrder"]
    nonce = account.get(account.dir["newNonce"])
    assert nonce.status_code == 204 and nonce.headers["replay-nonce"]
    assert nonce.headers["cache-control"] == "no-store"
    # still a signed request: an empty payload, by an account
    problem(account.post(account.dir["newNonce"], {}), "malformed", 400)
    problem(account.post(account.dir["newNonce"], None, use_jwk=True), "malformed", 400)


def test_directory_meta_follows_settings(env: AcmeEnv, acme: Acme) -> None:
    env.settings(
        terms_of_service="https://pki.example.org/tos",
        website="https://pki.example.org",
        caa_identities=["pki.example.org"],
        profiles={"shortlived": {"description": "24 hours", "validity_days": 1}},
    )
    try:
        meta = acme.http.get(env.directory).json()["meta"]
        assert meta["termsOfService"] == "https://pki.example.org/tos"
        assert meta["website"] == "https://pki.example.org"
        assert meta["caaIdentities"] == ["pki.example.org"]
        assert meta["externalAccountRequired"] is False
        assert meta["profiles"] == {"shortlived": "24 hours"}
        refused = acme.post(acme.dir["newAccount"], {"contact": []}, use_jwk=True)
        # RFC 8555 7.3.3: "status code 403 (Forbidden) and type ... userActionRequired"
        assert problem(refused, "userActionRequired", 403)["instance"] == meta["termsOfService"]
        assert refused.headers["link"].count('<https://pki.example.org/tos>;rel="terms-of-service"')
    finally:
        env.settings(terms_of_service=None, website=None, caa_identities=[])


def test_a_server_reached_by_address_offers_no_caa_identity(env: AcmeEnv, acme: Acme) -> None:
    """caaIdentities are hostnames a CAA record can name (RFC 8555 9.7.1): this server, at
    127.0.0.1 with none set, has none to offer, rather than offering its address."""
    assert "caaIdentities" not in acme.http.get(env.directory).json()["meta"]


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "EdDSA"])
def test_accounts_with_every_algorithm(acme: Acme, alg: str) -> None:
    acme.key = Key(alg)
    created = acme.register(contact=["mailto:a@example.org"])
    assert created.status_code == 201, created.text
    again = acme.register()
    assert again.status_code == 200 and again.headers["location"] == created.headers["location"]
    view = acme.get(acme.kid or "").json()
    assert view["status"] == "valid" and view["contact"] == ["mailto:a@example.org"]


def test_concurrent_new_accounts_with_one_key(env: AcmeEnv, acme: Acme) -> None:
    """Racing registrations of one key: one creates the account (201), the others get it
    (200 and its URL, RFC 8555 7.3.1), never a conflict."""
    url = acme.dir["newAccount"]
    payload = {"termsOfServiceAgreed": True}
    bodies = [json.dumps(acme.jws(url, payload, use_jwk=True)).encode() for _ in range(4)]
    start = threading.Barrier(len(bodies))

    def register(body: bytes) -> httpx.Response:
        with httpx.Client(verify=env.server.ssl_context(), timeout=60) as client:
            start.wait()
            headers = {"Content-Type": "application/jose+json"}
            return client.post(url, content=body, headers=headers)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(register, bodies))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 200, 201], [(a.status_code, a.text) for a in answers]
    assert len({a.headers["location"] for a in answers}) == 1


def test_only_return_existing(acme: Acme) -> None:
    missing = acme.post(acme.dir["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    problem(missing, "accountDoesNotExist", 400)
    acme.register()
    found = acme.post(acme.dir["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
    assert found.status_code == 200 and found.headers["location"] == acme.kid


def test_malformed_jws_variants(account: Acme) -> None:
    url = account.dir["newOrder"]
    good = account.jws(url, {"identifiers": [{"type": "dns", "value": acme_name()}]})
    # bad base64 in each part
    for part in ("protected", "payload", "signature"):
        problem(account.raw(url, json.dumps({**good, part: "***"}).encode()), "malformed", 400)
    # not JSON, not an object, missing members, unprotected header, general serialization
    problem(account.raw(url, b"not json"), "malformed", 400)
    problem(account.raw(url, b"[1, 2]"), "malformed", 400)
    problem(
        account.raw(url, json.dumps({"protected": good["protected"]}).encode()), "malformed", 400
    )
    with_header = {**good, "header": {"kid": account.kid}}
    problem(account.raw(url, json.dumps(with_header).encode()), "malformed", 400)
    problem(account.raw(url, json.dumps({"signatures": [good]}).encode()), "malformed", 400)
    # wrong media type, oversized body
    problem(account.raw(url, json.dumps(good).encode(), "application/json"), "malformed", 415)
    problem(account.raw(url, b"{" + b" " * 70000 + b"}"), "malformed", 413)
    # JSON nested deeper than the parser recurses, as the body and as the payload
    problem(account.raw(url, b"[" * 60000), "malformed", 400)
    deep = {**good, "payload": b64(b"[" * 40000)}
    problem(account.raw(url, json.dumps(deep).encode()), "malformed", 400)
    # unpaired surrogate escapes in the protected header and in the payload
    lone_nonce = account.jws(url, {"identifiers": []}, header={"nonce": "\ud800"})
    problem(account.raw(url, json.dumps(lone_nonce).encode()), "malformed", 400)
    lone_name = {"identifiers": [{"type": "dns", "value": "\ud800"}]}
    problem(account.post(url, lone_name), "malformed", 400)
    # critical header parameters the server cannot know (RFC 7515 4.1.11)
    crit = account.jws(url, {"identifiers": []}, header={"crit": ["foo"], "foo": 1})
    problem(account.raw(url, json.dumps(crit).encode()), "malformed", 400)
    # a JWK whose members have the wrong JSON types
    odd = {"kty": "EC", "crv": "P-256", "x": 5, "y": []}
    wrong_types = account.jws(account.dir["newAccount"], {}, header={"jwk": odd, "kid": None})
    problem(
        account.raw(account.dir["newAccount"], json.dumps(wrong_types).encode()),
        "badPublicKey",
        400,
    )
    # ids written with digits str.isdigit takes and int() refuses
    problem(account.get(account.url("order/\u00b2")), "malformed", 404)
    superscript = account.jws(url, {"identifiers": []}, header={"kid": account.url("acct/\u00b2")})
    problem(account.raw(url, json.dumps(superscript).encode()), "accountDoesNotExist", 400)


def test_algorithms_refused(account: Acme) -> None:
    url = account.dir["newOrder"]
    for alg in ("none", "HS256", "PS256", "RS512"):
        body = account.jws(url, {"identifiers": []}, header={"alg": alg})
        refused = problem(account.raw(url, json.dumps(body).encode()), "badSignatureAlgorithm", 400)
        assert "ES256" in refused["algorithms"]
    # ES384 named in the header while the account key is P-256
    body = account.jws(url, {"identifiers": []}, header={"alg": "ES384"})
    problem(account.raw(url, json.dumps(body).encode()), "badSignatureAlgorithm", 400)


def test_nonces(account: Acme) -> None:
    url = account.dir["newOrder"]
    payload = {"identifiers": [{"type": "dns", "value": acme_name()}]}
    problem(account.post(url, payload, nonce="never-issued"), "badNonce", 400)
    problem(account.post(url, payload, nonce="not base64url!"), "malformed", 400)  # 6.5.2
    nonce = account.nonce()
    body = json.dumps(account.jws(url, payload, nonce=nonce)).encode()
    assert account.raw(url, body).status_code == 201
    problem(account.raw(url, body), "badNonce", 400)  # replayed
    no_nonce = account.jws(url, payload, header={"nonce": None})
    problem(account.raw(url, json.dumps(no_nonce).encode()), "badNonce", 400)


def test_nonce_spent_by_failures_and_replays_write_nothing(account: Acme) -> None:
    """A failed request still uses its nonce up, and a replay that loses the race to spend
    it leaves nothing behind (whether nonces are database rows or in SQLite's nonce file)."""
    url, orders = account.dir["newOrder"], f"{account.kid}/orders"
    nonce = account.nonce()
    bad = json.dumps(account.jws(url, {"identifiers": []}, nonce=nonce)).encode()
    assert account.raw(url, bad).status_code == 400
    payload = {"identifiers": [{"type": "dns", "value": acme_name()}]}
    good = json.dumps(account.jws(url, payload, nonce=nonce)).encode()
    problem(account.raw(url, good), "badNonce", 400)  # spent by the failed request
    before = len(account.get(orders).json()["orders"])
    body = json.dumps(account.jws(url, payload)).encode()
    assert account.raw(url, body).status_code == 201
    problem(account.raw(url, body), "badNonce", 400)
    assert len(account.get(orders).json()["orders"]) == before + 1


def test_url_kid_and_jwk_rules(env: AcmeEnv, account: Acme) -> None:
    payload = {"identifiers": [{"type": "dns", "value": acme_name()}]}
    wrong_url = account.jws(
        account.dir["newOrder"], payload, header={"url": account.dir["newAccount"]}
    )
    problem(
        account.raw(account.dir["newOrder"], json.dumps(wrong_url).encode()), "unauthorized", 403
    )
    # jwk where kid is required, kid where jwk is required, both at once
    problem(account.post(account.dir["newOrder"], payload, use_jwk=True), "malformed", 400)
    problem(account.post(account.dir["newAccount"], {}, use_jwk=False), "malformed", 400)
    both = account.jws(account.dir["newOrder"], payload, header={"jwk": account.key.jwk})
    problem(account.raw(account.dir["newOrder"], json.dumps(both).encode()), "malformed", 400)
    # a signature by another key than the account's
    problem(account.post(account.dir["newOrder"], payload, key=Key()), "malformed", 400)
    # an unknown account, and a kid that is no account URL at all
    unknown = account.jws(
        account.dir["newOrder"], payload, header={"kid": account.url("acct/999999")}
    )
    problem(
        account.raw(account.dir["newOrder"], json.dumps(unknown).encode()),
        "accountDoesNotExist",
        400,
    )
    foreign = account.jws(
        account.dir["newOrder"], payload, header={"kid": "https://elsewhere/acct/1"}
    )
    problem(
        account.raw(account.dir["newOrder"], json.dumps(foreign).encode()),
        "accountDoesNotExist",
        400,
    )


def test_get_on_post_only_resources_and_unknown_paths(env: AcmeEnv, acme: Acme) -> None:
    problem(acme.http.get(acme.dir["newOrder"]), "malformed", 405)
    problem(acme.http.get(acme.url("no-such-thing")), "malformed", 404)


def test_identifier_rules(account: Acme) -> None:
    for bad in ("-bad-.example", "a..b", "*.*.example.org", "x" * 300, "exa mple.org"):
        problem(account.order(bad), "rejectedIdentifier", 400)
    weird = account.post(
        account.dir["newOrder"], {"identifiers": [{"type": "email", "value": "a@b"}]}
    )
    problem(weird, "rejectedIdentifier", 400)
    problem(account.post(account.dir["newOrder"], {"identifiers": []}), "malformed", 400)
    problem(account.order(acme_name(), profile="no-such-profile"), "invalidProfile", 400)
    late = (datetime.now(UTC) + timedelta(days=5000)).isoformat()
    problem(account.order(acme_name(), notAfter=late), "malformed", 400)
    problem(account.order(acme_name(), notAfter="yesterday"), "malformed", 400)
    problem(account.order(acme_name(), notBefore="0001-01-01T00:00:00+14:00"), "malformed", 400)


def test_dns_identifiers_are_ascii_with_proper_a_labels(account: Acme) -> None:
    """RFC 8555 7.1.4: a dns identifier is written as in a certificate (ASCII), and "xn--"
    labels must be properly encoded A-labels (RFC 5890)."""
    for bad in (
        f"xn--zz.{acme_name()}",  # not Punycode
        f"xn--ls8h.{acme_name()}",  # Punycode of a code point IDNA2008 disallows
        f"\u212a.{acme_name()}",  # KELVIN SIGN: not ASCII (lower() would make it "k")
        f"b\u00fccher.{acme_name()}",  # a U-label: clients send the A-label
    ):
        problem(account.order(bad), "rejectedIdentifier", 400)
    host = f"xn--bcher-kva.{acme_name()}"
    created = account.order(host.upper())
    assert created.status_code == 201, created.text
    assert created.json()["identifiers"] == [{"type": "dns", "value": host}]


def test_ip_identifiers_are_addresses_without_a_zone(account: Acme) -> None:
    """RFC 8738 3: an ip identifier is an address in its textual form (RFC 5952 for IPv6),
    which has no zone: a certificate cannot name one, and validation must not go through a
    link of the CA's own host."""
    for bad in ("fe80::1%eth0", "fe80::1%1", "127.0.0.1%lo"):
        order = {"identifiers": [{"type": "ip", "value": bad}]}
        problem(account.post(account.dir["newOrder"], order), "rejectedIdentifier", 400)
    created = account.post(
        account.dir["newOrder"], {"identifiers": [{"type": "ip", "value": "2001:DB8:0::1"}]}
    )
    assert created.status_code == 201, created.text
    assert created.json()["identifiers"] == [{"type": "ip", "value": "2001:db8::1"}]


def test_not_after_is_honoured_exactly_and_a_past_not_before_refused(account: Acme) -> None:
    """RFC 8555 7.4: the certificate has what the order asked for, or the order is refused."""
    host = acme_name()
    end = (datetime.now(UTC) + timedelta(days=2, hours=3)).replace(microsecond=0)
    order = account.ready_order(host, notAfter=end.isoformat())
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
    assert cert.not_valid_after_utc == end
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    problem(account.order(acme_name(), notBefore=past), "malformed", 400)


def test_order_authorizations_and_challenges(account: Acme) -> None:
    host = acme_name()
    created = account.order(host, f"*.{host}", "127.0.0.1")
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "pending" and len(order["authorizations"]) == 3
    kinds = {}
    for url in order["authorizations"]:
        authz = account.get(url).json()
        kinds[(authz["identifier"]["value"], authz.get("wildcard", False))] = sorted(
            c["type"] for c in authz["challenges"]
        )
    assert kinds[(host, True)] == ["dns-01"]
    assert kinds[(host, False)] == ["dns-01", "http-01", "tls-alpn-01"]
    assert kinds[("127.0.0.1", False)] == ["http-01", "tls-alpn-01"]
    listed = account.get(account.kid + "/orders").json()["orders"]
    assert created.headers["location"] in listed
    # an invalid order is not listed (RFC 8555 7.1.2.1)
    account.post(order["authorizations"][0], {"status": "deactivated"})
    assert account.get(created.headers["location"]).json()["status"] == "invalid"
    assert created.headers["location"] not in account.get(account.kid + "/orders").json()["orders"]


def test_no_order_is_taken_while_no_issuing_ca_is_configured(env: AcmeEnv, account: Acme) -> None:
    """A fresh server names no issuing CA: new-order says so at once, rather than letting a
    client prove its names only for finalize to fail."""
    env.settings(issuing_ca_id=None)
    try:
        refused = account.order(acme_name())
        assert "no issuing CA" in problem(refused, "serverInternal", 503)["detail"]
    finally:
        env.settings(issuing_ca_id=env.ca["id"])
    assert account.order(acme_name()).status_code == 201


def test_orders_list_pages_with_a_next_link(account: Acme) -> None:
    """RFC 8555 7.1.2.1: a server that returns an incomplete orders list says where the rest
    is, with a Link rel="next"; following the links gives every order exactly once."""
    created = set()
    for _ in range(105):
        response = account.order(acme_name())
        assert response.status_code == 201, response.text
        created.add(response.headers["location"])
    seen: list[str] = []
    url: str | None = account.kid + "/orders"
    pages = 0
    while url is not None and pages < 50:
        listed = account.get(url)
        assert listed.status_code == 200, listed.text
        seen += listed.json()["orders"]
        url = listed.links.get("next", {}).get("url")
        pages += 1
    assert pages > 1  # the list came in pages
    assert len(seen) == len(set(seen)) and set(seen) == created
    problem(account.get(account.kid + "/orders?cursor=x"), "malformed", 400)


def test_an_invalid_authorization_shows_the_challenge_that_failed(account: Acme) -> None:
    """RFC 8555 7.1.4: the challenges of an invalid authorization are the one that was
    attempted and failed (as a valid one shows the one that was validated)."""
    created = account.order(acme_name())
    authz_url = created.json()["authorizations"][0]
    authz = account.get(authz_url).json()
    http01 = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert account.post(http01["url"], {}).status_code == 200  # nothing serves the token
    failed = account.wait(authz_url, ("valid", "invalid"))
    assert failed["status"] == "invalid", failed
    assert [(c["url"], c["status"]) for c in failed["challenges"]] == [
        (http01["url"], "invalid")
    ], failed
    assert failed["challenges"][0]["error"]["type"].startswith("urn:ietf:params:acme:error:")


def test_an_authorization_past_its_expiry_reads_as_expired(env: AcmeEnv, account: Acme) -> None:
    """RFC 8555 7.1.6: a pending authorization past its expiry is expired when read, before
    the cleanup job (every few minutes) marks it, and its challenge can no longer start."""
    authz_url = account.order(acme_name()).json()["authorizations"][0]
    authz_id = int(authz_url.rsplit("/", 1)[1])
    past = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None)
    db(env.server, "UPDATE acme_authorizations SET expires_at = ? WHERE id = ?", (past, authz_id))
    authz = account.get(authz_url).json()
    assert authz["status"] == "expired", authz
    stored = db_rows(env.server, "SELECT status FROM acme_authorizations WHERE id = ?", authz_id)
    assert stored == [("expired",)]
    http01 = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert account.post(http01["url"], {}).json()["status"] == "pending"  # not started


def test_challenges_answered_at_once_are_validated_once(env: AcmeEnv, account: Acme) -> None:
    """Every authorization of an order answered at once, and each challenge answered twice:
    the validation job takes them in one batch, the order becomes ready, and each challenge
    is validated (and audited) exactly once."""
    hosts = [acme_name() for _ in range(3)]
    created = account.order(*hosts)
    assert created.status_code == 201, created.text
    urls = []
    for authz_url in created.json()["authorizations"]:
        authz = account.get(authz_url).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
        key_auth = f"{challenge['token']}.{account.key.thumbprint()}"
        value = b64(hashlib.sha256(key_auth.encode()).digest())
        env.dns.set_txt(f"_acme-challenge.{authz['identifier']['value']}", value)
        urls.append(challenge["url"])
    for url in urls + urls:
        answered = account.post(url, {})
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] in ("processing", "valid")
    order = account.wait(created.headers["location"], ("ready", "invalid"))
    assert order["status"] == "ready", order
    ids = sorted(url.rsplit("/", 1)[1] for url in urls)
    with env.api() as api:
        params = {"action": "acme.challenge.validate", "per_page": 100}
        rows = data(api.get(f"{API}/audit/logs", params=params))
    assert sorted(str(r["resource_id"]) for r in rows if str(r["resource_id"]) in ids) == ids


def test_finalize_rules_and_nothing_half_written(
    env: AcmeEnv, account: Acme, tmp_path: Path
) -> None:
    host = acme_name()
    pending = account.order(host)
    finalize = pending.json()["finalize"]
    csr, _ = csr_for(host)
    problem(account.post(finalize, {"csr": csr}), "orderNotReady", 403)

    order = account.ready_order(host, f"www.{host}")
    assert order["status"] == "ready", order
    for wrong in (csr_for(host)[0], csr_for(host, f"www.{host}", "other.acme.test")[0]):
        problem(account.post(order["finalize"], {"csr": wrong}), "badCSR", 400)
    problem(account.post(order["finalize"], {"csr": "!!"}), "malformed", 400)
    problem(account.post(order["finalize"], {"csr": b64(b"garbage")}), "badCSR", 400)
    # the account key may not be certified
    own, _ = csr_for(host, f"www.{host}", key=account.key.private)
    problem(account.post(order["finalize"], {"csr": own}), "badCSR", 400)
    assert account.get(order["url"]).json()["status"] == "ready"  # nothing half-written

    good, _ = csr_for(host, f"www.{host}")
    done = account.post(order["finalize"], {"csr": good})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "valid"
    chain = account.get(done.json()["certificate"])
    assert chain.headers["content-type"].startswith("application/pem-certificate-chain")
    certs = x509.load_pem_x509_certificates(chain.content)
    assert len(certs) == 2 and certs[1].subject == certs[0].issuer
    assert (
        pkilint_findings(
            tmp_path,
            chain.text.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n",
        )
        == ""
    )
    problem(account.post(order["finalize"], {"csr": good}), "orderNotReady", 403)


def _certificates_named(env: AcmeEnv, host: str) -> int:
    with env.api() as api:
        listed = api.get(f"{API}/certificates", params={"search": host})
        assert listed.status_code == 200, listed.text
        return int(listed.json()["meta"]["total"])


def test_finalizes_sent_at_once_issue_one_certificate(env: AcmeEnv, account: Acme) -> None:
    """Several finalize requests for one ready order at once (each with a CSR of its own):
    exactly one is issued; the others are told the order is not ready any more."""
    host = acme_name()
    order = account.ready_order(host)
    assert order["status"] == "ready", order
    bodies = [
        json.dumps(account.jws(order["finalize"], {"csr": csr_for(host)[0]})).encode()
        for _ in range(4)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: account.raw(order["finalize"], body), bodies))
    done = [a for a in answers if a.status_code == 200]
    assert len(done) == 1, [a.text for a in answers]
    assert done[0].json()["status"] == "valid"
    for refused in (a for a in answers if a.status_code != 200):
        problem(refused, "orderNotReady", 403)
    assert account.get(order["url"]).json()["certificate"] == done[0].json()["certificate"]
    assert _certificates_named(env, host) == 1


def test_approvals_and_rejections_at_once_decide_once(env: AcmeEnv, account: Acme) -> None:
    """Administrators approving and rejecting one waiting order at once: one decision wins,
    the rest are refused (409, or 400 once the order no longer waits), and the order and
    the inventory say what won."""
    env.settings(require_approval=True)
    try:
        host = acme_name()
        order = account.ready_order(host)
        waiting = account.post(order["finalize"], {"csr": csr_for(host)[0]})
        assert waiting.json()["status"] == "processing", waiting.text
    finally:
        env.settings(require_approval=False)
    order_id = int(order["url"].rsplit("/", 1)[1])
    decisions = ["approve", "reject"] * 3
    bodies = {"approve": None, "reject": {"reason": "decided twice"}}

    def decide(decision: str) -> httpx.Response:
        return api.post(f"{API}/acme/orders/{order_id}/{decision}", json=bodies[decision])

    with env.api() as api, ThreadPoolExecutor(len(decisions)) as pool:
        answers = list(pool.map(decide, decisions))
    won = [(d, a) for d, a in zip(decisions, answers, strict=True) if a.status_code == 200]
    assert len(won) == 1, [a.text for a in answers]
    assert sorted({a.status_code for a in answers} - {200}) in ([400], [409], [400, 409])
    final = account.get(order["url"]).json()
    if won[0][0] == "approve":
        assert final["status"] == "valid" and final["certificate"], final
        assert _certificates_named(env, host) == 1
    else:
        assert final["status"] == "invalid" and "certificate" not in final, final
        assert _certificates_named(env, host) == 0


def test_the_csr_common_name_is_the_certificates(env: AcmeEnv, account: Acme) -> None:
    """The identifiers of an order are a set (RFC 8555 7.1.3, 7.4: the CSR must name "the
    exact same set"), so their order says nothing; a CSR that puts one of them in its CN
    chooses the certificate's CN, as Boulder keeps it. acme-tiny sends the identifiers in
    the order of a Python set, and got the other name as CN for a CSR with CN=host."""
    host = acme_name()
    www = f"www.{host}"
    for cn, ordered in ((host, (www, host)), (www.upper(), (host, www))):
        order = account.ready_order(*ordered)
        assert order["status"] == "ready", order
        csr, _ = csr_for(host, www, cn=cn)
        done = account.post(order["finalize"], {"csr": csr})
        assert done.status_code == 200, done.text
        leaf = x509.load_pem_x509_certificates(account.get(done.json()["certificate"]).content)[0]
        assert leaf.subject.rfc4514_string() == f"CN={cn.lower()}"
    # Without a CN in the CSR, the first DNS identifier of the order, as before.
    order = account.ready_order(www, host)
    csr, _ = csr_for(host, www)
    done = account.post(order["finalize"], {"csr": csr})
    leaf = x509.load_pem_x509_certificates(account.get(done.json()["certificate"]).content)[0]
    assert leaf.subject.rfc4514_string() == f"CN={www}"


def test_concurrent_finalizes_issue_one_certificate(env: AcmeEnv, account: Acme) -> None:
    """Finalize requests racing for one ready order: one wins, the others are told the order
    is not ready, and the inventory holds one certificate (RFC 8555 7.4: an order has one)."""
    host = acme_name()
    order = account.ready_order(host)
    csr, _ = csr_for(host)
    bodies = [json.dumps(account.jws(order["finalize"], {"csr": csr})).encode() for _ in range(4)]
    start = threading.Barrier(len(bodies))

    def finalize(body: bytes) -> httpx.Response:
        with httpx.Client(verify=env.server.ssl_context(), timeout=60) as client:
            start.wait()
            headers = {"Content-Type": "application/jose+json"}
            return client.post(order["finalize"], content=body, headers=headers)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(finalize, bodies))
    won = [a for a in answers if a.status_code == 200]
    assert len(won) == 1, [(a.status_code, a.text) for a in answers]
    assert won[0].json()["status"] == "valid"
    for lost in (a for a in answers if a.status_code != 200):
        problem(lost, "orderNotReady", 403)
    with env.api() as api:
        found = api.get(f"{API}/certificates", params={"search": host})
        assert found.json()["meta"]["total"] == 1, found.text
    assert account.get(won[0].json()["certificate"]).status_code == 200


def test_another_accounts_resources_are_refused(env: AcmeEnv, account: Acme) -> None:
    order = account.order(acme_name())
    other = Acme(env)
    try:
        other.register()
        problem(other.get(order.headers["location"]), "unauthorized", 403)
        problem(other.get(order.json()["authorizations"][0]), "unauthorized", 403)
        problem(other.get(account.kid or ""), "unauthorized", 403)
    finally:
        other.close()


def test_account_update_key_change_and_deactivation(env: AcmeEnv, account: Acme) -> None:
    updated = account.post(account.kid or "", {"contact": ["mailto:new@example.org"]})
    assert updated.json()["contact"] == ["mailto:new@example.org"]
    problem(account.post(account.kid or "", {"contact": ["tel:+1555"]}), "unsupportedContact", 400)

    new_key = Key("EdDSA")
    inner = account.jws(
        account.dir["keyChange"],
        {"account": account.kid, "oldKey": account.key.jwk},
        key=new_key,
        use_jwk=True,
        header={"nonce": None},
    )
    changed = account.post(account.dir["keyChange"], inner)
    assert changed.status_code == 200, changed.text
    # the old key (ES256) no longer fits the account's key (Ed25519)
    problem(
        account.post(account.dir["newOrder"], {"identifiers": []}), "badSignatureAlgorithm", 400
    )
    account.key = new_key
    pending = account.order(acme_name())
    assert pending.status_code == 201
    order_id = pending.headers["location"].rsplit("/", 1)[1]

    gone = account.post(account.kid or "", {"status": "deactivated"})
    assert gone.json()["status"] == "deactivated"
    problem(account.order(acme_name()), "unauthorized", 401)  # RFC 8555 7.3.6: MUST be 401
    # what the account had under way stops (RFC 8555 7.3.6)
    with env.api() as api:
        assert data(api.get(f"{API}/acme/orders/{order_id}"))["status"] == "invalid"


def test_revocation_by_certificate_key_and_reasons(env: AcmeEnv, account: Acme) -> None:
    host = acme_name()
    order = account.ready_order(host)
    csr, cert_key = csr_for(host)
    done = account.post(order["finalize"], {"csr": csr}).json()
    pem = account.get(done["certificate"]).text
    der = x509.load_pem_x509_certificates(pem.encode())[0].public_bytes(Encoding.DER)
    revoke = account.dir["revokeCert"]
    problem(account.post(revoke, {"certificate": b64(b"not a certificate")}), "malformed", 400)
    problem(
        account.post(revoke, {"certificate": b64(der), "reason": 7}), "badRevocationReason", 400
    )
    stranger = Key()
    problem(
        account.post(revoke, {"certificate": b64(der)}, key=stranger, use_jwk=True),
        "unauthorized",
        403,
    )
    holder = Key()
    holder.private = cert_key
    assert (
        account.post(
            revoke, {"certificate": b64(der), "reason": 1}, key=holder, use_jwk=True
        ).status_code
        == 200
    )
    problem(account.post(revoke, {"certificate": b64(der)}), "alreadyRevoked", 400)
    with env.api() as api:
        rows = data(api.get(f"{API}/certificates", params={"search": host}))
    assert rows[0]["status"] == "revoked" and rows[0]["revocation_reason"] in (
        "keyCompromise",
        "key_compromise",
    )


def ari_id(cert: x509.Certificate) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    serial = cert.serial_number.to_bytes(cert.serial_number.bit_length() // 8 + 1, "big")
    return f"{b64(aki or b'')}.{b64(serial)}"


def test_one_order_replaces_a_certificate_however_many_race(account: Acme) -> None:
    """RFC 9773 5: new-orders replacing the same certificate sent at once: one is created,
    the others get alreadyReplaced (the check alone let several through)."""
    host = acme_name()
    order = account.ready_order(host)
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: account.order(host, replaces=ari_id(cert)), range(8)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["type"] == "urn:ietf:params:acme:error:alreadyReplaced"


def test_an_expired_order_no_longer_holds_the_certificate_it_replaced(
    env: AcmeEnv, account: Acme
) -> None:
    """An order that expired unfinished is invalid (RFC 8555 7.1.6) before the cleanup job
    marks it: a new order may replace the certificate the expired one named."""
    host = acme_name()
    order = account.ready_order(host)
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
    first = account.order(host, replaces=ari_id(cert))
    assert first.status_code == 201, first.text
    problem(account.order(host, replaces=ari_id(cert)), "alreadyReplaced", 409)
    order_id = int(first.headers["location"].rsplit("/", 1)[1])
    past = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None)
    db(env.server, "UPDATE acme_orders SET expires_at = ? WHERE id = ?", (past, order_id))
    second = account.order(host, replaces=ari_id(cert))
    assert second.status_code == 201, second.text
    assert account.get(first.headers["location"]).json()["status"] == "invalid"


def test_renewal_info_and_early_renewal(env: AcmeEnv, account: Acme) -> None:
    host = acme_name()
    order = account.ready_order(host)
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
    info = account.http.get(f"{account.dir['renewalInfo']}/{ari_id(cert)}")
    assert info.status_code == 200 and int(info.headers["retry-after"]) > 0
    window = info.json()["suggestedWindow"]
    start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    assert start > datetime.now(UTC) + timedelta(days=30)

    cert_id = done["certificate"].rsplit("/", 1)[1]
    with env.api() as api:
        data(api.post(f"{API}/acme/renewal/{cert_id}"))
    moved = account.http.get(f"{account.dir['renewalInfo']}/{ari_id(cert)}").json()
    end = datetime.fromisoformat(moved["suggestedWindow"]["end"].replace("Z", "+00:00"))
    assert end < datetime.now(UTC)
    # replaces: the identifier in DER only, an order sharing a name with the certificate
    aki_part, serial_part = ari_id(cert).split(".")
    padded = f"{aki_part}.{b64(bytes([0]) + base64.urlsafe_b64decode(serial_part + '=='))}"
    problem(account.order(host, replaces=padded), "malformed", 400)
    problem(account.order(acme_name(), replaces=ari_id(cert)), "malformed", 400)
    # a new order naming the old certificate, once
    replacing = account.order(host, replaces=ari_id(cert))
    assert replacing.status_code == 201 and replacing.json()["replaces"] == ari_id(cert)
    problem(account.order(host, replaces=ari_id(cert)), "alreadyReplaced", 409)

    problem(account.http.get(f"{account.dir['renewalInfo']}/AAAA.AQ"), "malformed", 404)
    problem(
        account.http.get(f"{account.dir['renewalInfo']}/AAAA.AAAA"), "malformed", 400
    )  # 0x000000
    problem(account.http.get(f"{account.dir['renewalInfo']}/not-an-id"), "malformed", 400)


def test_a_key_revoked_as_compromised_is_renewed_everywhere_and_certified_no_more(
    env: AcmeEnv, account: Acme
) -> None:
    """Two certificates share a key; one is revoked as keyCompromise. ARI tells the other to
    renew at once, and neither ACME nor a renewal certifies that key again."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = []
    for host in (acme_name(), acme_name()):
        order = account.ready_order(host)
        done = account.post(order["finalize"], {"csr": csr_for(host, key=key)[0]}).json()
        pem = account.get(done["certificate"]).content
        issued.append(
            (done["certificate"].rsplit("/", 1)[1], x509.load_pem_x509_certificates(pem)[0])
        )
    (revoked_id, _), (other_id, other) = issued
    ari = f"{account.dir['renewalInfo']}/{ari_id(other)}"
    start = account.http.get(ari).json()["suggestedWindow"]["start"]
    assert datetime.fromisoformat(start.replace("Z", "+00:00")) > datetime.now(UTC)
    with env.api() as api:
        data(api.post(f"{API}/certificates/{revoked_id}/revoke", json={"reason": "keyCompromise"}))
        end = account.http.get(ari).json()["suggestedWindow"]["end"]
        assert datetime.fromisoformat(end.replace("Z", "+00:00")) < datetime.now(UTC)
        refused = error(api.post(f"{API}/certificates/{other_id}/renew", json={}), 422)
        assert "compromised" in refused
    host = acme_name()
    order = account.ready_order(host)
    refused_csr = account.post(order["finalize"], {"csr": csr_for(host, key=key)[0]})
    assert "compromised" in problem(refused_csr, "badCSR", 400)["detail"]


def test_a_disabled_ca_above_the_issuer_moves_the_renewal_window(
    env: AcmeEnv, account: Acme
) -> None:
    with env.api() as api:
        root = create_root(api, unique("ARI Root"))
        inter = create_intermediate(api, root["id"], unique("ARI Issuing"))
        data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": inter["id"]}))
    try:
        host = acme_name()
        order = account.ready_order(host)
        done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
        cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
        ari = f"{account.dir['renewalInfo']}/{ari_id(cert)}"
        start = account.http.get(ari).json()["suggestedWindow"]["start"]
        assert datetime.fromisoformat(start.replace("Z", "+00:00")) > datetime.now(UTC)
        with env.api() as api:
            data(api.patch(f"{API}/cas/{root['id']}", json={"is_active": False}))
        end = account.http.get(ari).json()["suggestedWindow"]["end"]
        assert datetime.fromisoformat(end.replace("Z", "+00:00")) < datetime.now(UTC)
    finally:
        with env.api() as api:
            data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": env.ca["id"]}))


def test_profile_maps_to_validity(env: AcmeEnv, account: Acme) -> None:
    env.settings(profiles={"shortlived": {"description": "24 hours", "validity_days": 1}})
    host = acme_name()
    order = account.ready_order(host, profile="shortlived")
    assert order["profile"] == "shortlived"
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=1)


def test_profile_template_sets_validity(env: AcmeEnv, account: Acme) -> None:
    """A profile naming only a template issues for the template's validity, not the server's
    default (which the template would refuse as too long)."""
    body = {"name": unique("ACME week"), "validity_days": 7, "extended_key_usage": ["serverAuth"]}
    with env.api() as api:
        template_id = data(api.post(f"{API}/templates", json=body), 201)["id"]
    env.settings(profiles={"week": {"template_id": template_id}})
    host = acme_name()
    order = account.ready_order(host, profile="week")
    done = account.post(order["finalize"], {"csr": csr_for(host)[0]}).json()
    assert done["status"] == "valid", done
    cert = x509.load_pem_x509_certificates(account.get(done["certificate"]).content)[0]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=7)
    too_long = (datetime.now(UTC) + timedelta(days=8)).isoformat()
    problem(account.order(acme_name(), profile="week", notAfter=too_long), "malformed", 400)


def _waiting_for_approval(env: AcmeEnv, account: Acme, host: str) -> dict[str, Any]:
    env.settings(require_approval=True)
    try:
        order = account.ready_order(host)
        waiting = account.post(order["finalize"], {"csr": csr_for(host)[0]})
        assert waiting.json()["status"] == "processing", waiting.text
    finally:
        env.settings(require_approval=False)
    order["id"] = int(order["url"].rsplit("/", 1)[1])
    return order


def test_no_approval_issues_on_a_deactivated_authorization(env: AcmeEnv, account: Acme) -> None:
    """RFC 8555 7.5.2: "The server MUST NOT treat deactivated authorization objects as
    sufficient for issuing certificates", also while the order waits for an approval. The
    order becomes invalid (7.1.6) and an approval that comes later is refused."""
    host = acme_name()
    order = _waiting_for_approval(env, account, host)
    deactivated = account.post(order["authorizations"][0], {"status": "deactivated"})
    assert deactivated.json()["status"] == "deactivated", deactivated.text
    final = account.get(order["url"]).json()
    assert final["status"] == "invalid" and "certificate" not in final, final
    with env.api() as api:
        refused = api.post(f"{API}/acme/orders/{order['id']}/approve")
        assert refused.status_code in (400, 409), refused.text
    assert _certificates_named(env, host) == 0


def test_no_approval_issues_on_an_expired_order(env: AcmeEnv, account: Acme) -> None:
    """An order that expired while it waited for an approval (RFC 8555 7.1.6: invalid) is
    not issued, even before anything has marked it invalid."""
    host = acme_name()
    order = _waiting_for_approval(env, account, host)
    past = "2001-01-01 00:00:00.000000"
    db(env.server, "UPDATE acme_orders SET expires_at = ? WHERE id = ?", (past, order["id"]))
    with env.api() as api:
        refused = api.post(f"{API}/acme/orders/{order['id']}/approve")
        assert refused.status_code == 409, refused.text
        assert "expired" in error(refused, 409)
    assert _certificates_named(env, host) == 0
    final = account.get(order["url"]).json()  # the read marks it
    assert final["status"] == "invalid" and "certificate" not in final, final


def test_approval_and_management(env: AcmeEnv, account: Acme) -> None:
    env.settings(require_approval=True)
    try:
        host = acme_name()
        order = account.ready_order(host)
        waiting = account.post(order["finalize"], {"csr": csr_for(host)[0]})
        assert waiting.json()["status"] == "processing" and waiting.headers["retry-after"]
        order_id = int(order["url"].rsplit("/", 1)[1])
        with env.api() as api:
            listed = data(api.get(f"{API}/acme/orders", params={"status": "processing"}))
            assert any(o["id"] == order_id and o["awaiting_approval"] for o in listed)
            approved = data(api.post(f"{API}/acme/orders/{order_id}/approve"))
            assert approved["status"] == "valid" and approved["certificate_id"]
            problem_free = api.post(f"{API}/acme/orders/{order_id}/approve")
            assert problem_free.status_code == 400
        assert account.get(order["url"]).json()["status"] == "valid"
    finally:
        env.settings(require_approval=False)
    with env.api() as api:
        stats = data(api.get(f"{API}/acme/stats"))
        assert stats["total_accounts"] >= 1 and stats["valid_orders"] >= 1
        account_id = int((account.kid or "").rsplit("/", 1)[1])
        assert data(api.get(f"{API}/acme/accounts/{account_id}"))["status"] == "valid"
        assert any(a["id"] == account_id for a in data(api.get(f"{API}/acme/accounts")))
        assert data(api.get(f"{API}/acme/orders/{order_id}"))["account_id"] == account_id
        assert "status" in error(api.get(f"{API}/acme/orders", params={"status": "bogus"}), 422)
        # RFC 8555 7.1.2: "revoked" for a deactivation by the server, not the client
        assert data(api.post(f"{API}/acme/accounts/{account_id}/deactivate"))["status"] == "revoked"
        proxy = api.post(f"{API}/acme/proxy/register", json={"email": "a@b.c", "agree_tos": True})
        assert proxy.status_code == 501 and "ACME client" in proxy.json()["message"]
        assert api.patch(f"{API}/acme/settings", json={"issuing_ca_id": 999999}).status_code == 400
        # the issuing CA cannot be deleted from under the settings (its id could be reused)
        spare = create_root(api, unique("ACME Spare"))
        data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": spare["id"]}))
        assert "ACME" in error(api.delete(f"{API}/cas/{spare['id']}"), 409)
        data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": env.ca["id"]}))
        assert api.delete(f"{API}/cas/{spare['id']}").status_code == 204
        assert api.patch(f"{API}/acme/settings", json={"bogus": 1}).status_code == 422
    problem(account.order(acme_name()), "unauthorized", 401)
    with httpx.Client(base_url=env.server.url, verify=env.server.ssl_context()) as anonymous:
        assert anonymous.get(f"{API}/acme/settings").status_code == 401


def test_eab_rules(env: AcmeEnv, acme: Acme) -> None:
    with env.api() as api:
        key = data(api.post(f"{API}/acme/eab", json={"comment": "protocol test"}), 201)
        revoked = data(api.post(f"{API}/acme/eab", json={}), 201)
        data(api.delete(f"{API}/acme/eab/{revoked['id']}"))
    env.settings(require_eab=True)
    try:
        problem(acme.register(), "externalAccountRequired", 400)

        def binding(kid: str, secret: str, jwk: dict, url: str | None = None) -> dict:
            import base64
            import hashlib
            import hmac

            protected = b64(
                json.dumps(
                    {"alg": "HS256", "kid": kid, "url": url or acme.dir["newAccount"]}
                ).encode()
            )
            payload = b64(json.dumps(jwk).encode())
            raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
            mac = hmac.new(raw, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
            return {"protected": protected, "payload": payload, "signature": b64(mac)}

        wrong_mac = binding(key["kid"], b64(b"x" * 32), acme.key.jwk)
        problem(acme.register(externalAccountBinding=wrong_mac), "unauthorized", 403)
        problem(
            acme.register(
                externalAccountBinding=binding(revoked["kid"], revoked["hmac_key"], acme.key.jwk)
            ),
            "unauthorized",
            403,
        )
        other_key = binding(key["kid"], key["hmac_key"], Key().jwk)
        problem(acme.register(externalAccountBinding=other_key), "unauthorized", 403)
        sent = binding(key["kid"], key["hmac_key"], acme.key.jwk)
        good = acme.register(externalAccountBinding=sent)
        assert good.status_code == 201, good.text
        # RFC 8555 7.3.4: the new account echoes the binding as sent; it is not kept after
        assert good.json()["externalAccountBinding"] == sent
        assert "externalAccountBinding" not in acme.get(good.headers["location"]).json()
        with env.api() as api:
            bound = data(
                api.get(f"{API}/acme/accounts/{good.headers['location'].rsplit('/', 1)[1]}")
            )
        assert bound["eab_kid"] == key["kid"]
        second = Acme(env)
        try:
            reused = binding(key["kid"], key["hmac_key"], second.key.jwk)
            problem(second.register(externalAccountBinding=reused), "unauthorized", 403)
        finally:
            second.close()
    finally:
        env.settings(require_eab=False)


def test_nonces_in_redis(tmp_path: Path) -> None:
    """With REDIS_URL, nonces are Redis keys spent by DEL, shared by every process."""
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/14"
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    with acme_env(None, tmp_path, {"REDIS_URL": url}) as env:
        client = Acme(env)
        try:
            nonce = client.nonce()
            assert redis.Redis.from_url(url).exists(f"tessera:acme:nonce:{nonce}")
            body = json.dumps(
                client.jws(client.dir["newAccount"], {"termsOfServiceAgreed": True}, nonce=nonce)
            ).encode()
            assert client.raw(client.dir["newAccount"], body).status_code == 201
            assert not redis.Redis.from_url(url).exists(f"tessera:acme:nonce:{nonce}")
            problem(client.raw(client.dir["newAccount"], body), "badNonce", 400)
        finally:
            client.close()


def test_sqlite_keeps_nonces_in_a_file_of_their_own(tmp_path: Path) -> None:
    """On SQLite, nonces are spent outside the database's write lock: in
    `<database>.acme-nonces`, never as rows of the database's own acme_nonces table."""
    with acme_env(None, tmp_path) as env:
        client = Acme(env)
        try:
            nonce = client.nonce()
            data_dir = env.server.data_dir
            nonces = sqlite3.connect(data_dir / "tessera.db.acme-nonces")
            database = sqlite3.connect(data_dir / "tessera.db")
            try:
                stored = "SELECT count(*) FROM nonces WHERE value = ?"
                assert nonces.execute(stored, (nonce,)).fetchone() == (1,)
                assert database.execute("SELECT count(*) FROM acme_nonces").fetchone() == (0,)
                body = json.dumps(
                    client.jws(
                        client.dir["newAccount"], {"termsOfServiceAgreed": True}, nonce=nonce
                    )
                ).encode()
                assert client.raw(client.dir["newAccount"], body).status_code == 201
                assert nonces.execute(stored, (nonce,)).fetchone() == (0,)
                problem(client.raw(client.dir["newAccount"], body), "badNonce", 400)
            finally:
                nonces.close()
                database.close()
        finally:
            client.close()


def test_signed_endpoints_outside_fastapi_routing_keep_their_answers(account: Acme) -> None:
    """The POST endpoints are dispatched ahead of FastAPI's router (protocols/acme/lane.py):
    unknown ids, other methods and unknown paths still get their answers with the ACME
    headers."""
    problem(account.get(account.url("order/not-a-number")), "malformed", 404)
    problem(account.get(account.url("authz/999999999")), "malformed", 404)
    wrong_method = account.http.get(account.dir["newOrder"])
    assert wrong_method.status_code == 405
    assert wrong_method.headers.get("replay-nonce")
    unknown = account.post(account.url("no-such-endpoint"), {})
    assert unknown.status_code == 404 and unknown.headers.get("replay-nonce")
