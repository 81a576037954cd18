"""ACME identifiers (RFC 8555 7.1.3, RFC 8738 for IP addresses) and the CSR check of
finalize: the CSR must ask for exactly the order's identifiers, no more and no fewer."""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import idna
from cryptography import x509
from cryptography.x509.oid import NameOID

from tessera.core.names import is_ip_address
from tessera.protocols.acme.problems import AcmeProblem, malformed
from tessera.storage.models_acme import AcmeAuthorization

MAX_IDENTIFIERS = 100
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Identifier:
    type: str  # dns | ip
    value: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}

    @property
    def wildcard(self) -> bool:
        return self.type == "dns" and self.value.startswith("*.")

    @property
    def base(self) -> str:
        """The name an authorization is for: a wildcard's base domain (RFC 8555 7.1.3)."""
        return self.value[2:] if self.wildcard else self.value


def identifier_of(authz: AcmeAuthorization) -> dict[str, str]:
    """The order identifier an authorization is for (a wildcard's has the "*." back)."""
    value = f"*.{authz.identifier_value}" if authz.wildcard else authz.identifier_value
    return {"type": authz.identifier_type, "value": value}


def parse_identifiers(raw: object) -> list[Identifier]:
    if not isinstance(raw, list) or not raw:
        raise malformed("identifiers must be a non-empty list")
    if len(raw) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"at most {MAX_IDENTIFIERS} identifiers")
    found: dict[Identifier, None] = {}
    problems: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise malformed("each identifier needs a type and a string value")
        try:
            found[identifier(item.get("type"), item["value"])] = None
        except AcmeProblem as problem:
            problems.append({**problem.document(), "identifier": _safe(item)})
    if problems:
        raise AcmeProblem(
            "rejectedIdentifier",
            "; ".join(p["detail"] for p in problems),
            subproblems=problems,
        )
    return list(found)


def _safe(item: dict[str, Any]) -> dict[str, str]:
    return {"type": str(item.get("type"))[:16], "value": str(item.get("value"))[:255]}


def identifier(kind: object, value: str) -> Identifier:
    if kind == "dns":
        return Identifier("dns", dns_name(value))
    if kind == "ip":
        # Python reads an IPv6 zone ("fe80::1%eth0") as part of the address; RFC 8738's
        # textual forms have none, a certificate cannot carry one, and validation would go
        # out through a link of this host.
        try:
            address = None if "%" in value else ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None:
            raise AcmeProblem("rejectedIdentifier", f"{value[:64]!r} is not an IP address")
        return Identifier("ip", str(address))
    raise AcmeProblem(
        "unsupportedIdentifier", f"identifier type {str(kind)[:16]!r} is not supported"
    )


def dns_name(value: str) -> str:
    # ASCII first: lower() maps some non-ASCII letters to ASCII ones (KELVIN SIGN to "k"),
    # and RFC 8555 7.1.4 wants the name as a certificate has it, IDNs as A-labels.
    if not value.isascii():
        raise AcmeProblem(
            "rejectedIdentifier",
            f"{value[:64]!r} is not ASCII: internationalized names are sent as xn-- A-labels",
        )
    name = value.lower()
    labels = name.split(".")
    wildcard = labels[0] == "*"
    checked = labels[1:] if wildcard else labels
    ok = (
        len(name) <= 253
        and len(checked) >= (2 if wildcard else 1)
        and all(_LABEL.fullmatch(label) and _proper_a_label(label) for label in checked)
    )
    if not ok:
        raise AcmeProblem("rejectedIdentifier", f"{value[:64]!r} is not a valid DNS name")
    if checked[-1].isdigit():
        # RFC 8555 7.1.4 wants the name as a certificate has it, in RFC 5280 4.2.1.6's
        # preferred name syntax, where (RFC 1123 2.1) the top-level label is never all
        # digits, so that no host name reads as an address: "10.0.0.1", "*.10.0.0.1" (a
        # wildcard over an address) or "127.1" (127.0.0.1 to inet_aton and browsers).
        raise AcmeProblem(
            "rejectedIdentifier",
            f"{value[:64]!r} ends in an all-numeric label: an address is an ip identifier",
        )
    return name


def _proper_a_label(label: str) -> bool:
    """RFC 8555 7.1.4: an "xn--" label must be a properly encoded A-label (RFC 5890), i.e.
    decode to a valid IDNA2008 U-label that encodes back to the very same label."""
    if not label.startswith("xn--"):
        return True
    try:
        return bool(idna.encode(idna.decode(label)) == label.encode("ascii"))
    except UnicodeError:  # idna.IDNAError and codec errors derive from it
        return False


def csr_identifiers(csr: x509.CertificateSigningRequest) -> set[Identifier]:
    """Every name the CSR asks for: SANs (DNS and IP only) plus a subject CN."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError as exc:
        raise AcmeProblem("badCSR", "the CSR's extensions cannot be read") from exc
    names = name_identifiers(csr.subject, san)
    if names is None:
        raise AcmeProblem("badCSR", "the CSR asks for names other than DNS and IP")
    return names


def name_identifiers(
    subject: x509.Name, sans: Iterable[x509.GeneralName] | None
) -> set[Identifier] | None:
    """The identifiers a subject's CNs and its DNS and IP SANs name, as authorizations name
    them; None when a SAN is of another kind, which no authorization covers."""
    names = {
        common_name_identifier(str(a.value))
        for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    for general in sans or ():
        if isinstance(general, x509.DNSName):
            names.add(Identifier("dns", general.value.lower()))
        elif isinstance(general, x509.IPAddress):
            names.add(Identifier("ip", str(general.value)))
        else:
            return None
    return names


def common_name_identifier(cn: str) -> Identifier:
    if is_ip_address(cn):
        return Identifier("ip", str(ipaddress.ip_address(cn)))
    return Identifier("dns", cn.lower())


def check_csr_matches(csr: x509.CertificateSigningRequest, ordered: list[Identifier]) -> None:
    asked = csr_identifiers(csr)
    wanted = set(ordered)
    if asked != wanted:
        extra = sorted(i.value for i in asked - wanted)
        missing = sorted(i.value for i in wanted - asked)
        raise AcmeProblem(
            "badCSR",
            f"the CSR's names do not match the order (extra: {extra}, missing: {missing})",
        )
