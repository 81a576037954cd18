"""Rate-limit policy and the in-memory sliding window (no I/O here).

A request falls under exactly one rule, chosen from its method and path; the rule says how
many requests one subject (an IP address, or a user for exports) may make in a window. The
window slides: a request is allowed when fewer than `limit` requests of the same subject
were allowed in the last `window` seconds (a log of timestamps, not fixed buckets, so there
is no burst of twice the limit around a bucket edge).
"""

import re
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

EXEMPT = "exempt"


@dataclass(frozen=True)
class Rule:
    name: str
    limit: int
    window: float  # seconds
    per_user: bool = False


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: float  # epoch seconds when the oldest counted request leaves the window

    def retry_after(self, now: float) -> int:
        return max(1, int(self.reset - now + 0.999))


@dataclass(frozen=True)
class Policy:
    """The limits in force. Defaults follow the UCM seed (100/min per IP, 10/min on auth,
    10/min per user on exports) and the platform seed's login limits."""

    enabled: bool = True
    per_minute: int = 100
    auth_per_minute: int = 10
    export_per_minute: int = 10
    protocol_per_minute: int = 1200  # 0: protocol endpoints are not limited

    def rule(self, method: str, path: str) -> Rule | None:
        """The rule a request falls under; None when it is not limited."""
        return self._rules.get(classify(method, path))

    @cached_property
    def _rules(self) -> dict[str, Rule]:
        # Built once per policy: this runs on every request.
        rules = {
            # Seed 004: password-reset request and MFA verification, 5 per 300 s.
            "auth_strict": Rule("auth_strict", max(1, self.auth_per_minute // 2), 300.0),
            # A stolen session must not get to guess the codes that turn 2FA off from many
            # addresses: the account's second-factor steps are counted per user.
            "second_factor": Rule(
                "second_factor", max(1, self.auth_per_minute // 2), 300.0, per_user=True
            ),
            "auth": Rule("auth", self.auth_per_minute, 60.0),
            "export": Rule("export", self.export_per_minute, 60.0, per_user=True),
            "default": Rule("default", self.per_minute, 60.0),
        }
        if self.protocol_per_minute:
            rules["protocol"] = Rule("protocol", self.protocol_per_minute, 60.0)
        return rules


PROTOCOL_PREFIXES = (
    "/ocsp",
    "/cdp/",
    "/crl/",
    "/ca/",
    "/acme/",
    "/scep",
    "/cgi-bin/pkiclient.exe",
    "/.well-known/",
    "/est/",
)
# Where the native API's health checks are served (api/health.py registers exactly these).
HEALTH_BASES = ("/api/v2/health", "/api/health", "/health")
# Load balancers poll these: never limited, or a busy node would be taken out of rotation.
HEALTH_PATHS = frozenset(
    {
        *(base + check for base in HEALTH_BASES for check in ("", "/ready", "/live")),
        "/api/v1/health/ready",
        "/api/v1/health/db-pool",
        "/healthz",
    }
)
_STRICT = re.compile(
    r"/(forgot-password|reset-password|password-reset-request|mfa/verify|mfa|2fa|totp)(/|$)"
)
_AUTH_WRITE = re.compile(r"^/api/(v\d+/)?auth/")
_ACCOUNT_SECOND_FACTOR = re.compile(r"^/api/(v\d+/)?account/2fa/")
# The profile too: changing its email address checks the current password.
_PASSWORD_CHANGE = re.compile(
    r"^/api/(v\d+/)?(account/password|account/profile|auth/password-change)$"
)
# Private-key downloads are POST /certificates/{id}/key; POST /csrs/{id}/key uploads one.
_EXPORT = re.compile(
    r"/(export|bulk-export)(/|$)|/bulk/export$|/export-all$|/certificates/[^/]+/key$"
)


# HEAD answers as the GET of its path (api/routing.py): a read, never an auth or 2FA step.
_READS = frozenset({"GET", "HEAD"})


@lru_cache(maxsize=8192)
def classify(method: str, path: str) -> str:
    if path in HEALTH_PATHS or method == "OPTIONS":
        return EXEMPT
    if path.startswith(PROTOCOL_PREFIXES):
        return "protocol"
    read = method in _READS
    if _AUTH_WRITE.match(path) and not read:
        return "auth_strict" if _STRICT.search(path) else "auth"
    if _ACCOUNT_SECOND_FACTOR.match(path) and not read:
        return "second_factor"
    if _PASSWORD_CHANGE.match(path) and not read:
        return "auth"
    if path.startswith("/api/") and _EXPORT.search(path):
        return "export"
    return "default"


@dataclass
class MemoryWindows:
    """Sliding windows of one process, bounded: the least recently seen subjects are
    forgotten beyond `max_keys` (an attacker rotating addresses cannot grow it without end)."""

    max_keys: int = 100_000
    _logs: "OrderedDict[str, deque[float]]" = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, key: str, limit: int, window: float, now: float) -> Decision:
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = deque()
                if len(self._logs) > self.max_keys:
                    self._logs.popitem(last=False)
            else:
                self._logs.move_to_end(key)
            edge = now - window
            while log and log[0] <= edge:
                log.popleft()
            allowed = len(log) < limit
            if allowed:
                log.append(now)
            oldest = log[0] if log else now
            return Decision(allowed, limit, max(0, limit - len(log)), oldest + window)

    def clear(self) -> None:
        with self._lock:
            self._logs.clear()

    def __len__(self) -> int:
        return len(self._logs)
