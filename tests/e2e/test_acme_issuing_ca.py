"""An issuing CA that cannot issue (disabled, revoked or under a revoked CA, expired, not valid
yet, its key not held here, gone): new-order refuses at once, as when no issuing CA is
configured (503 serverInternal, the reason in the detail), rather than letting the client
prove control of every name for a finalize that can only fail; and finalize, when the CA
stopped being able to issue after the order was made, answers the same way (not `badCSR`:
the CSR is fine), the order staying ready for when an administrator has fixed the CA."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.accounts_helpers import db
from tests.e2e.acme_helpers import Acme, AcmeEnv, acme_name, csr_for, needs_challtestsrv, problem
from tests.e2e.helpers import (
    API,
    create_intermediate,
    create_root,
    data,
    error,
    import_ca_file,
    self_signed_ca,
    unique,
)

pytestmark = needs_challtestsrv


@pytest.fixture
def account(env: AcmeEnv) -> Iterator[Acme]:
    client = Acme(env)
    try:
        assert client.register().status_code == 201
        yield client
    finally:
        client.close()
        env.settings(issuing_ca_id=env.ca["id"], require_approval=False)


def refused(account: Acme, reason: str) -> None:
    """new-order is a 503 serverInternal naming the reason, and writes no order."""
    before = len(account.get(account.kid + "/orders").json()["orders"])
    body = problem(account.order(acme_name()), "serverInternal", 503)
    assert reason in body["detail"], body
    assert len(account.get(account.kid + "/orders").json()["orders"]) == before


def imported(env: AcmeEnv, lifetime: timedelta, started: timedelta, key: bool = True) -> int:
    cert, private = self_signed_ca(unique("Imported ACME Root"), lifetime, started)
    bundle = cert.public_bytes(serialization.Encoding.PEM)
    if key:
        bundle += private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with env.api() as api:
        return int(data(import_ca_file(api, bundle, "root.pem"), 201)["id"])


def chosen_behind_the_settings(env: AcmeEnv, ca_id: int) -> None:
    """The setting made as it was before this CA could no longer be chosen (the settings
    refuse it now): straight in the database, as an older choice stays stored."""
    db(env.server, "UPDATE acme_settings SET issuing_ca_id = ?", (ca_id,))


def test_a_disabled_issuing_ca_refuses_new_orders(env: AcmeEnv, account: Acme) -> None:
    with env.api() as api:
        ca = create_root(api, unique("Disabled ACME Root"))
        env.settings(issuing_ca_id=ca["id"])
        data(api.patch(f"{API}/cas/{ca['id']}", json={"is_active": False}))
    refused(account, f"the issuing CA (CA {ca['id']}) cannot issue: it is disabled")


def test_a_revoked_issuing_ca_or_one_under_a_revoked_ca_refuses_new_orders(
    env: AcmeEnv, account: Acme
) -> None:
    with env.api() as api:
        root = create_root(api, unique("ACME Revocation Root"))
        middle = create_intermediate(api, root["id"], unique("ACME Middle"))
        issuing = create_intermediate(api, middle["id"], unique("ACME Issuing"))
        env.settings(issuing_ca_id=issuing["id"])
        assert account.order(acme_name()).status_code == 201
        data(api.post(f"{API}/cas/{middle['id']}/revoke", json={"reason": "keyCompromise"}))
        refused(account, f"CA {middle['id']} above it was revoked (keyCompromise)")
        data(api.post(f"{API}/cas/{issuing['id']}/revoke", json={"reason": "superseded"}))
    refused(account, f"(CA {issuing['id']}) cannot issue: its certificate was revoked (superseded)")


def test_an_issuing_ca_not_valid_yet_is_refused_when_chosen_and_at_new_order(
    env: AcmeEnv, account: Acme
) -> None:
    ca_id = imported(env, timedelta(days=365), -timedelta(days=1))
    with env.api() as api:
        refusal = error(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": ca_id}), 400)
    assert refusal.startswith(f"CA {ca_id} cannot sign: it is not valid before ")
    chosen_behind_the_settings(env, ca_id)
    refused(account, f"the issuing CA (CA {ca_id}) cannot issue: it is not valid before ")


def test_an_issuing_ca_without_its_key_or_gone_refuses_new_orders(
    env: AcmeEnv, account: Acme
) -> None:
    keyless = imported(env, timedelta(days=365), timedelta(minutes=5), key=False)
    chosen_behind_the_settings(env, keyless)
    refused(account, f"the issuing CA (CA {keyless}) cannot issue: it has no private key here")
    gone = keyless + 100_000
    chosen_behind_the_settings(env, gone)
    refused(account, f"the issuing CA (CA {gone}) no longer exists")


def test_finalize_after_the_issuing_ca_was_disabled_says_why_and_the_order_stays_ready(
    env: AcmeEnv, account: Acme
) -> None:
    with env.api() as api:
        ca = create_root(api, unique("Paused ACME Root"))
        env.settings(issuing_ca_id=ca["id"])
        host = acme_name()
        order = account.ready_order(host)
        assert order["status"] == "ready", order
        data(api.patch(f"{API}/cas/{ca['id']}", json={"is_active": False}))
        csr, _ = csr_for(host)
        body = problem(account.post(order["finalize"], {"csr": csr}), "serverInternal", 503)
        assert body["detail"] == f"the issuing CA (CA {ca['id']}) cannot issue: it is disabled"
        assert account.get(order["url"]).json()["status"] == "ready"
        data(api.patch(f"{API}/cas/{ca['id']}", json={"is_active": True}))
    finalized = account.post(order["finalize"], {"csr": csr})
    assert finalized.status_code == 200, finalized.text
    assert account.wait(order["url"], ("valid", "invalid"))["status"] == "valid"


def test_an_order_awaiting_approval_is_not_queued_and_not_approved_without_a_ca(
    env: AcmeEnv, account: Acme
) -> None:
    """With approvals, finalize refuses before queueing the order; an order queued before the
    CA was disabled is refused to the administrator who approves it (409, the reason), not
    answered with an ACME problem on the management API."""
    with env.api() as api:
        ca = create_root(api, unique("Approval ACME Root"))
        env.settings(issuing_ca_id=ca["id"], require_approval=True)
        waiting, blocked = account.ready_order(acme_name()), account.ready_order(acme_name())
        csr, _ = csr_for(waiting["identifiers"][0]["value"])
        queued = account.post(waiting["finalize"], {"csr": csr})
        assert queued.status_code == 200 and queued.json()["status"] == "processing", queued.text
        data(api.patch(f"{API}/cas/{ca['id']}", json={"is_active": False}))
        other, _ = csr_for(blocked["identifiers"][0]["value"])
        problem(account.post(blocked["finalize"], {"csr": other}), "serverInternal", 503)
        assert account.get(blocked["url"]).json()["status"] == "ready"
        order_id = waiting["url"].rsplit("/", 1)[1]
        message = error(api.post(f"{API}/acme/orders/{order_id}/approve"), 409)
        assert message.endswith(f"the issuing CA (CA {ca['id']}) cannot issue: it is disabled")
        assert account.get(waiting["url"]).json()["status"] == "processing"


def test_an_issuing_ca_that_expired_after_the_order_refuses_finalize_and_new_orders(
    env: AcmeEnv, account: Acme
) -> None:
    """Chosen while valid, the CA expires with an order ready (the settings refuse choosing
    an expired CA, so the test waits for the expiry)."""
    ca_id = imported(env, timedelta(seconds=20), timedelta(minutes=5))
    env.settings(issuing_ca_id=ca_id)
    host = acme_name()
    order = account.ready_order(host)
    assert order["status"] == "ready", order
    with env.api() as api:
        until = data(api.get(f"{API}/cas/{ca_id}"))["valid_until"]
    ends = datetime.fromisoformat(until.replace("Z", "+00:00"))
    time.sleep(max((ends - datetime.now(UTC)).total_seconds(), 0) + 1.5)
    csr, _ = csr_for(host)
    body = problem(account.post(order["finalize"], {"csr": csr}), "serverInternal", 503)
    assert body["detail"].startswith(f"the issuing CA (CA {ca_id}) cannot issue: it expired on ")
    assert account.get(order["url"]).json()["status"] == "ready"
    refused(account, f"the issuing CA (CA {ca_id}) cannot issue: it expired on ")
