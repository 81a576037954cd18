"""RFC 8555 paths clients reach less often, each against the RFC's words: revocation by an
account that holds authorizations, the order's error, contact checks, the account object."""

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.acme_helpers import (
    Acme,
    AcmeEnv,
    Key,
    acme_name,
    b64,
    csr_for,
    needs_challtestsrv,
    nonce_store_away,
    problem,
    registered,
    table_away,
)
from tests.e2e.helpers import API, data

pytestmark = needs_challtestsrv


@pytest.fixture
def account(env: AcmeEnv) -> Iterator[Acme]:
    with registered(env, contact=["mailto:ops@example.org"]) as client:
        yield client


@pytest.fixture
def other(env: AcmeEnv) -> Iterator[Acme]:
    with registered(env) as client:
        yield client


def issued(account: Acme, *hosts: str) -> tuple[str, x509.Certificate]:
    """A certificate for the hosts: its ACME URL and the certificate."""
    order = account.ready_order(*hosts)
    done = account.post(order["finalize"], {"csr": csr_for(*hosts)[0]}).json()
    pem = account.get(done["certificate"]).content
    return done["certificate"], x509.load_pem_x509_certificates(pem)[0]


def der64(cert: x509.Certificate) -> str:
    return b64(cert.public_bytes(Encoding.DER))


def crl_reason(cert: x509.Certificate, expected: x509.ReasonFlags) -> x509.ReasonFlags | None:
    """The reason the CRL at the certificate's distribution point gives for it, once it is
    `expected` or after 10 s of waiting for it (None: not listed, or listed without a
    reason). A CRL published for an earlier change (a hold) may be the one served first, and
    a new CA's first CRL may still be on its way (503, Retry-After)."""
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = cdp[0].full_name[0].value
    seen: x509.ReasonFlags | None = None
    for _ in range(40):
        response = httpx.get(url, timeout=10)
        if response.status_code == 503:
            time.sleep(0.25)
            continue
        assert response.status_code == 200, response.text
        crl = x509.load_der_x509_crl(response.content)
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            try:
                seen = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            except x509.ExtensionNotFound:
                seen = None
            if seen == expected:
                return seen
        time.sleep(0.25)
    return seen


def inventory(env: AcmeEnv, cert_url: str) -> dict[str, object]:
    with env.api() as api:
        row: dict[str, object] = data(api.get(f"{API}/certificates/{cert_url.rsplit('/', 1)[1]}"))
    return row


# --- revocation (RFC 8555 7.6) ------------------------------------------------------------


def test_an_account_with_authorizations_for_every_name_may_revoke(
    env: AcmeEnv, account: Acme, other: Acme
) -> None:
    """RFC 8555 7.6: "The server MUST consider at least the following accounts authorized
    for a given certificate: the account that issued the certificate; an account that holds
    authorizations for all of the identifiers in the certificate." """
    first, second = acme_name(), acme_name()
    cert_url, cert = issued(account, first, second)
    revoke = other.dir["revokeCert"]
    problem(other.post(revoke, {"certificate": der64(cert)}), "unauthorized", 403)
    assert other.ready_order(first)["status"] == "ready"  # one name of two is not enough
    problem(other.post(revoke, {"certificate": der64(cert)}), "unauthorized", 403)
    assert other.ready_order(second)["status"] == "ready"
    done = other.post(revoke, {"certificate": der64(cert), "reason": 4})
    assert done.status_code == 200, done.text
    row = inventory(env, cert_url)
    assert row["status"] == "revoked" and row["revocation_reason"] == "superseded"
    reason = x509.ReasonFlags.superseded
    assert crl_reason(cert, reason) == reason
    problem(other.post(revoke, {"certificate": der64(cert)}), "alreadyRevoked", 400)


def test_deactivated_authorizations_do_not_authorize_a_revocation(
    account: Acme, other: Acme
) -> None:
    host = acme_name()
    _, cert = issued(account, host)
    order = other.ready_order(host)
    authz = order["authorizations"][0]
    assert other.post(authz, {"status": "deactivated"}).status_code == 200
    problem(other.post(other.dir["revokeCert"], {"certificate": der64(cert)}), "unauthorized", 403)


def test_a_revocation_is_verified_before_its_certificate_is_looked_up(account: Acme) -> None:
    """RFC 8555 6.2: a JWS whose signature does not verify is refused as such, whatever the
    certificate it names (here one this server never issued)."""
    body = account.jws(
        account.dir["revokeCert"], {"certificate": b64(b"\x30\x03\x02\x01\x01")}, use_jwk=True
    )
    body["signature"] = b64(b"\x00" * 64)
    refused = problem(account.raw(account.dir["revokeCert"], _json(body)), "malformed", 400)
    assert "signature" in refused["detail"]


