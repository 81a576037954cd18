"""Subjects, subject alternative names and the usage names the native API speaks."""

import ipaddress
import re
from dataclasses import dataclass

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tessera.core.errors import InvalidInput

# RFC 5280 appendix A.1 upper bounds (ub-*), in characters, of the subject attributes the
# issuance paths carry; countryName is exactly two letters (`is_country_code`).
UPPER_BOUNDS: dict[x509.ObjectIdentifier, int] = {
    NameOID.COMMON_NAME: 64,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.LOCALITY_NAME: 128,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.SERIAL_NUMBER: 64,
    NameOID.EMAIL_ADDRESS: 255,
}


# Attribute types RFC 4514 names no short name for, by the names OpenSSL writes (`openssl
# x509 -nameopt RFC2253`): without them cryptography writes the dotted OID, as in
# `1.2.840.113549.1.9.1=a@b.example` or `2.5.4.5=SN123`. Device subjects carry several (a
# serial number, a router's unstructuredName); migration 0022 rewrote the texts stored before.
ATTRIBUTE_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.UNSTRUCTURED_NAME: "unstructuredName",
    x509.ObjectIdentifier("1.2.840.113549.1.9.8"): "unstructuredAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.TITLE: "title",
    x509.ObjectIdentifier("2.5.4.13"): "description",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.POSTAL_ADDRESS: "postalAddress",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.X500_UNIQUE_IDENTIFIER: "x500UniqueIdentifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
}


def name_text(name: x509.Name) -> str:
    """A subject or issuer as text (RFC 4514, with the types of ATTRIBUTE_NAMES by name):
    the one form the API shows and the inventory stores, and matches on (a certificate's
    issuer against its CA's subject), so every writer of such a text must use this."""
    return name.rfc4514_string(ATTRIBUTE_NAMES)


@dataclass(frozen=True)
class SubjectFields:
    common_name: str
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None
    state: str | None = None
    locality: str | None = None
    email: str | None = None

    def to_name(self) -> x509.Name:
        # cryptography counts commonName in UTF-8 octets (at most 64), not in characters.
        octets = len(self.common_name.encode("utf-8", "surrogatepass"))
        if not self.common_name or octets > 64:
            raise InvalidInput("common_name is required and at most 64 bytes in UTF-8")
        if self.email and not self.email.isascii():
            # emailAddress is an IA5String (RFC 5280 A.1): ASCII only.
            raise InvalidInput("email must be ASCII (an IA5String)")
        parts = [
            (NameOID.COUNTRY_NAME, None if self.country is None else check_country(self.country)),
            (NameOID.STATE_OR_PROVINCE_NAME, self.state),
            (NameOID.LOCALITY_NAME, self.locality),
            (NameOID.ORGANIZATION_NAME, self.organization),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_unit),
            (NameOID.COMMON_NAME, self.common_name),
            (NameOID.EMAIL_ADDRESS, self.email),
        ]
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts if value])


def fit_utf8(text: str, octets: int) -> str:
    """`text` cut to at most `octets` bytes of UTF-8, on a character boundary: cryptography
    bounds a commonName in octets, not characters."""
    return text.encode("utf-8")[:octets].decode("utf-8", "ignore")


def check_country(code: str, label: str = "country") -> str:
    """An ISO 3166 alpha-2 code: countryName is a two-character PrintableString (RFC 5280
    A.1), and letters are all a code holds. Written in capitals, as ISO 3166 does."""
    if not is_country_code(code):
        raise InvalidInput(f"{label} must be a two-letter ISO 3166 code")
    return code.upper()


def is_country_code(code: str) -> bool:
    return len(code) == 2 and code.isascii() and code.isalpha()


def parse_san(entry: str) -> x509.GeneralName:
    """Read one SAN as the seed writes it ("dns:host", "ip:10.0.0.1", "email:", "uri:")."""
    text = entry.strip()
    kind, sep, value = text.partition(":")
    if sep and kind.lower() in ("dns", "ip", "email", "uri"):
        return _typed_san(kind.lower(), value.strip())
    return _guess_san(text)


def cn_as_san(subject: x509.Name) -> list[x509.GeneralName]:
    """A leaf named like a host gets that name as a SAN, since clients ignore the CN: the
    API's common_name, or a CSR's when the CSR brings no SAN. Each CN of a subject with
    several (a CSR may name two hosts) is taken alike, once, in order: with more than one,
    none was, and the certificate named no host a client would accept."""
    found: list[x509.GeneralName] = []
    for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        name = _host_like(attribute.value)
        if name is not None and name not in found:
            found.append(name)
    return found


