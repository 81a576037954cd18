"""Issuer groups from CA rows alone: one organization, one subject, one key."""

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tessera.domains.crl.publisher import can_sign, publishable
from tessera.domains.issuer_groups import groups, signing_order
from tessera.storage import models

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def row(
    ca_id: int,
    name: str = "Root",
    key: ec.EllipticCurvePrivateKey = KEY,
    org_id: int = 1,
    held: bool = True,
    days: tuple[int, int] = (-10, 365),
) -> models.CertificateAuthority:
    """A CA row of a self-signed certificate valid from days[0] to days[1] around NOW."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = NOW + timedelta(days=days[0]), NOW + timedelta(days=days[1])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return models.CertificateAuthority(
        id=ca_id,
        org_id=org_id,
        subject=subject.rfc4514_string(),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        encrypted_private_key="sealed" if held else None,
        not_before=start,
        not_after=end,
        is_active=True,
        revoked_at=None,
    )


def ids(found: list[list[models.CertificateAuthority]]) -> list[list[int]]:
    return [[ca.id for ca in group] for group in found]


def test_one_name_and_key_in_one_organization_is_one_group() -> None:
    rows = [
        row(5, held=False),  # the same root imported again, without its key: still one issuer
        row(2),
        row(3, key=OTHER_KEY),  # the same name, another key: another issuer
        row(4, org_id=2),  # another organization's copy: its revocations are its own
        row(6, name="Other Root"),
    ]
    assert ids(groups(rows)) == [[2, 5], [3], [4], [6]]


def test_the_signer_is_a_row_holding_the_key_valid_now_and_longest_lived() -> None:
    expired = row(1, days=(-400, -1))
    current = row(2, days=(-10, 365))
    longer = row(3, days=(-5, 730))
    keyless = row(4, held=False, days=(-1, 3650))
    future = row(5, days=(10, 5000))
    group = [expired, current, longer, keyless, future]
    assert [ca.id for ca in signing_order(group, NOW)] == [3, 2, 5, 1]
    usable = [ca.id for ca in signing_order(group, NOW, lambda ca: can_sign(ca, NOW))]
    assert usable == [3, 2, 5]  # an expired row signs no CRL


def test_a_keyless_row_publishes_when_its_group_can_sign() -> None:
    rows = [row(1, held=False), row(2), row(3, name="Alone", held=False)]
    assert publishable(rows, NOW) == {1, 2}
