"""A CA signs only within its own validity (core/authority.py): one not valid yet (imported
dated ahead) or expired is refused with 409 on every native path that issues, the leaf
never shortened to fit, and nothing written."""

from datetime import timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import (
    API,
    create_root,
    data,
    error,
    import_ca_file,
    issue,
    self_signed_ca,
    unique,
)


def imported_ca(api: httpx.Client, lifetime: timedelta, started: timedelta) -> dict[str, Any]:
    """A root imported with its key, valid from `started` ago (negative: ahead) until
    `lifetime` from now (negative: it has expired)."""
    cert, key = self_signed_ca(unique("Validity Root"), lifetime, started)
    bundle = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca: dict[str, Any] = data(import_ca_file(api, bundle, "root.pem"), 201)
    return ca


def csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def certificate_total(api: httpx.Client) -> int:
    return int(data(api.get(f"{API}/certificates/stats"))["total"])


def refusals(api: httpx.Client, ca_id: int) -> list[str]:
    """The 409 message of every native path that issues, each asked to sign with `ca_id`:
    a new certificate (key made here, and from a CSR), a CSR signed from the inventory, an
    intermediate, a renewal under that CA; and bulk renewal's per-item failure."""
    host = f"{unique('host')}.example.com"
    leaf = {"common_name": host, "ca_id": ca_id, "key_algorithm": "EC", "key_size": 256}
    messages = [error(api.post(f"{API}/certificates", json=leaf), 409)]
    from_csr = {"csr": csr_pem(host), "ca_id": ca_id}
    messages.append(error(api.post(f"{API}/certificates", json=from_csr), 409))
    stored = data(api.post(f"{API}/csrs", json={"csr": csr_pem(host)}), 201)
    messages.append(error(api.post(f"{API}/csrs/{stored['id']}/sign", json={"ca_id": ca_id}), 409))
    sub = {
        "common_name": unique("Validity Sub"),
        "ca_type": "intermediate",
        "parent_id": ca_id,
        "key_algorithm": "EC",
        "key_size": 256,
        "validity_days": 30,
    }
    messages.append(error(api.post(f"{API}/cas", json=sub), 409))
    elsewhere = create_root(api, unique("Valid Root"))
    old = issue(api, elsewhere["id"], host)
    renew = {"ca_id": ca_id}
    messages.append(error(api.post(f"{API}/certificates/{old['id']}/renew", json=renew), 409))
    bulk = data(api.post(f"{API}/certificates/bulk/renew", json={"ids": [old["id"]], **renew}))
    assert (bulk["success"], bulk["failed"]) == ([], [old["id"]]), bulk
    messages.append(bulk["errors"][0]["error"])
    return messages


def test_a_ca_not_valid_yet_signs_nothing(api: httpx.Client) -> None:
    ca = imported_ca(api, timedelta(days=365), -timedelta(days=2))
    before = certificate_total(api)
    messages = refusals(api, ca["id"])
    expected = f"the issuing CA 'CN={ca['common_name']}' is not valid until {ca['valid_from']}"
    assert messages == [expected] * len(messages), messages
    # The one leaf written is the renewal's original, issued by another CA for the purpose.
    assert certificate_total(api) == before + 1
    assert data(api.get(f"{API}/certificates", params={"ca_id": ca["id"]})) == []


def test_an_expired_ca_is_refused_the_same_way(api: httpx.Client) -> None:
    ca = imported_ca(api, -timedelta(days=1), timedelta(days=30))
    messages = refusals(api, ca["id"])
    expected = f"the issuing CA 'CN={ca['common_name']}' expired on {ca['valid_until']}"
    assert messages == [expected] * len(messages), messages
