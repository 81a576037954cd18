"""Who signs a CA's OCSP responses: the CA itself, or a delegated OCSP signing certificate
(id-kp-OCSPSigning, id-pkix-ocsp-nocheck) issued through the one issuance path and rolled
over before it expires.

Delegated signers are issued on demand (the first time a CA's responses are signed) and
renewed when a third of their life is left. Several processes may race to roll over: the
unique (ca_id, generation) of `ocsp_signers` lets one win; the loser's transaction (its
certificate, serial and audit row included) is rolled back and it reads the winner's.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tessera.core.authority import Authority
from tessera.core.errors import IssuerNotValid, PolicyViolation
from tessera.core.formats import load_certificate
from tessera.core.issuer_chain import IssuerChain
from tessera.core.keystore import KeyEncryptor
from tessera.core.names import fit_utf8
from tessera.core.profile import CertificateRequest
from tessera.domains.actor import system_actor
from tessera.domains.issuance import (
    Issuance,
    PublicationBase,
    ca_chain,
    revoked_above,
    signing_refusal,
    under_key_floor,
)
from tessera.domains.ocsp.wire import Signer
from tessera.storage import models
from tessera.storage.models_ocsp import OCSPSigner
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.ocsp import OCSPRepository

log = logging.getLogger("tessera.ocsp")
ROLLOVER_FRACTION = 3  # a new signer when less than a third of the old one's life is left


@dataclass(frozen=True)
class LoadedSigner:
    signer: Signer
    not_after: datetime
    rollover_at: datetime  # when a new signer should be made (the CA's own: never)
    certificate_id: int | None


@dataclass
class SignerFactory:
    sessions: sessionmaker[Session]
    authority: Authority
    keys: KeyEncryptor
    publication: PublicationBase
    mode: str  # delegated | ca
    signer_days: int

    def load(self, ca_id: int, now: datetime) -> LoadedSigner | None:
        """The signer to use for a CA now, making or rolling over a delegated one if due.
        None when the CA cannot sign here (gone, or without its key). A disabled CA still
        answers for the certificates it issued (see signing_refusal)."""
        with self.sessions() as session:
            ca = OCSPRepository(session).ca(ca_id)
            # the internal CA signs its own responder's certificate (see _issue)
            refusal = None if ca is None else signing_refusal(ca, True, vouching=True)
            if ca is None or refusal is not None:
                return None
            # A CA under the key floor (imported) certifies no responder, nor does one that
            # is revoked or under a revoked CA (it signs nothing more, docs/crl.md): it signs
            # its answers itself, as it signs its CRLs.
            if self.mode == "ca" or under_key_floor(ca) or _revoked_here_or_above(session, ca):
                return self._ca_signer(ca)
            current = self._current(session, ca_id)
            if current is not None and current.rollover_at > now:
                return current
        made = self._issue(ca_id, now)
        if made is not None:
            return made
        # Lost a race with another process (or the CA cannot issue): use whatever is newest.
        with self.sessions() as session:
            current = self._current(session, ca_id)
        if current is not None and current.not_after > now:
            return current
        return None

    def _ca_signer(self, ca: models.CertificateAuthority) -> LoadedSigner:
        certificate = load_certificate(ca.certificate_pem.encode())
        key = self.keys.decrypt(ca.encrypted_private_key or "")
        never = certificate.not_valid_after_utc
        return LoadedSigner(Signer(certificate, key, delegated=False), never, never, None)

    def _current(self, session: Session, ca_id: int) -> LoadedSigner | None:
        found = OCSPRepository(session).current_signer(ca_id)
        if found is None:
            return None
        _, cert_row = found
        if cert_row.status != "active" or cert_row.encrypted_private_key is None:
            return None  # revoked (or stripped of its key) by hand: make a new one
        certificate = load_certificate(cert_row.certificate_pem.encode())
        key = self.keys.decrypt(cert_row.encrypted_private_key)
        return _loaded(certificate, key, cert_row.id)

    def _issue(self, ca_id: int, now: datetime) -> LoadedSigner | None:
        session = self.sessions()
        try:
            repo = OCSPRepository(session)
            ca = repo.ca(ca_id)
            if ca is None:
                return None
            generation = repo.latest_generation(ca_id) + 1
            key = ec.generate_private_key(ec.SECP256R1())
            issuance = Issuance(
                Repositories(session, ca.org_id),
                self.authority,
                self.keys,
                self.publication,
                system_actor(ca.org_id),
                # The server's own responder, for the internal CA's certificates too: an
                # OCSPSigning-only certificate whose key never leaves the server.
                may_use_internal_ca=True,
                vouching=True,
            )
            request = _request(ca, key, self.signer_days, issuance.issuer_chain(ca))
            row = issuance.issue_certificate(request, ca, None, key, fresh_key=True)
            repo.add_signer(
                OCSPSigner(
                    ca_id=ca_id,
                    certificate_id=row.id,
                    generation=generation,
                    not_after=row.not_after,
                )
            )
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        except (PolicyViolation, IssuerNotValid) as exc:  # the CA expired, say: no responder
            session.rollback()
            log.warning("CA %s cannot issue its OCSP signer: %s", ca_id, exc.message)
            return None
        finally:
            session.close()
        log.info("issued OCSP signer %s (generation %s) for CA %s", row.id, generation, ca_id)
        return _loaded(load_certificate(row.certificate_pem.encode()), key, row.id)


def _revoked_here_or_above(session: Session, ca: models.CertificateAuthority) -> bool:
    chain = ca_chain(Repositories(session, ca.org_id), ca)
    return ca.revoked_at is not None or revoked_above(chain) is not None


def _request(
    ca: models.CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    days: int,
    chain: IssuerChain,
) -> CertificateRequest:
    common_name = fit_utf8(f"{ca.common_name} OCSP Responder", 64)
    # The common name alone, unless a directoryName constraint up the CA's chain wants the
    # subject within a subtree (then under the CA's own subject; see docs/issuance.md).
    preferred = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return CertificateRequest(
        subject=chain.subject_within(preferred, common_name),
        public_key=key.public_key(),
        validity_days=days,
        key_usage=("digitalSignature",),
        extended_key_usage=("OCSPSigning",),
        ocsp_nocheck=True,
        origin="ocsp",
    )


def _loaded(certificate: x509.Certificate, key: object, certificate_id: int) -> LoadedSigner:
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    rollover_at = end - (end - start) / ROLLOVER_FRACTION
    signer = Signer(certificate, key, delegated=True)  # type: ignore[arg-type]
    return LoadedSigner(signer, end, rollover_at, certificate_id)


def rollover_due(loaded: LoadedSigner, now: datetime, margin: timedelta) -> bool:
    return loaded.rollover_at <= now + margin