def _host_like(common_name: str | bytes) -> x509.GeneralName | None:
    if not isinstance(common_name, str) or not common_name or " " in common_name:
        return None
    try:
        name = parse_san(common_name)
    except InvalidInput:
        return None
    # A single label ("device-42", "mdm-7f3a", "localhost") names devices and accounts as
    # often as hosts, and as a dNSName it is no fully qualified name: lints (pkilint) refuse
    # it. Asked for explicitly (`dns:localhost`) it is still issued.
    if isinstance(name, x509.DNSName) and "." not in name.value:
        return None
    return name


def _typed_san(kind: str, value: str) -> x509.GeneralName:
    if not value:
        raise InvalidInput(f"empty {kind} subject alternative name")
    if kind == "dns":
        return x509.DNSName(_check_dns(value))
    if kind == "ip":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError as exc:
            raise InvalidInput(f"invalid IP address in SAN: {value!r}") from exc
    if kind == "email":
        if "@" not in value:
            raise InvalidInput(f"invalid email address in SAN: {value!r}")
        _check_ascii("email address", value, "the domain as A-labels (IDNA)")
        _check_unspaced("email address", value)
        return x509.RFC822Name(value)
    if ":" not in value:
        raise InvalidInput(f"invalid URI in SAN: {value!r}")
    _check_ascii("URI", value, "percent-encoded (RFC 3986), the host as A-labels (IDNA)")
    _check_unspaced("URI", value)
    return x509.UniformResourceIdentifier(value)


def _check_unspaced(kind: str, value: str) -> None:
    """Neither a URI (RFC 3986) nor a mailbox outside a quoted local part (RFC 5321 4.1.2)
    holds spaces or control characters; the inventory also lists names separated by spaces."""
    if any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidInput(
            f"invalid {kind} in SAN: {value!r} contains a space or control character"
        )


def _check_ascii(kind: str, value: str, how: str) -> None:
    """rfc822Name and uniformResourceIdentifier are IA5Strings (RFC 5280 4.2.1.6): an
    internationalized value must arrive already converted, as `how` says. (A non-ASCII local
    part needs SmtpUTF8Mailbox, RFC 9598, which Tessera does not issue.)"""
    if not value.isascii():
        raise InvalidInput(f"invalid {kind} in SAN: {value!r} is not ASCII; send it {how}")


def _guess_san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if "@" in value:
        return _typed_san("email", value)
    return x509.DNSName(_check_dns(value))


def check_general_name(name: x509.GeneralName) -> None:
    """A SAN that did not come through `parse_san` (a CSR's, an ACME order's, a renewed
    certificate's) held to the same rules. Tessera issues dns, ip, email and uri names only."""
    if isinstance(name, x509.DNSName):
        _check_dns(name.value)
    elif isinstance(name, x509.IPAddress):
        if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise InvalidInput(f"invalid IP address in SAN: {str(name.value)!r} is a network")
    elif isinstance(name, x509.RFC822Name):
        _typed_san("email", name.value)
    elif isinstance(name, x509.UniformResourceIdentifier):
        _typed_san("uri", name.value)
    else:
        kind = type(name).__name__
        raise InvalidInput(
            f"unsupported SAN type {kind}: Tessera issues dns, ip, email and uri names only"
        )


def _check_dns(name: str) -> str:
    if is_ip_address(name):
        raise InvalidInput(f"invalid DNS name in SAN: {name!r} is an IP address; send ip:{name}")
    labels = name.split(".")
    valid = all(
        0 < len(label) <= 63
        and label.isascii()
        and ((label == "*" and i == 0) or label.replace("-", "").replace("_", "").isalnum())
        for i, label in enumerate(labels)
    )
    if not name.isascii():
        raise InvalidInput(f"invalid DNS name in SAN: {name!r} is not ASCII; send A-labels (IDNA)")
    if not valid or len(name) > 253:
        raise InvalidInput(f"invalid DNS name in SAN: {name!r}")
    return name.lower()


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# The SAN types Tessera issues; certificates it imports may hold the other three as well.
ISSUED_SAN_TYPES = (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.UniformResourceIdentifier)


