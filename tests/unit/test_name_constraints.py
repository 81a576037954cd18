"""The issuer's name constraints (RFC 5280 4.2.1.10) as the lint applies them."""

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tessera.core import name_constraints
from tessera.core.errors import PolicyViolation
from tessera.core.names import parse_san

CONSTRAINTS = x509.NameConstraints(
    permitted_subtrees=[
        x509.DNSName("example.com"),
        x509.DNSName(".example.net"),
        x509.IPAddress(ipaddress.ip_network("192.0.2.0/24")),
        x509.RFC822Name("example.com"),
        x509.RFC822Name("boss@example.org"),
        x509.UniformResourceIdentifier(".example.com"),
        x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])),
    ],
    excluded_subtrees=[x509.DNSName("bad.example.com")],
)


def subject(cn: str, country: str = "DE", email: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    if email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


@pytest.mark.parametrize(
    "sans",
    [
        ["dns:example.com"],
        ["dns:www.example.com", "dns:*.api.example.com"],
        ["dns:a.b.example.net"],
        ["ip:192.0.2.200"],
        ["email:anyone@example.com", "email:boss@example.org"],
        ["uri:https://api.example.com/x"],
    ],
)
def test_names_inside_pass(sans: list[str]) -> None:
    name_constraints.check(CONSTRAINTS, subject("service"), [parse_san(s) for s in sans])


def test_directory_names_compare_as_verifiers_do() -> None:
    """Case and runs of spaces aside, as OpenSSL's canonical encoding compares them."""
    organization = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example  Corp")])
    constraints = x509.NameConstraints([x509.DirectoryName(organization)], None)
    inside = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "service"),
        ]
    )
    name_constraints.check(constraints, inside, [])
    with pytest.raises(PolicyViolation, match="name constraints"):
        name_constraints.check(constraints, subject("service"), [])


@pytest.mark.parametrize(
    ("cn", "country", "sans", "email"),
    [
        ("service", "DE", ["dns:example.com.evil.org"], None),
        ("service", "DE", ["dns:notexample.com"], None),
        ("service", "DE", ["dns:example.net"], None),  # ".example.net": below it only
        ("service", "DE", ["dns:x.bad.example.com"], None),
        ("service", "DE", ["ip:192.0.3.1"], None),
        ("service", "DE", ["ip:2001:db8::1"], None),  # iPAddress is permitted IPv4 alone
        ("service", "DE", ["email:a@sub.example.com"], None),
        ("service", "DE", ["email:other@example.org"], None),
        ("service", "DE", ["uri:https://example.com/"], None),
        ("service", "US", [], None),  # the subject outside the directoryName subtree
        ("service", "DE", [], "someone@elsewhere.test"),  # emailAddress in the subject
        ("www.other.org", "DE", ["ip:192.0.2.1"], None),  # a host-like CN without dNSName
        # a wildcard that could stand for bad.example.com (as browsers judge it)
        ("service", "DE", ["dns:*.example.com"], None),
        ("service", "DE", ["uri:urn:uuid:0d6c5f1e-7d32-4b8a-9b0e-2f0c5b0a1e11"], None),  # no host
        ("service", "DE", ["uri:https://[x/"], None),  # unreadable: refused, never a 500
    ],
)
def test_names_outside_are_refused(
    cn: str, country: str, sans: list[str], email: str | None
) -> None:
    with pytest.raises(PolicyViolation, match="name constraints"):
        name_constraints.check(
            CONSTRAINTS, subject(cn, country, email), [parse_san(s) for s in sans]
        )


def test_a_cas_common_name_is_no_host_name() -> None:
    """OpenSSL holds a host-like CN to DNS constraints on end entities only: a sub-CA named
    like a host is not refused for it."""
    constraints = x509.NameConstraints([x509.DNSName("example.com")], None)
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuing.ca.internal")])
    name_constraints.check(constraints, ca_subject, [], is_ca=True)
    with pytest.raises(PolicyViolation):
        name_constraints.check(constraints, ca_subject, [], is_ca=False)


def test_a_mailbox_without_an_at_is_refused_under_email_constraints() -> None:
    constraints = x509.NameConstraints(None, [x509.RFC822Name("bad.example")])
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "nobody")])
    with pytest.raises(PolicyViolation):
        name_constraints.check(constraints, name, [])
