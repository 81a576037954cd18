"""Smart import places CA certificates after their issuers, whatever order they came in."""

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tessera.core.uploads import Found
from tessera.domains.imports.service import _Item, _parents_first

KEY = ec.generate_private_key(ec.SECP256R1())


def _name(label: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])


def _ca(subject: str, issuer: str) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(KEY, hashes.SHA256())
    )


def _items(certificates: list[x509.Certificate]) -> list[_Item]:
    return [
        _Item(i, Found("certificate", "pem", certificate=c), None)
        for i, c in enumerate(certificates)
    ]


def test_a_long_chain_given_children_first_comes_out_parents_first() -> None:
    chain = [_ca("CA 0", "CA 0")] + [_ca(f"CA {i}", f"CA {i - 1}") for i in range(1, 300)]
    ordered = _parents_first(_items(list(reversed(chain))))
    assert [item.found.certificate for item in ordered] == chain


def test_a_cross_signed_pair_keeps_each_ca_once() -> None:
    pair = [_ca("A", "B"), _ca("B", "A"), _ca("C", "A")]
    ordered = [item.index for item in _parents_first(_items(pair))]
    assert sorted(ordered) == [0, 1, 2]
    assert ordered.index(2) > ordered.index(0)  # C after its issuer A
