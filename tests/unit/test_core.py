"""The core authority on its own: no HTTP, no database."""

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tessera.core.authority import AuditEvent, Authority, Issuer, random_serial
from tessera.core.errors import InvalidInput, IssuerNotValid, PolicyViolation
from tessera.core.formats import pkcs12_bundle
from tessera.core.keys import KeySpec, generate_private_key, parse_key_spec
from tessera.core.keystore import KeyDecryptionError, KeyEncryptor
from tessera.core.names import SubjectFields, parse_san
from tessera.core.profile import CertificateRequest, Template
from tessera.core.revocation import normalize_reason

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Ledger:
    def __init__(self) -> None:
        self.recorded: list[tuple[x509.Certificate, AuditEvent]] = []

    def reserve_serial(self) -> int:
        return random_serial()

    def record(self, certificate: x509.Certificate, event: AuditEvent) -> None:
        self.recorded.append((certificate, event))


def make_root(authority: Authority, days: int = 3650) -> Issuer:
    key = generate_private_key(KeySpec("EC", 256))
    request = CertificateRequest(
        subject=SubjectFields("Unit Root").to_name(),
        public_key=key.public_key(),
        validity_days=days,
        is_ca=True,
    )
    cert = authority.issue(request, Issuer(None, key), Ledger())
    return Issuer(cert, key)


def leaf_request(**overrides: object) -> CertificateRequest:
    key = generate_private_key(KeySpec("EC", 256))
    fields: dict[str, object] = {
        "subject": SubjectFields("leaf.example.com").to_name(),
        "public_key": key.public_key(),
        "sans": (parse_san("dns:leaf.example.com"),),
        "validity_days": 30,
    }
    fields.update(overrides)
    return CertificateRequest(**fields)  # type: ignore[arg-type]


def test_the_serial_comes_from_the_ledger_and_the_issue_is_recorded_once() -> None:
    root = make_root(Authority(clock=lambda: NOW))
    ledger = Ledger()
    ledger.reserve_serial = lambda: 7  # type: ignore[method-assign]
    cert = Authority(clock=lambda: NOW).issue(leaf_request(), root, ledger)
    assert cert.serial_number == 7
    assert len(ledger.recorded) == 1
    assert ledger.recorded[0][1].action == "certificate.issue"


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def test_a_leaf_without_sans_gets_its_host_cn() -> None:
    """For every front end alike (Issuance.issue_certificate applies it to every leaf); a CA,
    a person's name, a single label or SANs asked for are left alone."""
    from tessera.core.profile import with_default_sans

    def defaulted(cn: str, **overrides: object) -> list[x509.GeneralName]:
        request = leaf_request(subject=SubjectFields(cn).to_name(), **{"sans": (), **overrides})
        return list(with_default_sans(request).sans)

    assert defaulted("leaf.example.com") == [x509.DNSName("leaf.example.com")]
    assert defaulted("192.0.2.1") == [x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    for cn in ("Alice Example", "device-42"):
        assert defaulted(cn) == []
    assert defaulted("ca.example.com", is_ca=True) == []
    asked = (parse_san("dns:other.example"),)
    assert defaulted("leaf.example.com", sans=asked) == list(asked)
    root = make_root(Authority(clock=lambda: NOW))
    signed = Authority(clock=lambda: NOW).issue(leaf_request(sans=()), root, Ledger())
    assert _sans(signed) == []  # the authority signs the names as given


def test_random_serials_are_positive_and_wide() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    cert = authority.issue(leaf_request(), root, Ledger())
    assert cert.serial_number > 0 and cert.serial_number.bit_length() >= 64


def test_leaf_validity_is_clamped_to_the_issuer() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority, days=10)
    cert = authority.issue(leaf_request(validity_days=365), root, Ledger())
    assert root.certificate is not None
    assert cert.not_valid_after_utc == root.certificate.not_valid_after_utc


def test_subordinate_ca_may_not_outlive_its_parent() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority, days=10)
    with pytest.raises(PolicyViolation, match="outlive"):
        authority.issue(leaf_request(is_ca=True, validity_days=20), root, Ledger())


def test_expired_issuer_refuses() -> None:
    root = make_root(Authority(clock=lambda: NOW), days=1)
    later = Authority(clock=lambda: NOW + timedelta(days=2))
    with pytest.raises(IssuerNotValid, match="expired on 2026-01-02T00:00:00Z"):
        later.issue(leaf_request(), root, Ledger())


