"""Name constraints (RFC 5280 4.2.1.10), checked before signing.

A CA imported with its key may carry a NameConstraints extension, and so may any CA above it;
a certificate signed for a name outside them is rejected by every relying party ("permitted
subtree violation"), so the authority refuses to sign it. This module judges one CA's
constraints; `core/issuer_chain.py` applies those of every CA up the chain, as a relying
party validating the path does (RFC 5280 6.1).
"""

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from tessera.core.errors import PolicyViolation
from tessera.core.names import name_text


def issuer_constraints(issuer_cert: x509.Certificate | None) -> x509.NameConstraints | None:
    if issuer_cert is None:
        return None
    try:
        return issuer_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def check(
    constraints: x509.NameConstraints,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    is_ca: bool = False,
    holder: str = "the issuing CA",
) -> None:
    """Every name the certificate would carry, within the permitted subtrees of its type
    (when there are any) and outside every excluded one. `holder` names whose constraints
    they are, for the refusal."""
    found = violation(constraints, subject, sans, is_ca)
    if found is not None:
        raise PolicyViolation(f"the name constraints of {holder} do not allow {found}")


def violation(
    constraints: x509.NameConstraints,
    subject: x509.Name,
    sans: Sequence[x509.GeneralName],
    is_ca: bool = False,
) -> str | None:
    """The first name outside the constraints and why (`dns:x (not within its permitted
    dns:example.com)`), or None when every name is inside."""
    for name in _names_to_check(subject, sans, is_ca):
        reason = _refusal(constraints, name)
        if reason is not None:
            return f"{_label(name)} ({reason})"
    return None


def _names_to_check(
    subject: x509.Name, sans: Sequence[x509.GeneralName], is_ca: bool
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = list(sans)
    if len(subject) > 0:
        names.append(x509.DirectoryName(subject))
    for attribute in subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        names.append(x509.RFC822Name(str(attribute.value)))
    # Without a dNSName, verifiers (OpenSSL) hold an end entity's host-like common name to
    # the DNS constraints instead (a CA's common name is no host name).
    if not is_ca and not any(isinstance(n, x509.DNSName) for n in sans):
        for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = str(attribute.value)
            if _host_like(value):
                names.append(x509.DNSName(value))
    return names


def _host_like(value: str) -> bool:
    labels = value.split(".")
    return len(labels) > 1 and all(
        label and label.isascii() and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )


def _refusal(constraints: x509.NameConstraints, name: x509.GeneralName) -> str | None:
    permitted = _same_type(constraints.permitted_subtrees, name)
    excluded = _same_type(constraints.excluded_subtrees, name)
    if (permitted or excluded) and not _comparable(name):
        # as OpenSSL: a name it cannot place under a constraint is refused
        return "which cannot be compared with its constraints of that type"
    if permitted and not any(_within(name, base) for base in permitted):
        return f"not within its permitted {', '.join(_label(base) for base in permitted)}"
    for base in excluded:
        if _within(name, base) or _wildcard_covers(name, base):
            return f"within its excluded {_label(base)}"
    return None


def _comparable(name: x509.GeneralName) -> bool:
    """A URI with a host (not a URN, not unparseable) and a mailbox with an "@"."""
    if isinstance(name, x509.UniformResourceIdentifier):
        return bool(_uri_host(name.value))
    if isinstance(name, x509.RFC822Name):
        return "@" in name.value
    return True


def _uri_host(uri: str) -> str:
    try:
        return urlsplit(uri).hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""


def _wildcard_covers(name: x509.GeneralName, base: x509.GeneralName) -> bool:
    """A wildcard that could stand for a name in an excluded subtree is excluded, as browsers
    judge it (`*.example.com` with `bad.example.com` excluded): else it would serve that
    host wherever verifiers match wildcards but not constraints on them."""
    if not (isinstance(name, x509.DNSName) and name.value.startswith("*.")):
        return False
    return _dns_within(str(base.value).lstrip("."), name.value[2:])


def _same_type(
    subtrees: Iterable[x509.GeneralName] | None, name: x509.GeneralName
) -> list[x509.GeneralName]:
    return [base for base in subtrees or () if type(base) is type(name)]


def _within(name: x509.GeneralName, base: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName):
        return _dns_within(name.value, str(base.value))
    if isinstance(name, x509.IPAddress) and isinstance(base, x509.IPAddress):
        network = base.value
        address = name.value
        return (
            isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and address.version == network.version
            and address in network
        )
    if isinstance(name, x509.RFC822Name):
        return _email_within(name.value, str(base.value))
    if isinstance(name, x509.UniformResourceIdentifier):
        return _host_within(_uri_host(name.value), str(base.value))
    if isinstance(name, x509.DirectoryName) and isinstance(base, x509.DirectoryName):
        prefix = [_canonical(rdn) for rdn in base.value.rdns]
        return [_canonical(rdn) for rdn in name.value.rdns][: len(prefix)] == prefix
    return False


def _canonical(rdn: x509.RelativeDistinguishedName) -> frozenset[tuple[str, str]]:
    """As verifiers compare names (OpenSSL's canonical encoding): values case-folded, runs of
    white space as one space, whatever string type encodes them."""
    return frozenset(
        (attribute.oid.dotted_string, " ".join(str(attribute.value).casefold().split()))
        for attribute in rdn
    )


def _dns_within(name: str, base: str) -> bool:
    """Zero or more labels added on the left of the constraint; a leading dot (as some CAs
    write it) means at least one."""
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _host_within(host: str, base: str) -> bool:
    """A URI's host: `host` exactly, or with a leading dot any host below it."""
    host, base = host.lower(), base.lower()
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _email_within(address: str, base: str) -> bool:
    """A mailbox (`user@host`) exactly, all mailboxes of a host (`host`), or of the hosts
    below a domain (`.domain`)."""
    if "@" in base:
        local, _, domain = base.rpartition("@")
        got_local, _, got_domain = address.rpartition("@")
        return got_local == local and got_domain.lower() == domain.lower()
    domain = address.rpartition("@")[2].lower()
    return _host_within(domain, base)


def _label(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        return f"dirName:{name_text(name.value)!r}"
    kind = {
        x509.DNSName: "dns",
        x509.IPAddress: "ip",
        x509.RFC822Name: "email",
        x509.UniformResourceIdentifier: "uri",
    }.get(type(name), "name")
    return f"{kind}:{name.value}"
