"""`names.format_san` on the general names Tessera does not issue: readable, one entry each
(no white space), and a directory name that reads back as itself."""

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.x509.oid import NameOID

from tessera.core.names import format_san

OID = x509.ObjectIdentifier("1.2.3")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (x509.RegisteredID(OID), "rid:1.2.3"),
        (x509.OtherName(OID, core.UTF8String("a b").dump()), "othername:1.2.3=a\\20b"),
        (x509.OtherName(OID, core.BMPString("Jäne").dump()), "othername:1.2.3=Jäne"),
        # Text RFC 4514 escapes, a leading space, an ideographic space (UTF-8 escapes).
        (
            x509.OtherName(OID, core.UTF8String(" x,+\u3000").dump()),
            "othername:1.2.3=\\20x\\,\\+\\E3\\80\\80",
        ),
        # Not text: the DER in hex. Invalid UTF-8, and a type id whose attribute refuses it.
        (x509.OtherName(OID, bytes.fromhex("0c02c328")), "othername:1.2.3=#0c02c328"),
        (
            x509.OtherName(NameOID.COUNTRY_NAME, core.UTF8String("abc").dump()),
            "othername:2.5.4.6=#0c03616263",
        ),
        (x509.OtherName(OID, core.Integer(5).dump()), "othername:1.2.3=#020105"),
    ],
)
def test_other_general_names(name: x509.GeneralName, text: str) -> None:
    assert format_san(name) == text
    assert not any(char.isspace() for char in text)


def test_a_directory_name_reads_back() -> None:
    directory = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, " Jane  Doe "),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme,\tInc"),
        ]
    )
    text = format_san(x509.DirectoryName(directory))
    assert not any(char.isspace() for char in text)
    assert x509.Name.from_rfc4514_string(text.removeprefix("dirname:")) == directory