def test_a_held_certificate_can_be_revoked_for_good(env: AcmeEnv, account: Acme) -> None:
    """A certificateHold is not final (RFC 5280 5.3.1): its subscriber may still revoke it,
    e.g. as keyCompromise; it is not alreadyRevoked."""
    cert_url, cert = issued(account, acme_name())
    cert_id = cert_url.rsplit("/", 1)[1]
    with env.api() as api:
        hold = {"reason": "certificateHold"}
        data(api.post(f"{API}/certificates/{cert_id}/revoke", json=hold))
    done = account.post(account.dir["revokeCert"], {"certificate": der64(cert), "reason": 1})
    assert done.status_code == 200, done.text
    row = inventory(env, cert_url)
    assert row["status"] == "revoked" and row["revocation_reason"] == "keyCompromise"
    reason = x509.ReasonFlags.key_compromise
    assert crl_reason(cert, reason) == reason


def test_racing_revocations_revoke_once_and_the_others_are_already_revoked(
    account: Acme,
) -> None:
    _, cert = issued(account, acme_name())
    bodies = [
        account.jws(account.dir["revokeCert"], {"certificate": der64(cert)}) for _ in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: account.raw(account.dir["revokeCert"], _json(b)), bodies))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 7, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code != 200):
        problem(refused, "alreadyRevoked", 400)


def _json(body: dict[str, str]) -> bytes:
    return json.dumps(body).encode()


# --- the order object (RFC 8555 7.1.3) ------------------------------------------------------


def test_an_order_made_invalid_by_a_failed_challenge_says_why(account: Acme) -> None:
    """RFC 8555 7.1.3 "error": the order carries the problem that made it invalid, for the
    identifier concerned (lego, for one, reports an invalid order by this field)."""
    host = acme_name()
    created = account.order(host)
    order_url = created.headers["location"]
    authz = account.get(created.json()["authorizations"][0]).json()
    http01 = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert account.post(http01["url"], {}).status_code == 200  # nothing serves the token
    order = account.wait(order_url, ("ready", "invalid"))
    assert order["status"] == "invalid", order
    failed = account.get(http01["url"]).json()["error"]
    error = order["error"]
    assert error["type"] == failed["type"] and host in error["detail"], error
    assert error["subproblems"][0]["identifier"] == {"type": "dns", "value": host}, error
    assert "certificate" not in order


def test_an_order_whose_authorization_was_deactivated_says_why(account: Acme) -> None:
    host = f"*.{acme_name()}"
    order = account.ready_order(host)
    assert account.post(order["authorizations"][0], {"status": "deactivated"}).status_code == 200
    invalid = account.get(order["url"]).json()
    assert invalid["status"] == "invalid", invalid
    error = invalid["error"]
    assert error["type"] == "urn:ietf:params:acme:error:unauthorized", error
    assert error["subproblems"][0]["identifier"] == {"type": "dns", "value": host}, error
    problem(account.post(order["finalize"], {"csr": csr_for(host)[0]}), "orderNotReady", 403)


# --- the account object (RFC 8555 7.1.2, 7.3) --------------------------------------------

BAD_ADDRESSES = [
    "mailto:ops@example.org@example.net",
    "mailto:@example.org",
    "mailto:ops@",
    "mailto:ops",
    "mailto:ops@exa_mple.org",
    "mailto:ops@example.org\n",
    "mailto:ops@example.org?subject=hello",
    "mailto:ops@example.org,dev@example.org",
    "mailto:" + "a" * 250 + "@example.org",
]


@pytest.mark.parametrize("contact", BAD_ADDRESSES)
def test_a_mailto_contact_that_is_not_one_address_is_invalid(
    env: AcmeEnv, account: Acme, contact: str
) -> None:
    """RFC 8555 7.3: "If the server rejects a contact URL for using a supported scheme but an
    invalid value, then the server MUST return an error of type invalidContact"; no account
    is created, and an update leaves the contacts as they were."""
    fresh = Acme(env)
    try:
        problem(fresh.register(contact=[contact]), "invalidContact", 400)
        gone = fresh.post(fresh.dir["newAccount"], {"onlyReturnExisting": True}, use_jwk=True)
        problem(gone, "accountDoesNotExist", 400)
    finally:
        fresh.close()
    problem(account.post(account.kid or "", {"contact": [contact]}), "invalidContact", 400)
    assert account.get(account.kid or "").json()["contact"] == ["mailto:ops@example.org"]


