"""Challenge validation (RFC 8555 section 8, RFC 8737 tls-alpn-01, RFC 8738 IP identifiers)
and CAA (RFC 8659). Every name goes through the configured DNS servers, for http-01 and
tls-alpn-01 too, so a private network (or a test) decides where validation connects
(`lookup.py`); http-01 and the redirects it follows are in `http01.py`.

Runs in a background job, never inside a client's request. Each failure is an ACME problem
(dns, connection, incorrectResponse, tls, caa) that is stored on the challenge."""

import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence

import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from tessera.domains.acme.http01 import validate_http01
from tessera.domains.acme.lookup import ValidationConfig, addresses, cut_at
from tessera.protocols.acme.jws import b64encode
from tessera.protocols.acme.problems import AcmeProblem

ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
ALPN = "acme-tls/1"
# Seconds for every address tried, and for the CAA walk after a validation: together well
# inside the validation job's 60 s lease on the attempt (http01.FETCH_BUDGET is 30 too).
TLS_ALPN_BUDGET = 30.0
CAA_BUDGET = 20.0


def key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


def dns01_value(key_auth: str) -> str:
    return b64encode(hashlib.sha256(key_auth.encode()).digest())


def validate(kind: str, id_type: str, name: str, key_auth: str, config: ValidationConfig) -> None:
    """Raise the challenge's problem, or return when the identifier is proven."""
    if kind == "http-01":
        validate_http01(name, key_auth, config)
    elif kind == "dns-01":
        _dns01(name, key_auth, config)
    elif kind == "tls-alpn-01":
        _tls_alpn01(id_type, name, key_auth, config)
    else:
        raise AcmeProblem("malformed", f"unknown challenge type {kind}")


def _dns01(name: str, key_auth: str, config: ValidationConfig) -> None:
    expected = dns01_value(key_auth)
    query = f"_acme-challenge.{name}"
    try:
        answer = config.resolver().resolve(query, "TXT")
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as exc:
        raise AcmeProblem("dns", f"no TXT record at {query}") from exc
    except dns.exception.DNSException as exc:
        raise AcmeProblem("dns", f"DNS lookup of {query} failed: {exc}") from exc
    values = {b"".join(r.strings).decode("ascii", "replace") for r in answer}
    if expected not in values:
        raise AcmeProblem("incorrectResponse", f"no TXT record at {query} has the expected value")


def _tls_alpn01(id_type: str, name: str, key_auth: str, config: ValidationConfig) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the self-signed challenge certificate is the point
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ALPN])
    sni = (
        dns.reversename.from_address(name).to_text(omit_final_dot=True) if id_type == "ip" else name
    )
    last: AcmeProblem | None = None
    deadline = time.monotonic() + TLS_ALPN_BUDGET
    for address in addresses(id_type, name, config, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _alpn_past_budget(name)
        try:
            with (
                socket.create_connection(
                    (address, config.tlsalpn01_port), min(config.timeout, left)
                ) as raw,
                cut_at(deadline, raw),
                context.wrap_socket(raw, server_hostname=sni) as tls,
            ):
                negotiated = tls.selected_alpn_protocol()
                der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError) as exc:
            if time.monotonic() >= deadline:
                raise _alpn_past_budget(name) from exc
            last = AcmeProblem(
                "connection" if not isinstance(exc, ssl.SSLError) else "tls",
                f"tls-alpn-01 to {name} ({address}): {exc}",
            )
            continue
        if negotiated != ALPN or der is None:
            raise AcmeProblem("tls", f"tls-alpn-01 at {name}: the server did not negotiate {ALPN}")
        _check_alpn_certificate(x509.load_der_x509_certificate(der), id_type, name, key_auth)
        return
    raise last or AcmeProblem("connection", f"tls-alpn-01: nothing to connect to for {name}")


def _alpn_past_budget(name: str) -> AcmeProblem:
    return AcmeProblem("connection", f"tls-alpn-01 to {name}: past {TLS_ALPN_BUDGET:g} s")


