"""ACME Renewal Information (RFC 9773): the certificate identifier and the suggested window.

The window normally opens at two thirds of the lifetime and lasts a sixth of it. It moves to
the past, so a client renews at once, when the certificate is revoked, when its key was
revoked as compromised with another certificate, when its CA is disabled, or when an
administrator marked it for early renewal."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from tessera.core import inspect
from tessera.core.formats import load_certificate
from tessera.core.renewal import renewal_opens
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.protocols.acme.jws import b64decode, b64encode
from tessera.protocols.acme.problems import AcmeProblem, malformed
from tessera.storage import models
from tessera.storage.models_acme import AcmeRenewalMark
from tessera.storage.repositories import Repositories

RETRY_AFTER = timedelta(hours=6)


def certid(aki: bytes, serial: int) -> str:
    return f"{b64encode(aki)}.{b64encode(serial_der(serial))}"


def certid_of(cert: x509.Certificate) -> str:
    """The renewal identifier of a certificate issued here (which always names its CA's key)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return certid(aki.key_identifier or b"", cert.serial_number)


def serial_der(serial: int) -> bytes:
    """The INTEGER's content octets: big-endian, with a leading zero when the top bit is set."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def find_certificate(repos: Repositories, identifier: str) -> models.Certificate:
    """The certificate a renewalInfo URL names (404 when none does)."""
    cert = lookup_certificate(repos, identifier)
    if cert is None:
        raise AcmeProblem("malformed", "no certificate issued here has this identifier", 404)
    return cert


def lookup_certificate(repos: Repositories, identifier: str) -> models.Certificate | None:
    """The certificate a renewal identifier names (RFC 9773 4.1), if any. Its serial must be
    in DER (no leading zero octet it does not need), so that one certificate has one
    identifier."""
    aki_text, dot, serial_text = identifier.partition(".")
    if not dot or not aki_text or not serial_text:
        raise malformed("a renewal identifier is base64url(AKI).base64url(serial)")
    aki, serial = b64decode(aki_text, "AKI"), b64decode(serial_text, "serial")
    if not serial or serial[0] & 0x80:
        raise malformed("the serial must be a positive DER INTEGER")
    if len(serial) > 1 and serial[0] == 0 and not serial[1] & 0x80:
        raise malformed("the serial is not in DER: it has a leading zero octet too many")
    # Several CAs may have the key (a root re-issued for it is a CA of its own here): the
    # certificate is looked for under each of them.
    ca_ids = repos.cas.ids_by_subject_key_id(aki.hex())
    if not ca_ids:
        return None
    return repos.acme.certificate_by_serial(
        inspect.serial_hex(int.from_bytes(serial, "big")), ca_ids
    )


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    reason: str | None


def suggested_window(repos: Repositories, cert: models.Certificate, now: datetime) -> Window:
    ca = repos.cas.get(cert.ca_id) if cert.ca_id else None
    if cert.status == "revoked":
        return _now_window(now, f"the certificate was revoked ({cert.revocation_reason})")
    spki = inspect.public_key_sha256(load_certificate(cert.certificate_pem.encode()))
    if repos.certificates.key_compromised(spki):
        return _now_window(now, "the certificate's key was revoked as compromised elsewhere")
    if not _chain_in_service(repos, ca):
        return _now_window(now, "the issuing CA, or one above it, is no longer in service")
    if repos.acme.renewal_mark(cert.id) is not None:
        return _now_window(now, "an administrator asked for early renewal")
    start = renewal_opens(cert.not_before, cert.not_after)
    return Window(start, start + (cert.not_after - cert.not_before) / 6, None)


def _chain_in_service(repos: Repositories, ca: models.CertificateAuthority | None) -> bool:
    """The CA and every CA above it here are enabled (an administrator disables a CA whose
    key is compromised; everything below it must renew)."""
    seen: set[int] = set()
    while ca is not None and ca.id not in seen:
        if not ca.is_active:
            return False
        seen.add(ca.id)
        if ca.parent_id is None:
            return True
        ca = repos.cas.get(ca.parent_id)
    return ca is not None


def _now_window(now: datetime, reason: str) -> Window:
    # Both ends in the past: RFC 9773 4.2 has the client renew immediately.
    return Window(now - timedelta(hours=2), now - timedelta(hours=1), reason)


def mark_for_renewal(repos: Repositories, actor: Actor, cert_id: int, now: datetime) -> bool:
    """Returns False when it was marked already."""
    if repos.certificates.get(cert_id) is None:
        from tessera.core.errors import NotFound

        raise NotFound(f"certificate {cert_id} not found")
    if repos.acme.renewal_mark(cert_id) is not None:
        return False
    repos.acme.add_renewal_mark(
        AcmeRenewalMark(certificate_id=cert_id, marked_at=now, marked_by=actor.username)
    )
    audit.record(repos.audit, actor, "acme.renewal.mark", "certificate", cert_id, {})
    return True
