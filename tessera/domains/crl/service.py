"""What the management API shows of CRL publication: per CA, the newest full and delta CRL,
their URLs, and whether publication is working."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tessera.core.errors import NotFound
from tessera.domains.crl.builder import to_pem
from tessera.domains.crl.publisher import publishable
from tessera.domains.issuance import PublicationBase
from tessera.domains.issuer_groups import group_of
from tessera.storage import models
from tessera.storage.models_crl import CRLState, PublishedCRL
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.crl import CRLRepository

PEM_INLINE_LIMIT = 1 << 20  # larger CRLs are downloaded from their URL, not inlined in JSON


@dataclass(frozen=True)
class CRLInfo:
    ca: models.CertificateAuthority
    state: CRLState | None
    full: PublishedCRL | None
    delta: PublishedCRL | None
    crl_url: str
    delta_url: str | None
    can_sign: bool
    pem: str | None = None


class CRLService:
    def __init__(self, repos: Repositories, publication: PublicationBase, now: datetime) -> None:
        self._repos = repos
        self._crls = CRLRepository(repos.session)
        self._publication = publication
        self._now = now

    def overview(self) -> list[CRLInfo]:
        cas = self._repos.cas.all()
        return self._infos(cas, cas)

    def detail(self, ca_id: int) -> CRLInfo:
        ca = self.ca(ca_id)
        info = self._infos([ca], group_of(self._repos.cas, ca))[0]
        if info.full is not None and info.full.size <= PEM_INLINE_LIMIT:
            stored = self._crls.published(info.full.id)
            if stored is not None:
                return _with_pem(info, to_pem(stored.der))
        return info

    def ca(self, ca_id: int) -> models.CertificateAuthority:
        ca = self._repos.cas.get(ca_id)
        if ca is None:
            raise NotFound(f"CA {ca_id} not found")
        return ca

    def _infos(
        self,
        cas: Sequence[models.CertificateAuthority],
        alike: Sequence[models.CertificateAuthority],
    ) -> list[CRLInfo]:
        """The CRLs of `cas`; `alike` holds at least the rows of their issuer groups (a CA
        without its key here has CRLs when another row of its group has the key)."""
        ids = [ca.id for ca in cas]
        published = self._crls.summaries(self._repos.org_id, ids)
        states = self._crls.states(ids)
        signable = publishable(alike, self._now)
        infos = []
        for ca in cas:
            urls = self._publication.for_ca(ca)
            infos.append(
                CRLInfo(
                    ca=ca,
                    state=states.get(ca.id),
                    full=published.get((ca.id, "full")),
                    # none while deltas are off, even before the last one is withdrawn
                    delta=published.get((ca.id, "delta")) if urls.delta_crl else None,
                    crl_url=urls.crl or "",
                    delta_url=urls.delta_crl,
                    can_sign=ca.id in signable,
                )
            )
        return infos


def _with_pem(info: CRLInfo, pem: str) -> CRLInfo:
    return CRLInfo(
        info.ca,
        info.state,
        info.full,
        info.delta,
        info.crl_url,
        info.delta_url,
        info.can_sign,
        pem,
    )
