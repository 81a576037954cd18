"""Repositories: the only code that builds queries. Each is scoped to one organization."""

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy.orm import Session

from tessera.storage.repositories.accounts import (
    AccountTokenRepository,
    MailSettingsRepository,
    RecoveryCodeRepository,
)
from tessera.storage.repositories.acme import AcmeNonceRepository, AcmeRepository
from tessera.storage.repositories.audit import AuditRepository
from tessera.storage.repositories.cas import CARepository
from tessera.storage.repositories.certificates import CertificateRepository
from tessera.storage.repositories.crl import CRLRepository
from tessera.storage.repositories.csrs import CSRRepository
from tessera.storage.repositories.dashboard import DashboardRepository
from tessera.storage.repositories.groups import GroupRepository
from tessera.storage.repositories.identity import (
    ApiKeyRepository,
    OrganizationRepository,
    UserRepository,
    WebSessionRepository,
)
from tessera.storage.repositories.scep import ScepRepository
from tessera.storage.repositories.search import SearchRepository
from tessera.storage.repositories.serials import SerialRepository
from tessera.storage.repositories.status_changes import StatusChangeRepository
from tessera.storage.repositories.templates import TemplateRepository
from tessera.storage.repositories.truststore import TrustStoreRepository


@dataclass
class Repositories:
    """All repositories of one unit of work, bound to one session and organization. Each is
    made when first used: a request uses two or three of them."""

    session: Session
    org_id: int

    @cached_property
    def cas(self) -> CARepository:
        return CARepository(self.session, self.org_id)

    @cached_property
    def certificates(self) -> CertificateRepository:
        return CertificateRepository(self.session, self.org_id)

    @cached_property
    def csrs(self) -> CSRRepository:
        return CSRRepository(self.session, self.org_id)

    @cached_property
    def templates(self) -> TemplateRepository:
        return TemplateRepository(self.session, self.org_id)

    @cached_property
    def truststore(self) -> TrustStoreRepository:
        return TrustStoreRepository(self.session, self.org_id)

    @cached_property
    def serials(self) -> SerialRepository:
        return SerialRepository(self.session)

    @cached_property
    def status_changes(self) -> StatusChangeRepository:
        return StatusChangeRepository(self.session)

    @cached_property
    def audit(self) -> AuditRepository:
        return AuditRepository(self.session, self.org_id)

    @cached_property
    def users(self) -> UserRepository:
        return UserRepository(self.session, self.org_id)

    @cached_property
    def api_keys(self) -> ApiKeyRepository:
        return ApiKeyRepository(self.session)

    @cached_property
    def web_sessions(self) -> WebSessionRepository:
        return WebSessionRepository(self.session)

    @cached_property
    def account_tokens(self) -> AccountTokenRepository:
        return AccountTokenRepository(self.session)

    @cached_property
    def recovery_codes(self) -> RecoveryCodeRepository:
        return RecoveryCodeRepository(self.session)

    @cached_property
    def groups(self) -> GroupRepository:
        return GroupRepository(self.session, self.org_id)

    @cached_property
    def mail_settings(self) -> MailSettingsRepository:
        return MailSettingsRepository(self.session)

    @cached_property
    def organizations(self) -> OrganizationRepository:
        return OrganizationRepository(self.session)

    @cached_property
    def dashboard(self) -> DashboardRepository:
        return DashboardRepository(self.session, self.org_id)

    @cached_property
    def search(self) -> SearchRepository:
        return SearchRepository(self.session, self.org_id)

    @cached_property
    def acme(self) -> AcmeRepository:
        return AcmeRepository(self.session, self.org_id)

    @cached_property
    def acme_nonces(self) -> AcmeNonceRepository:
        return AcmeNonceRepository(self.session)

    @cached_property
    def scep(self) -> ScepRepository:
        return ScepRepository(self.session, self.org_id)

    @cached_property
    def crl(self) -> CRLRepository:
        return CRLRepository(self.session)


__all__ = ["Repositories"]