def test_an_issuer_not_valid_yet_refuses_unless_upcoming() -> None:
    """No leaf is clamped into a CA dated ahead; the next CA of a SCEP rollover signs."""
    root = make_root(Authority(clock=lambda: NOW), days=10)
    earlier = Authority(clock=lambda: NOW - timedelta(days=1))
    with pytest.raises(IssuerNotValid, match="not valid until 2026-01-01T00:00:00Z"):
        earlier.issue(leaf_request(), root, Ledger())
    signed = earlier.issue(leaf_request(), replace(root, upcoming=True), Ledger())
    assert signed.not_valid_before_utc == NOW - timedelta(days=1)


def test_key_floor_refuses_small_rsa() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    with pytest.raises(PolicyViolation, match="2048"):
        authority.issue(leaf_request(public_key=small.public_key()), root, Ledger())
    with pytest.raises(PolicyViolation):
        parse_key_spec("RSA", 1024)


def test_key_floor_refuses_a_weak_signing_key() -> None:
    """An imported CA may bring an RSA-1024 key: it signs nothing."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = SubjectFields("Weak Root").to_name()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(weak.public_key())
        .serial_number(random_serial())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(weak, hashes.SHA256())
    )
    with pytest.raises(PolicyViolation, match="issuing CA's key is too weak"):
        Authority(clock=lambda: NOW).issue(leaf_request(), Issuer(cert, weak), Ledger())


def test_ec_key_cannot_have_key_encipherment() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    request = leaf_request(key_usage=("digitalSignature", "keyEncipherment"))
    with pytest.raises(PolicyViolation, match="RFC 5480"):
        authority.issue(request, root, Ledger())


def test_leaf_issuer_must_be_a_ca() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    key = generate_private_key(KeySpec("EC", 256))
    leaf = authority.issue(leaf_request(public_key=key.public_key()), root, Ledger())
    with pytest.raises(PolicyViolation, match="not a CA"):
        authority.issue(leaf_request(), Issuer(leaf, key), Ledger())


def test_template_fills_and_refuses_conflicts() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    template = Template("web", validity_days=90, extended_key_usage=("serverAuth",))
    cert = authority.issue(leaf_request(validity_days=None), root, Ledger(), template)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=90)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(PolicyViolation, match="conflicts"):
        authority.issue(leaf_request(extended_key_usage=("clientAuth",)), root, Ledger(), template)
    with pytest.raises(PolicyViolation, match="at most"):
        authority.issue(leaf_request(validity_days=365), root, Ledger(), template)


def test_intermediate_has_aki_matching_root_ski_and_publication_urls() -> None:
    from tessera.core.authority import PublicationURLs

    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    urls = PublicationURLs("http://x/cdp/a.crl", "http://x/ocsp", "http://x/ca/a.cer")
    issuer = Issuer(root.certificate, root.key, urls)
    cert = authority.issue(leaf_request(is_ca=True, validity_days=100), issuer, Ledger())
    assert root.certificate is not None
    ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://x/cdp/a.crl"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("dns:Example.COM", x509.DNSName),
        ("ip:10.0.0.1", x509.IPAddress),
        ("ip:2001:db8::1", x509.IPAddress),
        ("email:a@example.com", x509.RFC822Name),
        ("uri:https://example.com/x", x509.UniformResourceIdentifier),
        ("*.example.com", x509.DNSName),
        ("192.0.2.1", x509.IPAddress),
    ],
)
def test_san_spellings(text: str, kind: type) -> None:
    assert isinstance(parse_san(text), kind)


@pytest.mark.parametrize("bad", ["ip:999.1.1.1", "dns:", "dns:bad name", "email:nope", "a..b"])
def test_bad_sans(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_san(bad)


@pytest.mark.parametrize(
    ("san", "message"),
    [
        (x509.DNSName("bad_name!.example"), "invalid DNS name in SAN"),
        (x509.DNSName("127.0.0.1"), "is an IP address"),
        (x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")), "is a network"),
        (x509.RFC822Name("nope"), "invalid email address in SAN"),
        (x509.DirectoryName(SubjectFields("dir").to_name()), "unsupported SAN type DirectoryName"),
        (x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")), "unsupported SAN type"),
        (x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), "unsupported SAN type"),
    ],
)
def test_lint_holds_every_san_to_the_apis_rules(san: x509.GeneralName, message: str) -> None:
    """Whatever brought the SAN (a CSR, ACME, SCEP, a renewal): refused before signing."""
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    ledger = Ledger()
    with pytest.raises(PolicyViolation, match=message):
        authority.issue(leaf_request(sans=(parse_san("dns:ok.example.com"), san)), root, ledger)
    assert ledger.recorded == []


def test_lint_passes_wildcards_a_labels_and_addresses() -> None:
    sans = tuple(
        parse_san(s)
        for s in ("*.example.com", "xn--bcher-kva.example", "ip:::1", "_srv.example.com")
    )
    authority = Authority(clock=lambda: NOW)
    authority.issue(leaf_request(sans=sans), make_root(authority), Ledger())


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("key_compromise", "keyCompromise"),
        ("keyCompromise", "keyCompromise"),
        ("caCompromise", "cACompromise"),
        ("ca_compromise", "cACompromise"),
        ("cessation_of_operation", "cessationOfOperation"),
        ("aa_compromise", "aACompromise"),
        (None, "unspecified"),
    ],
)
def test_revocation_reason_spellings(given: str | None, canonical: str) -> None:
    assert normalize_reason(given) == canonical


def test_keystore_round_trip_and_rotation() -> None:
    old, new = KeyEncryptor.new_kek(), KeyEncryptor.new_kek()
    key = ec.generate_private_key(ec.SECP256R1())
    token = KeyEncryptor([old]).encrypt(key)
    assert b"PRIVATE" not in token.encode()
    rotated = KeyEncryptor([new, old]).rotate(token)
    assert KeyEncryptor([new]).decrypt(rotated).public_key() == key.public_key()
    with pytest.raises(KeyDecryptionError):
        KeyEncryptor([new]).decrypt(token)


# Templates: key type and size, subject defaults, and what a template may fix.


def _names(cert: x509.Certificate) -> list[str]:
    return [a.rfc4514_string() for a in cert.subject]


def test_template_key_type_and_size_are_enforced() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    ec_p384 = Template("ec-384", key_algorithm="EC", key_size=384)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(PolicyViolation, match=r"requires EC-P384.*RSA-2048"):
        authority.issue(leaf_request(public_key=rsa_key.public_key()), root, Ledger(), ec_p384)
    with pytest.raises(PolicyViolation, match=r"requires EC-P384.*EC-P256"):
        authority.issue(leaf_request(), root, Ledger(), ec_p384)
    right = generate_private_key(KeySpec("EC", 384)).public_key()
    cert = authority.issue(leaf_request(public_key=right), root, Ledger(), ec_p384)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_template_with_type_only_accepts_any_size_of_that_type() -> None:
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    any_ec = Template("any-ec", key_algorithm="ecdsa")
    for size in (256, 384):
        key = generate_private_key(KeySpec("EC", size)).public_key()
        authority.issue(leaf_request(public_key=key), root, Ledger(), any_ec)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(PolicyViolation, match="requires EC keys"):
        authority.issue(leaf_request(public_key=rsa_key.public_key()), root, Ledger(), any_ec)
    rsa_3072 = Template("rsa", key_size=3072)  # a size alone names RSA
    with pytest.raises(PolicyViolation, match="RSA-3072"):
        authority.issue(leaf_request(public_key=rsa_key.public_key()), root, Ledger(), rsa_3072)


def test_template_subject_defaults_fill_without_overriding() -> None:
    from cryptography.x509.oid import NameOID

    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    template = Template(
        "defaults",
        subject_defaults=(
            ("organization", "Default Org"),
            ("organizational_unit", "Default Unit"),
            ("country", "DE"),
            ("state", "Berlin"),
            ("locality", "Berlin"),
        ),
    )
    subject = SubjectFields("leaf.example.com", organization="Given Org", country="FR").to_name()
    cert = authority.issue(leaf_request(subject=subject), root, Ledger(), template)
    assert _names(cert) == [
        "C=FR",
        "ST=Berlin",
        "L=Berlin",
        "O=Given Org",
        "OU=Default Unit",
        "CN=leaf.example.com",
    ]
    bare = authority.issue(leaf_request(), root, Ledger(), template)
    assert bare.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Default Org"
    assert _names(bare)[-1] == "CN=leaf.example.com"


def test_check_template_uses_the_core_vocabularies() -> None:
    from tessera.core.profile import check_template

    check_template(Template("ok", key_usage=("digitalSignature",), key_algorithm="EC"))
    bad = [
        Template("ku", key_usage=("signEverything",)),
        Template("eku", extended_key_usage=("serverAuth", "timeTravel")),
        Template("key", key_algorithm="DSA"),
        Template("size", key_algorithm="EC", key_size=2048),
        Template("leaf-path", path_length=1),
        Template("ca-ku", is_ca=True, key_usage=("digitalSignature",)),
        Template("ec-ke", key_algorithm="EC", key_usage=("keyEncipherment",)),
        Template("subject", subject_defaults=(("email", "a@example.com"),)),
        Template("country", subject_defaults=(("country", "Germany"),)),
        Template("days", validity_days=0),
    ]
    for template in bad:
        with pytest.raises(InvalidInput):
            check_template(template)
    with pytest.raises(PolicyViolation, match="2048"):
        check_template(Template("weak", key_algorithm="RSA", key_size=1024))


def test_pkcs12_refuses_a_key_of_another_certificate() -> None:
    """A typed refusal, not the serializer's bare ValueError (which the API shows as a 500)."""
    root = make_root(Authority(clock=lambda: NOW))
    assert root.certificate is not None
    stranger = generate_private_key(KeySpec("EC", 256))
    with pytest.raises(InvalidInput, match="does not belong"):
        pkcs12_bundle("root", root.certificate, stranger, [], "pw")
    assert pkcs12_bundle("root", root.certificate, root.key, [], "pw")


