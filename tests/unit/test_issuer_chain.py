"""The constraints of the whole issuer chain (RFC 5280 6.1), combined as a relying party
combines them: permitted subtrees intersected, excluded ones unioned, path lengths counting
every CA below them that is not self-issued."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tessera.core.authority import Authority, Issuer
from tessera.core.errors import PolicyViolation
from tessera.core.issuer_chain import IssuerChain, path_room
from tessera.core.names import parse_san
from tessera.core.profile import CertificateRequest
from tests.unit.test_core import Ledger, leaf_request

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.now(UTC).replace(microsecond=0)


def dn(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def ca(
    subject: x509.Name,
    issuer: x509.Certificate | None = None,
    path_length: int | None = None,
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A CA certificate; the chain is judged by its extensions, not its signatures."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    )
    if permitted or excluded:
        builder = builder.add_extension(x509.NameConstraints(permitted, excluded), critical=True)
    return builder.sign(KEY, hashes.SHA256())


def chain(*certificates: x509.Certificate) -> IssuerChain:
    """Issuer first, as the issuance path hands it over."""
    return IssuerChain(tuple(reversed(certificates)))


def leaf(*sans: str, subject: x509.Name | None = None) -> CertificateRequest:
    return CertificateRequest(
        subject=subject or dn("service"),
        public_key=KEY.public_key(),
        sans=tuple(parse_san(s) for s in sans),
    )


def sub_ca(path_length: int | None = None, subject: x509.Name | None = None) -> CertificateRequest:
    return CertificateRequest(
        subject=subject or dn("Sub CA"),
        public_key=KEY.public_key(),
        is_ca=True,
        path_length=path_length,
    )


# Name constraints


def test_a_roots_permitted_subtree_holds_below_an_unconstrained_intermediate() -> None:
    root = ca(dn("Root"), permitted=[x509.DNSName("example.com")])
    issuing = chain(root, ca(dn("Issuing"), root))
    issuing.check(leaf("dns:www.example.com"))
    with pytest.raises(PolicyViolation, match=r"ancestor CA .*CN=Root.*dns:www\.other\.org"):
        issuing.check(leaf("dns:www.other.org"))


def test_permitted_subtrees_intersect() -> None:
    """Each CA's permitted subtrees of a type must hold: example.com and other.org below a
    root that permits example.com leaves example.com alone; disjoint ones leave nothing."""
    root = ca(dn("Root"), permitted=[x509.DNSName("example.com")])
    inter = ca(dn("Issuing"), root, permitted=[x509.DNSName("other.org"), x509.DNSName("com")])
    issuing = chain(root, inter)
    issuing.check(leaf("dns:a.example.com"))  # within example.com and within com
    with pytest.raises(PolicyViolation, match=r"not within its permitted dns:example\.com"):
        issuing.check(leaf("dns:a.other.org"))
    disjoint = chain(root, ca(dn("Issuing"), root, permitted=[x509.DNSName("other.org")]))
    for name in ("dns:a.example.com", "dns:a.other.org"):
        with pytest.raises(PolicyViolation, match="name constraints"):
            disjoint.check(leaf(name))
    disjoint.check(leaf("ip:192.0.2.1"))  # no constraint on addresses anywhere


def test_excluded_subtrees_unite() -> None:
    root = ca(dn("Root"), excluded=[x509.DNSName("a.example.com")])
    inter = ca(dn("Issuing"), root, excluded=[x509.DNSName("b.example.com")])
    issuing = chain(root, inter)
    issuing.check(leaf("dns:c.example.com"))
    with pytest.raises(PolicyViolation, match=r"ancestor CA.*excluded dns:a\.example\.com"):
        issuing.check(leaf("dns:x.a.example.com"))
    with pytest.raises(PolicyViolation, match=r"issuing CA do not.*excluded dns:b\.example\.com"):
        issuing.check(leaf("dns:b.example.com"))


def test_an_ancestors_exclusion_cuts_into_a_lower_permission() -> None:
    net = ipaddress.ip_network
    root = ca(dn("Root"), excluded=[x509.IPAddress(net("192.0.2.128/25"))])
    inter = ca(dn("Issuing"), root, permitted=[x509.IPAddress(net("192.0.2.0/24"))])
    issuing = chain(root, inter)
    issuing.check(leaf("ip:192.0.2.1"))
    with pytest.raises(PolicyViolation, match=r"excluded ip:192\.0\.2\.128/25"):
        issuing.check(leaf("ip:192.0.2.200"))


def test_a_directory_name_constraint_holds_for_the_subject_down_the_chain() -> None:
    acme = x509.DirectoryName(x509.Name(dn("x", "Acme").rdns[:2]))
    root = ca(dn("Root", "Acme"), permitted=[acme])
    issuing = chain(root, ca(dn("Issuing", "Acme"), root))
    issuing.check(leaf(subject=dn("device", "Acme")))
    with pytest.raises(PolicyViolation, match="dirName"):
        issuing.check(leaf(subject=dn("device", "Other")))


def test_a_ca_already_outside_its_ancestors_constraints_signs_nothing() -> None:
    acme = x509.DirectoryName(x509.Name(dn("x", "Acme").rdns[:2]))
    root = ca(dn("Root", "Acme"), permitted=[acme])
    issuing = chain(root, ca(dn("Issuing", "Elsewhere"), root))
    with pytest.raises(PolicyViolation, match="issuing CA itself is outside"):
        issuing.check(leaf(subject=dn("device", "Acme")))


def test_the_authority_holds_a_leaf_to_its_issuers_ancestors() -> None:
    root = ca(dn("Root"), permitted=[x509.DNSName("example.com")])
    inter = ca(dn("Issuing"), root)
    issuer = Issuer(inter, KEY, ancestors=(root,))
    Authority().issue(leaf_request(), issuer, Ledger())  # leaf.example.com
    outside = leaf_request(sans=(parse_san("dns:leaf.other.org"),))
    with pytest.raises(PolicyViolation, match="name constraints"):
        Authority().issue(outside, issuer, Ledger())
    Authority().issue(outside, Issuer(inter, KEY), Ledger())  # the ancestor unknown here


# Path length


@pytest.mark.parametrize(
    ("root_limit", "inter_limit", "room"),
    [
        (None, None, None),
        (0, None, -1),  # the intermediate is one CA too many already
        (1, None, 0),
        (2, None, 1),
        (5, 0, 0),  # the issuer's own is the tighter
        (1, 3, 0),  # a looser one below does not widen the root's
    ],
)
def test_path_room_is_the_tightest_along_the_chain(
    root_limit: int | None, inter_limit: int | None, room: int | None
) -> None:
    root = ca(dn("Root"), path_length=root_limit)
    found = path_room(chain(root, ca(dn("Issuing"), root, inter_limit)).certificates)
    assert (found.room if found else None) == room


def test_self_issued_cas_do_not_count() -> None:
    """A root re-keyed under its own name (self-issued) is no step of the path length."""
    root = ca(dn("Root"), path_length=1)
    rekeyed = ca(dn("Root"), root)
    issuing = chain(root, rekeyed)
    found = path_room(issuing.certificates)
    assert found is not None and found.room == 1
    issuing.check(sub_ca(0))


def test_a_sub_ca_needs_room_and_gets_what_is_left() -> None:
    root = ca(dn("Root"), path_length=2)
    issuing = chain(root, ca(dn("Issuing"), root))
    assert issuing.with_default_path_length(sub_ca()).path_length == 0
    issuing.check(sub_ca(0))
    with pytest.raises(PolicyViolation, match=r"at most 0.*CN=Root.*\(2\)"):
        issuing.check(sub_ca(1))
    spent = chain(ca(dn("Root"), path_length=1), ca(dn("Issuing"), root))
    spent.check(leaf("dns:leaf.example.com"))
    with pytest.raises(PolicyViolation, match="allows no further CA"):
        spent.check(sub_ca())


def test_a_chain_too_deep_already_signs_not_even_leaves() -> None:
    root = ca(dn("Root"), path_length=0)
    issuing = chain(root, ca(dn("Issuing"), root))
    with pytest.raises(PolicyViolation, match="exceeded by the CAs below it already"):
        issuing.check(leaf("dns:leaf.example.com"))


# Subjects Tessera names itself


def test_subject_within_keeps_the_preferred_subject_when_allowed() -> None:
    root = ca(dn("Root"), permitted=[x509.DNSName("example.com")])
    preferred = dn("Responder", "Tessera")
    assert chain(root).subject_within(preferred, "Responder") == preferred


def test_subject_within_moves_under_the_issuers_subject() -> None:
    acme = x509.DirectoryName(x509.Name(dn("x", "Acme").rdns[:2]))
    root = ca(dn("Root", "Acme"), permitted=[acme])
    issuing = chain(root, ca(dn("Issuing", "Acme"), root))
    made = issuing.subject_within(dn("Responder", "Tessera"), "Responder")
    assert made == dn("Responder", "Acme")


def test_subject_within_falls_back_to_a_permitted_subtree() -> None:
    devices = x509.DirectoryName(dn("Devices", "Acme"))  # CN in the subtree itself
    root = ca(dn("Root", "Acme"), permitted=[devices])
    made = chain(root).subject_within(dn("Responder", "Tessera"), "Responder")
    assert made.rdns[:3] == devices.value.rdns and made.rdns[-1] == dn("Responder").rdns[-1]
    nowhere = ca(dn("Root", "Acme"), permitted=[devices], excluded=[devices])
    with pytest.raises(PolicyViolation, match="no subject named 'Responder' fits"):
        chain(nowhere).subject_within(dn("Responder", "Tessera"), "Responder")
