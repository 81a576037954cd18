"""Repositories: the only code that builds queries. Each is scoped to one organization."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

from sqlalchemy.orm import Session

from tessera.storage.repositories.accounts import (
    AccountTokenRepository,
    LoginThrottleRepository,
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
from tessera.storage.repositories.ocsp import OCSPRepository
from tessera.storage.repositories.scep import ScepRepository
from tessera.storage.repositories.search import SearchRepository
from tessera.storage.repositories.serials import SerialRepository
from tessera.storage.repositories.status_changes import StatusChangeRepository
from tessera.storage.repositories.templates import TemplateRepository
from tessera.storage.repositories.truststore import TrustStoreRepository

R = TypeVar("R")


class _Made(Generic[R]):
    """A repository made when first read, then kept in the instance (as `cached_property`
    does), so a unit of work builds only the two or three it uses."""

    def __init__(self, make: Callable[["Repositories"], R]) -> None:
        self._make = make

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, repos: None, owner: type) -> "_Made[R]": ...

    @overload
    def __get__(self, repos: "Repositories", owner: type) -> R: ...

    def __get__(self, repos: "Repositories | None", owner: type) -> "R | _Made[R]":
        if repos is None:
            return self
        made = repos.__dict__[self._name] = self._make(repos)
        return made


def _scoped(repository: Callable[[Session, int], R]) -> _Made[R]:
    """One scoped to the unit of work's organization."""
    return _Made(lambda repos: repository(repos.session, repos.org_id))


def _unscoped(repository: Callable[[Session], R]) -> _Made[R]:
    """One that serves every organization (or none)."""
    return _Made(lambda repos: repository(repos.session))


@dataclass
class Repositories:
    """All repositories of one unit of work, bound to one session and organization."""

    session: Session
    org_id: int

    cas = _scoped(CARepository)
    certificates = _scoped(CertificateRepository)
    csrs = _scoped(CSRRepository)
    templates = _scoped(TemplateRepository)
    truststore = _scoped(TrustStoreRepository)
    serials = _unscoped(SerialRepository)
    status_changes = _unscoped(StatusChangeRepository)
    audit = _scoped(AuditRepository)
    users = _scoped(UserRepository)
    api_keys = _unscoped(ApiKeyRepository)
    web_sessions = _unscoped(WebSessionRepository)
    account_tokens = _unscoped(AccountTokenRepository)
    recovery_codes = _unscoped(RecoveryCodeRepository)
    login_throttles = _unscoped(LoginThrottleRepository)
    groups = _scoped(GroupRepository)
    mail_settings = _unscoped(MailSettingsRepository)
    organizations = _unscoped(OrganizationRepository)
    dashboard = _scoped(DashboardRepository)
    search = _scoped(SearchRepository)
    acme = _scoped(AcmeRepository)
    acme_nonces = _unscoped(AcmeNonceRepository)
    scep = _scoped(ScepRepository)
    crl = _unscoped(CRLRepository)
    ocsp = _unscoped(OCSPRepository)


__all__ = ["Repositories"]