def test_a_time_stamping_eku_is_critical() -> None:
    """RFC 3161 2.3: the EKU of a time-stamping certificate MUST be critical; others are not."""
    root = make_root(Authority(clock=lambda: NOW))

    def eku(*names: str) -> x509.Extension[x509.ExtendedKeyUsage]:
        cert = Authority(clock=lambda: NOW).issue(
            leaf_request(extended_key_usage=names), root, Ledger()
        )
        return cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)

    assert eku("timeStamping").critical
    assert not eku("serverAuth", "clientAuth").critical
    with pytest.raises(InvalidInput, match="RFC 3161"):
        eku("timeStamping", "serverAuth")


def test_subject_email_addresses_are_stated_as_sans() -> None:
    """RFC 5280 4.1.2.6: an address in the subject is in the SAN as an rfc822Name too, once,
    for leaves and CAs; a subject emailAddress that is no mailbox is refused."""
    authority = Authority(clock=lambda: NOW)
    root = make_root(authority)
    subject = SubjectFields("Alice", email="alice@example.com").to_name()
    leaf = authority.issue(leaf_request(subject=subject), root, Ledger())
    mailbox = x509.RFC822Name("alice@example.com")
    assert _sans(leaf) == [x509.DNSName("leaf.example.com"), mailbox]
    again = authority.issue(leaf_request(subject=subject, sans=(mailbox,)), root, Ledger())
    assert _sans(again) == [mailbox]
    shouted = SubjectFields("Alice", email="alice@EXAMPLE.com").to_name()  # the same mailbox
    again = authority.issue(leaf_request(subject=shouted, sans=(mailbox,)), root, Ledger())
    assert _sans(again) == [mailbox]
    other = SubjectFields("Alice", email="Alice@example.com").to_name()  # local parts differ
    both = authority.issue(leaf_request(subject=other, sans=(mailbox,)), root, Ledger())
    assert _sans(both) == [mailbox, x509.RFC822Name("Alice@example.com")]
    ca = authority.issue(
        leaf_request(subject=subject, sans=(), is_ca=True, extended_key_usage=None), root, Ledger()
    )
    assert _sans(ca) == [mailbox]
    odd = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "Bob"),
            x509.NameAttribute(x509.NameOID.EMAIL_ADDRESS, "no-mailbox"),
        ]
    )
    with pytest.raises(PolicyViolation, match="emailAddress is no mailbox"):
        authority.issue(leaf_request(subject=odd), root, Ledger())
