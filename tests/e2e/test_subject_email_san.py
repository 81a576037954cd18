"""A subject emailAddress is signed as an rfc822Name SAN too (core/profile.py
`with_subject_emails`): the inventory's row names the SANs the certificate carries, so the
listing's `san` and the search find the address as they find any other SAN."""

from typing import Any

import httpx
from cryptography import x509

from tests.e2e.helpers import API, cert_of, create_root, data, issue, unique


def test_the_inventory_lists_the_email_san_the_subject_adds(api: httpx.Client) -> None:
    root = create_root(api, unique("Email SAN Root"))
    mailbox = f"{unique('mbox').lower()}@example.com"
    issued = issue(api, root["id"], "person.example.com", email=mailbox)
    shown: dict[str, Any] = data(api.get(f"{API}/certificates/{issued['id']}"))
    sans = cert_of(shown["pem"]).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert mailbox in sans.value.get_values_for_type(x509.RFC822Name)  # signed
    listed = api.get(f"{API}/certificates", params={"ca_id": root["id"]}).json()["data"]
    assert [c["san"] for c in listed] == [["dns:person.example.com", f"email:{mailbox}"]]
    found = api.get(f"{API}/certificates", params={"search": mailbox}).json()["data"]
    assert [c["id"] for c in found] == [issued["id"]]