def format_san(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    if isinstance(name, x509.RegisteredID):
        return f"rid:{name.value.dotted_string}"
    if isinstance(name, x509.DirectoryName):
        return f"dirname:{_unbroken(name_text(name.value))}"
    if isinstance(name, x509.OtherName):
        return f"othername:{_unbroken(_other_name_text(name))}"
    raise TypeError(f"not a general name: {type(name).__name__}")  # the seven are above


def _other_name_text(name: x509.OtherName) -> str:
    """`<type-id>=<value>` as an RFC 4514 attribute: a string value (a UPN's UTF8String) as
    escaped text, any other value as `#` and the hex of its DER (RFC 4514 2.4)."""
    type_id = name.type_id
    try:
        value = asn1_core.load(name.value)
    except ValueError:
        value = None
    as_hex = f"{type_id.dotted_string}=#{name.value.hex()}"
    if not isinstance(value, asn1_core.AbstractString):
        return as_hex
    try:  # a type id that names a subject attribute (C, say) brings that one's rules
        attribute = x509.NameAttribute(type_id, value.native)
    except (ValueError, TypeError):  # bad text, or an attribute that holds bytes
        return as_hex
    return attribute.rfc4514_string({type_id: type_id.dotted_string})


def _unbroken(rfc4514: str) -> str:
    """RFC 4514 text with every white space character as `\\XX` escapes of its UTF-8 bytes
    (a form RFC 4514 allows for any character): a certificate's names are stored and listed
    as one space-separated text, which a space inside one name would cut in two."""
    out: list[str] = []
    chars = iter(rfc4514)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            out.append(_hex_escaped(escaped) if escaped.isspace() else char + escaped)
        else:
            out.append(_hex_escaped(char) if char.isspace() else char)
    return "".join(out)


def _hex_escaped(char: str) -> str:
    return "".join(f"\\{byte:02X}" for byte in char.encode("utf-8"))


KEY_USAGES = (
    "digitalSignature",
    "contentCommitment",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
)
_KU_ALIASES = {"nonRepudiation": "contentCommitment"}

EXTENDED_KEY_USAGES = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    # id-kp-cmcRA (RFC 6402): a registration authority of CMC, and of SCEP (RFC 8894).
    "cmcRA": ObjectIdentifier("1.3.6.1.5.5.7.3.28"),
}
_EKU_BY_OID = {oid: name for name, oid in EXTENDED_KEY_USAGES.items()}
# Canonical dotted decimal only (no leading zeros), as `dotted_string` writes it back.
_DOTTED_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]{0,17})){1,30}")


def key_usage(names: list[str]) -> x509.KeyUsage:
    flags = {name: False for name in KEY_USAGES}
    for raw in names:
        name = _KU_ALIASES.get(raw, raw)
        if name not in flags:
            raise InvalidInput(f"unknown key usage {raw!r}; known: {', '.join(KEY_USAGES)}")
        flags[name] = True
    if (flags["encipherOnly"] or flags["decipherOnly"]) and not flags["keyAgreement"]:
        raise InvalidInput("encipherOnly and decipherOnly require keyAgreement")
    return x509.KeyUsage(
        digital_signature=flags["digitalSignature"],
        content_commitment=flags["contentCommitment"],
        key_encipherment=flags["keyEncipherment"],
        data_encipherment=flags["dataEncipherment"],
        key_agreement=flags["keyAgreement"],
        key_cert_sign=flags["keyCertSign"],
        crl_sign=flags["cRLSign"],
        encipher_only=flags["encipherOnly"],
        decipher_only=flags["decipherOnly"],
    )


def key_usage_names(usage: x509.KeyUsage) -> list[str]:
    names = []
    for name, attr in zip(KEY_USAGES, _KU_ATTRS, strict=True):
        if attr in ("encipher_only", "decipher_only") and not usage.key_agreement:
            continue
        if getattr(usage, attr):
            names.append(name)
    return names


_KU_ATTRS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def extended_key_usage(names: list[str]) -> x509.ExtendedKeyUsage:
    """By name, or as a dotted OID for a purpose without one here (smartcard logon, a
    vendor's own): what `extended_key_usage_names` gives back, so renewing a certificate
    with such a purpose certifies it again. RFC 3161 2.3: a time-stamping certificate's EKU
    holds timeStamping alone (a TSA key certified for anything else is refused by verifiers)."""
    purposes = list(dict.fromkeys(_eku_oid(name) for name in names))
    if ExtendedKeyUsageOID.TIME_STAMPING in purposes and len(purposes) > 1:
        raise InvalidInput(
            "timeStamping cannot be combined with other extended key usages (RFC 3161 2.3)"
        )
    return x509.ExtendedKeyUsage(purposes)


def _eku_oid(name: str) -> ObjectIdentifier:
    if name in EXTENDED_KEY_USAGES:
        return EXTENDED_KEY_USAGES[name]
    if _DOTTED_OID.fullmatch(name):
        try:
            return ObjectIdentifier(name)
        except ValueError:
            pass  # arcs out of range (e.g. 1.40): refused below
    known = ", ".join(EXTENDED_KEY_USAGES)
    raise InvalidInput(f"unknown extended key usage {name[:64]!r}; known: {known}, or a dotted OID")


def extended_key_usage_names(usage: x509.ExtendedKeyUsage) -> list[str]:
    return [_EKU_BY_OID.get(oid, oid.dotted_string) for oid in usage]