def test_contact_schemes(account: Acme) -> None:
    """A scheme other than mailto is unsupportedContact; mailto in capitals is mailto (URI
    schemes are case-insensitive, RFC 3986 3.1)."""
    for contact in ("tel:+15555550100", "https://example.org/ops", "ops@example.org"):
        problem(account.post(account.kid or "", {"contact": [contact]}), "unsupportedContact", 400)
    updated = account.post(account.kid or "", {"contact": ["MAILTO:Ops@Example.org"]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["contact"] == ["mailto:Ops@Example.org"]


def test_an_account_update_changes_the_contacts_and_ignores_the_rest(env: AcmeEnv) -> None:
    """RFC 8555 7.3.2: the server "MUST ignore any updates to the "orders" field,
    "termsOfServiceAgreed" field ..., the "status" field (except as allowed by Section
    7.3.6), or any other fields it does not recognize", and answers 200 with the account."""
    with registered(env, termsOfServiceAgreed=False) as client:
        before = client.get(client.kid or "").json()
        assert before["termsOfServiceAgreed"] is False
        change = {
            "contact": ["mailto:new@example.org"],
            "status": "revoked",
            "termsOfServiceAgreed": True,
            "orders": "https://elsewhere.example/orders",
            "unknownField": 1,
        }
        updated = client.post(client.kid or "", change)
        assert updated.status_code == 200, updated.text
        after = client.get(client.kid or "").json()
        assert after == {**before, "contact": ["mailto:new@example.org"]}
        assert updated.json() == after
        assert client.post(client.kid or "", {"status": "valid"}).json() == after


def test_a_not_after_before_the_not_before_is_refused(account: Acme) -> None:
    now = datetime.now(UTC)
    stamps = {
        "notBefore": (now + timedelta(minutes=4)).isoformat(),
        "notAfter": (now + timedelta(minutes=2)).isoformat(),
    }
    refused = problem(account.order(acme_name(), **stamps), "malformed", 400)
    assert "notAfter" in refused["detail"]


# --- challenges (RFC 8555 7.5.1) -----------------------------------------------------------


def test_a_valid_authorization_still_lists_a_challenge_that_failed(
    env: AcmeEnv, account: Acme
) -> None:
    """http-01 (nothing listens on the validation port: retried, then invalid) and dns-01
    (valid) answered together: the authorization is valid, and RFC 8555 7.5.1 says the server
    "SHOULD NOT remove challenges with status invalid" when it finalizes it."""
    host = acme_name()
    created = account.order(host)
    authz_url = created.json()["authorizations"][0]
    challenges = {c["type"]: c for c in account.get(authz_url).json()["challenges"]}
    key_auth = f"{challenges['dns-01']['token']}.{account.key.thumbprint()}"
    env.dns.set_txt(f"_acme-challenge.{host}", b64(hashlib.sha256(key_auth.encode()).digest()))
    assert account.post(challenges["http-01"]["url"], {}).status_code == 200
    assert account.post(challenges["dns-01"]["url"], {}).status_code == 200
    account.wait(authz_url, ("valid",))
    failed = account.wait(challenges["http-01"]["url"], ("invalid",))
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:connection", failed
    shown = {c["type"]: c["status"] for c in account.get(authz_url).json()["challenges"]}
    assert shown == {"dns-01": "valid", "http-01": "invalid"}, shown


# --- POST-as-GET (RFC 8555 6.3) -----------------------------------------------------------


def test_resources_only_fetched_refuse_a_payload(account: Acme) -> None:
    """A fetch is a POST-as-GET, whose "payload" field "MUST be present and set to the empty
    string" (RFC 8555 6.3): an order, the orders list or a certificate given a JSON payload
    is refused as malformed, not answered as if it were a fetch."""
    host = acme_name()
    cert_url, _ = issued(account, host)
    order_url = account.get(account.kid + "/orders").json()["orders"][0]
    for url in (order_url, account.kid + "/orders", cert_url, cert_url + "/1"):
        refused = problem(account.post(url, {}), "malformed", 400)
        assert "empty payload" in refused["detail"], refused
        assert account.get(url).status_code == 200


# --- identifiers (RFC 8555 7.1.4) ----------------------------------------------------------


def dns_order(account: Acme, *values: str) -> httpx.Response:
    identifiers = [{"type": "dns", "value": v} for v in values]
    return account.post(account.dir["newOrder"], {"identifiers": identifiers})


@pytest.mark.parametrize("value", ["*.10.0.0.1", "127.1", "10.1", "host.123"])
def test_a_dns_name_ending_in_digits_is_no_name(account: Acme, value: str) -> None:
    """A dns identifier is the name as a certificate has it (RFC 8555 7.1.4), in RFC 5280
    4.2.1.6's preferred name syntax, whose top-level label is never all digits (RFC 1123
    2.1): a wildcard over an address, or an address in a short form, is no DNS name."""
    refused = problem(dns_order(account, value), "rejectedIdentifier", 400)
    assert refused["subproblems"][0]["identifier"] == {"type": "dns", "value": value}


def test_digits_elsewhere_in_a_dns_name_are_fine(account: Acme) -> None:
    host = acme_name()
    created = dns_order(account, f"10.0.0.1.{host}", f"*.1.{host}", f"123.{host}")
    assert created.status_code == 201, created.text


# --- renewal information (RFC 9773) --------------------------------------------------------


def test_renewal_information_explains_with_the_website_only(env: AcmeEnv, account: Acme) -> None:
    """RFC 9773 4.2: explanationURL is "a page which may explain why the suggested renewal
    window has its current value": the operator's website when set, never the JSON
    directory; absent otherwise."""
    cert_url, cert = issued(account, acme_name())
    with env.api() as api:
        data(api.post(f"{API}/acme/renewal/{cert_url.rsplit('/', 1)[1]}"))
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number.to_bytes(cert.serial_number.bit_length() // 8 + 1, "big")
    ari = f"{account.dir['renewalInfo']}/{b64(aki.key_identifier or b'')}.{b64(serial)}"
    moved = account.http.get(ari)
    window = moved.json()["suggestedWindow"]
    assert window["start"] < window["end"] and int(moved.headers["retry-after"]) > 0
    assert "explanationURL" not in moved.json(), moved.json()
    env.settings(website="https://pki.example.org/renewals")
    try:
        explained = account.http.get(ari).json()
        assert explained["explanationURL"] == "https://pki.example.org/renewals"
    finally:
        env.settings(website=None)


# --- request authentication (RFC 8555 6.2) ------------------------------------------------


def test_a_kid_that_is_not_exactly_the_account_url_names_no_account(account: Acme) -> None:
    """RFC 8555 6.2: the kid "MUST contain the account URL received by POSTing to the
    newAccount resource". Another spelling of the account's number is no URL this server gave
    out: the account it would name does not exist, and nothing is done to the real one."""
    kid = account.kid or ""
    prefix, number = kid.rsplit("/", 1)
    orders = f"{kid}/orders"
    before = account.get(orders).json()["orders"]
    for spelling in (f"{prefix}/0{number}", f"{prefix}/{number:0>12}"):
        update = {"contact": ["mailto:intruder@example.org"]}
        problem(account.post(kid, update, header={"kid": spelling}), "accountDoesNotExist", 400)
        ordered = account.post(
            account.dir["newOrder"],
            {"identifiers": [{"type": "dns", "value": acme_name()}]},
            header={"kid": spelling},
        )
        problem(ordered, "accountDoesNotExist", 400)
    assert account.get(kid).json()["contact"] == ["mailto:ops@example.org"]
    assert account.get(orders).json()["orders"] == before


# --- finalize (RFC 8555 7.4, 11.1) --------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "EdDSA"])
def test_a_csr_with_any_accounts_key_is_refused(env: AcmeEnv, account: Acme, alg: str) -> None:
    """RFC 8555 11.1: "ACME clients and servers MUST verify that a CSR submitted in a finalize
    request does not contain a public key for any known account key pair" (and "the public
    key of an account key pair MUST NOT be included in a certificate"): another account's
    key is badCSR too, whatever its type, and the order stays ready."""
    stranger = Acme(env)
    try:
        stranger.key = Key(alg)
        assert stranger.register().status_code == 201
        host = acme_name()
        order = account.ready_order(host)
        theirs, _ = csr_for(host, key=stranger.key.private)
        refused = problem(account.post(order["finalize"], {"csr": theirs}), "badCSR", 400)
        assert "account" in refused["detail"]
        assert account.get(order["url"]).json()["status"] == "ready"
        # the account deactivated, its key is still an account key
        assert stranger.post(stranger.kid or "", {"status": "deactivated"}).status_code == 200
        problem(account.post(order["finalize"], {"csr": theirs}), "badCSR", 400)
        done = account.post(order["finalize"], {"csr": csr_for(host)[0]})
        assert done.status_code == 200, done.text
    finally:
        stranger.close()


# --- errors (RFC 8555 6.5, 6.7) -----------------------------------------------------------


def test_nonces_handed_out_after_the_nonce_store_failed_are_usable(account: Acme) -> None:
    """A batch of nonces the server failed to store is not handed out once the store is back
    (RFC 8555 6.5: a nonce given in Replay-Nonce is one the server will accept): every signed
    request with a fresh nonce would have been a badNonce, the retry's nonce too."""
    context = account.env.server.ssl_context()
    with nonce_store_away(account.env):
        # a connection each: the server closes one after an error it could not answer itself
        answers = [httpx.get(account.dir["newNonce"], verify=context) for _ in range(40)]
    refused = [a for a in answers if a.status_code != 204]
    assert refused, [a.status_code for a in answers]
    for answer in refused:  # no nonce to give: a problem to retry, not a bare 500
        assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
        assert answer.json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    for _ in range(3):
        fetched = account.get(account.kid or "")
        assert fetched.status_code == 200, fetched.text


def test_an_internal_error_is_a_problem_with_a_fresh_nonce(env: AcmeEnv, account: Acme) -> None:
    """RFC 8555 6.5/6.7: an unexpected failure is still an RFC 7807 serverInternal problem,
    with a Replay-Nonce the client can go on with and the index link; the order it was
    creating is not left half-written."""
    orders = f"{account.kid}/orders"
    before = account.get(orders).json()["orders"]
    payload = {"identifiers": [{"type": "dns", "value": acme_name()}]}
    with table_away(env, "acme_challenges"):  # the order and authorization rows come first
        failed = account.post(account.dir["newOrder"], payload)
    body = problem(failed, "serverInternal", 500)
    assert body["status"] == 500 and "acme_challenges" not in body["detail"], body
    index = f'<{account.dir["newNonce"].rsplit("/", 1)[0]}/directory>;rel="index"'
    assert index in failed.headers.get_list("link"), failed.headers
    assert account.get(orders).json()["orders"] == before
    retried = account.post(account.dir["newOrder"], payload, nonce=failed.headers["replay-nonce"])
    assert retried.status_code == 201, retried.text


# --- key rollover (RFC 8555 7.3.5) ----------------------------------------------------------


def key_change(client: Acme, new_key: Key) -> dict[str, str]:
    """A key-change request (the outer JWS) moving the client's account to new_key."""
    inner = client.jws(
        client.dir["keyChange"],
        {"account": client.kid, "oldKey": client.key.jwk},
        key=new_key,
        use_jwk=True,
        header={"nonce": None},
    )
    return client.jws(client.dir["keyChange"], inner)


def test_a_new_key_another_account_has_is_a_conflict_naming_it(account: Acme, other: Acme) -> None:
    """RFC 8555 7.3.5: "If there is an existing account with the new key provided, then the
    server SHOULD use status code 409 (Conflict) and provide the URL of that account in the
    Location header field"; the account keeps its key."""
    refused = account.raw(account.dir["keyChange"], _json(key_change(account, other.key)))
    assert refused.status_code == 409, refused.text
    assert refused.headers["location"] == other.kid
    assert account.get(account.kid or "").status_code == 200  # still its old key


def at_once(env: AcmeEnv, requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """The signed requests (url, body), each on a connection of its own, released together."""
    start = threading.Barrier(len(requests))

    def send(request: tuple[str, bytes]) -> httpx.Response:
        with httpx.Client(verify=env.server.ssl_context(), timeout=60) as http:
            start.wait()
            headers = {"Content-Type": "application/jose+json"}
            return http.post(request[0], content=request[1], headers=headers)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_racing_rollovers_to_one_key_give_it_to_one_account(env: AcmeEnv) -> None:
    """Two accounts rolling over to the same new key at once: one gets it, the other the same
    409 with the winner's URL as when it comes second, never a 500 or a 409 without it."""
    clients = [Acme(env) for _ in range(2)]
    try:
        for client in clients:
            assert client.register().status_code == 201
        for _ in range(4):
            new_key = Key()
            requests = [(c.dir["keyChange"], _json(key_change(c, new_key))) for c in clients]
            answers = at_once(env, requests)
            won = [c for c, a in zip(clients, answers, strict=True) if a.status_code == 200]
            assert len(won) == 1, [(a.status_code, a.text) for a in answers]
            winner = won[0]
            for client, answer in zip(clients, answers, strict=True):
                if client is not winner:
                    assert answer.status_code == 409, answer.text
                    assert answer.headers["location"] == winner.kid, answer.headers
                    assert answer.json()["type"].startswith("urn:ietf:params:acme:error:")
            winner.key = new_key
            for client in clients:  # each signs with the key it holds now
                assert client.get(client.kid or "").status_code == 200
    finally:
        for client in clients:
            client.close()
