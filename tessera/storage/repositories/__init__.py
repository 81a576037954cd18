"""Repositories: the only code that builds queries. Each is scoped to one organization."""

from dataclasses import dataclass

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
    """All repositories of one unit of work, bound to one session and organization."""

    session: Session
    org_id: int

    def __post_init__(self) -> None:
        self.cas = CARepository(self.session, self.org_id)
        self.certificates = CertificateRepository(self.session, self.org_id)
        self.csrs = CSRRepository(self.session, self.org_id)
        self.templates = TemplateRepository(self.session, self.org_id)
        self.truststore = TrustStoreRepository(self.session, self.org_id)
        self.serials = SerialRepository(self.session)
        self.status_changes = StatusChangeRepository(self.session)
        self.audit = AuditRepository(self.session, self.org_id)
        self.users = UserRepository(self.session, self.org_id)
        self.api_keys = ApiKeyRepository(self.session)
        self.web_sessions = WebSessionRepository(self.session)
        # Accounts: tokens, recovery codes, groups, mail settings.
        self.account_tokens = AccountTokenRepository(self.session)
        self.recovery_codes = RecoveryCodeRepository(self.session)
        self.groups = GroupRepository(self.session, self.org_id)
        self.mail_settings = MailSettingsRepository(self.session)
        self.organizations = OrganizationRepository(self.session)
        self.dashboard = DashboardRepository(self.session, self.org_id)
        self.search = SearchRepository(self.session, self.org_id)
        self.acme = AcmeRepository(self.session, self.org_id)
        self.acme_nonces = AcmeNonceRepository(self.session)
        self.scep = ScepRepository(self.session, self.org_id)  # SCEP
        self.crl = CRLRepository(self.session)  # CRL publication (every organization)


__all__ = ["Repositories"]
