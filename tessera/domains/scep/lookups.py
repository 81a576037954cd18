"""GetCert and GetCRL (RFC 8894 3.3.3, 3.3.4): what a SCEP client may fetch of a profile's
CA, the current one or the next one of a rollover, named by the CA's subject."""

from tessera.core.formats import load_certificate
from tessera.core.inspect import serial_hex
from tessera.domains.scep.types import BAD_CERT_ID, ProfileSettings, Reply
from tessera.storage import models
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.crl import CRLRepository


class ScepLookups:
    def __init__(self, repos: Repositories) -> None:
        self._repos = repos

    def get_cert(self, profile: ProfileSettings, issuer_der: bytes, serial: int) -> Reply:
        ca = self.ca_for(profile, issuer_der)
        found = self._repos.scep.certificate_by_serial(serial_hex(serial), [ca.id]) if ca else None
        if found is None:
            return Reply.failure(BAD_CERT_ID, "no such certificate")
        return Reply.success([load_certificate(found.certificate_pem.encode())])

    def ca_for(
        self, profile: ProfileSettings, issuer_der: bytes
    ) -> models.CertificateAuthority | None:
        """The profile's CA (or the next one) whose subject is `issuer_der`."""
        for ca_id in (profile.ca_id, profile.next_ca_id):
            ca = self._repos.cas.get(ca_id) if ca_id is not None else None
            if ca is not None and _subject_der(ca) == issuer_der:
                return ca
        return None

    def latest_crl(self, ca: models.CertificateAuthority) -> bytes | None:
        """The newest full CRL the CRL publisher stored for this CA (GetCRL)."""
        crls = CRLRepository(self._repos.session)
        latest = crls.latest(ca.id, "full")
        published = crls.published(latest[0]) if latest else None
        return bytes(published.der) if published is not None else None


def _subject_der(ca: models.CertificateAuthority) -> bytes:
    return load_certificate(ca.certificate_pem.encode()).subject.public_bytes()