def _check_alpn_certificate(cert: x509.Certificate, id_type: str, name: str, key_auth: str) -> None:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise AcmeProblem("incorrectResponse", f"tls-alpn-01 at {name}: {exc}") from exc
    wanted: x509.GeneralName = (
        x509.IPAddress(ipaddress.ip_address(name)) if id_type == "ip" else x509.DNSName(name)
    )
    if list(sans) != [wanted]:
        raise AcmeProblem(
            "incorrectResponse", f"tls-alpn-01 at {name}: the SAN must be only {name}"
        )
    if not extension.critical:
        raise AcmeProblem("incorrectResponse", "tls-alpn-01: acmeIdentifier must be critical")
    digest = hashlib.sha256(key_auth.encode()).digest()
    raw = extension.value.value  # type: ignore[attr-defined]
    if raw != b"\x04\x20" + digest:  # DER OCTET STRING of the 32-byte digest
        raise AcmeProblem("incorrectResponse", f"tls-alpn-01 at {name}: wrong acmeIdentifier")


def caa_identities(configured: Sequence[str] | None, server_host: str) -> list[str]:
    """This CA's issuer-domain-names (RFC 8659 4.2): the ones the directory advertises as
    `caaIdentities` (RFC 8555 9.7.1) and the only ones the CAA check accepts, so that a record
    written after the directory authorizes what it says. The configured ones, else the host of
    the server's public URL when it is a name. An IP address is none (an issuer-domain-name
    is a domain name), so a server reached by address (127.0.0.1 by default) has no identity
    until the settings name one, and then no `issue` record can name it (`check_caa`)."""
    names = list(configured or []) or [server_host]
    found = []
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            found.append(name)
    return found


def check_caa(name: str, wildcard: bool, identities: list[str], config: ValidationConfig) -> None:
    """RFC 8659: the closest CAA record set up the tree decides; none at all allows. A set
    with `issue` (or, for a wildcard, `issuewild`) records must name one of `identities`:
    with none (`caa_identities` found no name), every such set refuses, as RFC 8659 4.2 has
    it for a CA the records do not name, and only names without them are allowed. The
    walk, a lookup per label, ends within CAA_BUDGET: a deep name whose lookups each wait the
    configured timeout would otherwise outlast the job's lease on the attempt."""
    resolver = config.resolver()
    current = dns.name.from_text(name)
    deadline = time.monotonic() + CAA_BUDGET
    while current != dns.name.root:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _caa_past_budget(name, current)
        resolver.lifetime = min(config.timeout, left)
        try:
            answer = resolver.resolve(current, "CAA")
            records = list(answer)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            records = []
        except dns.exception.DNSException as exc:
            if time.monotonic() >= deadline:
                raise _caa_past_budget(name, current) from exc
            raise AcmeProblem("dns", f"CAA lookup of {current} failed: {exc}") from exc
        if records:
            _caa_allows(records, wildcard, identities, name)
            return
        current = current.parent()


def _caa_past_budget(name: str, current: dns.name.Name) -> AcmeProblem:
    return AcmeProblem("dns", f"CAA lookups for {name}: past {CAA_BUDGET:g} s at {current}")


def _caa_allows(records: list[object], wildcard: bool, identities: list[str], name: str) -> None:
    tags: dict[str, list[str]] = {}
    for record in records:
        tag = getattr(record, "tag", b"").decode("ascii", "replace").lower()
        value = getattr(record, "value", b"").decode("ascii", "replace")
        flags = getattr(record, "flags", 0)
        if flags & 128 and tag not in ("issue", "issuewild", "iodef"):
            raise AcmeProblem("caa", f"CAA for {name} has an unknown critical tag {tag!r}")
        tags.setdefault(tag, []).append(value)
    relevant = tags.get("issuewild") if wildcard and "issuewild" in tags else tags.get("issue")
    if relevant is None:
        return  # only iodef or unrelated tags: issuance is not restricted
    domains = {v.split(";")[0].strip().lower() for v in relevant}
    if not domains & {i.lower() for i in identities}:
        raise AcmeProblem("caa", f"CAA records for {name} do not authorize this CA")
