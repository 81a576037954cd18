"""The dashboard: inventory figures, what expires soon, recent activity, system status."""

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path

from tessera.core.errors import InvalidInput
from tessera.domains.identity.permissions import grants
from tessera.storage import models
from tessera.storage.repositories import Repositories

MAX_TREND_DAYS = 366
MAX_EXPIRY_DAYS = 3650


@dataclass(frozen=True)
class DiskUsage:
    used: int
    total: int

    @property
    def percent(self) -> float:
        return round(100 * self.used / self.total, 1) if self.total else 0.0


@dataclass(frozen=True)
class SystemStatus:
    database_ok: bool
    disk: DiskUsage | None
    uptime: timedelta
    version: str

    @property
    def healthy(self) -> bool:
        return self.database_ok and self.disk is not None


# Each figure beyond the certificates' own, and the permission that reveals it: a count is
# what a listing's meta.total would tell, so it is shown to whom may list those rows.
NEEDS = {
    "total_cas": "read:cas",
    "total_csrs": "read:csrs",
    "pending_csrs": "read:csrs",
    "acme_accounts": "read:acme",
    "active_users": "read:users",
}


class DashboardService:
    def __init__(self, repos: Repositories, now: datetime, permissions: frozenset[str]) -> None:
        self._repos = repos
        self._now = now
        self._permissions = permissions

    def stats(self) -> dict[str, int | None]:
        certs = self._repos.certificates.stats(self._now)
        return self._visible(
            {
                "total_certificates": certs["total"],
                "active_certificates": certs["active"],
                "expired_certificates": certs["expired"],
                "revoked_certificates": certs["revoked"],
                "expiring_soon": certs["expiring"],
                **self._repos.dashboard.inventory_counts(),
            }
        )

    def overview(self) -> dict[str, int | None]:
        cas, acme_accounts, active_users = self._repos.dashboard.overview_counts()
        return self._visible(
            {
                "total_cas": cas,
                "total_certs": self._repos.certificates.total(),
                "acme_accounts": acme_accounts,
                "active_users": active_users,
            }
        )

    def _visible(self, figures: dict[str, int]) -> dict[str, int | None]:
        """Every field stays (a client reads the seed's shape); a count of what the caller may
        not read is null, never a made-up 0."""
        return {
            name: None if name in NEEDS and not grants(self._permissions, NEEDS[name]) else n
            for name, n in figures.items()
        }

    def expiring(self, days: int, limit: int) -> Sequence[models.Certificate]:
        if not 1 <= days <= MAX_EXPIRY_DAYS:
            raise InvalidInput(f"days must be between 1 and {MAX_EXPIRY_DAYS}")
        return self._repos.dashboard.expiring(self._now, self._now + timedelta(days=days), limit)

    def recent_cas(
        self, limit: int
    ) -> tuple[Sequence[models.CertificateAuthority], dict[int, int]]:
        rows = self._repos.dashboard.recent_cas(limit)
        return rows, self._repos.cas.certificate_counts([r.id for r in rows])

    def activity(self, limit: int, offset: int) -> tuple[Sequence[models.AuditLog], bool]:
        """Newest audit rows first; one row more than asked tells whether another page exists."""
        rows = self._repos.dashboard.activity(limit + 1, offset)
        return rows[:limit], len(rows) > limit

    def trend(self, days: int) -> list[dict[str, object]]:
        """Issued and revoked per UTC day for the last `days` days, today included, gaps as 0."""
        if not 1 <= days <= MAX_TREND_DAYS:
            raise InvalidInput(f"days must be between 1 and {MAX_TREND_DAYS}")
        first = self._now.date() - timedelta(days=days - 1)
        since = datetime.combine(first, time(), tzinfo=self._now.tzinfo)
        issued = self._repos.dashboard.issued_per_day(since)
        revoked = self._repos.dashboard.revoked_per_day(since)
        trend: list[dict[str, object]] = []
        for offset in range(days):
            day = (first + timedelta(days=offset)).isoformat()
            trend.append(
                {"date": day, "issued": issued.get(day, 0), "revoked": revoked.get(day, 0)}
            )
        return trend

    def system_status(self, data_dir: Path, started_at: float, version: str) -> SystemStatus:
        try:
            usage = shutil.disk_usage(data_dir)
            disk: DiskUsage | None = DiskUsage(usage.used, usage.total)
        except OSError:
            disk = None
        uptime = timedelta(seconds=max(int(self._now.timestamp() - started_at), 0))
        return SystemStatus(self._repos.dashboard.database_ok(), disk, uptime, version)
