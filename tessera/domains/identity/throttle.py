"""Per-username throttle of password logins.

The per-address rate limit does not stop an attacker who rotates addresses from guessing one
account's password. So every password attempt for a username is counted (known account or
not: the answer must not tell them apart), and after `failures` attempts with no success in
between, further attempts for that name are refused for a back-off that doubles with each
lock, up to `max_seconds`, whatever the address and whether or not the password is right.

The attempt is counted before the password is checked, in a transaction of its own that the
caller commits at once: attempts for one name, from any process, are counted one after
another (the row is held while it is counted), so a burst cannot slip past the count
together, and no lock is held while the password hash is computed. A right password takes
the count back (the row goes)."""

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tessera.domains.identity.secrets import verify_password
from tessera.storage.models_accounts import LoginThrottle
from tessera.storage.repositories import Repositories


@dataclass(frozen=True)
class ThrottlePolicy:
    failures: int
    window: timedelta
    base: timedelta
    cap: timedelta


@dataclass(frozen=True)
class ThrottleState:
    """What an administrator sees: failures counted since the last lock or success, and the
    end of the current lock, if any."""

    failures: int
    locked_until: datetime | None


@dataclass(frozen=True)
class Guard:
    """What a check of a current password needs to count it: the policy, the moment, and
    `commit`, which makes the name's row durable at once: the count before the slow hash,
    and its clearing by a right password, which the rest of the request must not undo."""

    policy: ThrottlePolicy
    now: datetime
    commit: Callable[[], None]


@dataclass(frozen=True)
class Checked:
    """A current password checked under the name's throttle: right, wrong, or refused
    unchecked (`wait`) because the name is throttled."""

    right: bool
    wait: timedelta | None = None

    @property
    def reason(self) -> str:
        return THROTTLED if self.wait is not None else "wrong current password"


THROTTLED = "too many failed logins: throttled"


def subject(username: str) -> str:
    return hashlib.sha256(username.encode()).hexdigest()


def admit(
    repos: Repositories, username: str, policy: ThrottlePolicy, now: datetime
) -> timedelta | None:
    """Count one password attempt for the name; how long to wait instead when it is locked
    (the attempt is then refused and not counted)."""
    row = repos.login_throttles.hold(subject(username))
    if row.locked_until is not None and row.locked_until > now:
        return row.locked_until - now
    if _left_alone(row, policy, now):
        row.failures, row.lockouts = 0, 0
    row.failures += 1
    row.last_failure_at = now
    if row.failures >= policy.failures:
        # This attempt still goes on (its password is checked); the ones after it wait.
        row.locked_until = now + backoff(policy, row.lockouts)
        row.lockouts += 1
        row.failures = 0
    return None


def check_current(
    repos: Repositories, username: str, password_hash: str | None, password: str, guard: Guard
) -> Checked:
    """The current password a change of password or email address asks for. Whoever holds a
    session or a full-access key could otherwise guess it there, from rotating addresses,
    without end: the guess counts for the name as a login attempt does (one budget for every
    path), a throttled name is refused unchecked, and a right password starts the count over,
    as a login's does, even when the request is then refused for another reason (a new
    password the policy refuses): its rollback would otherwise leave the attempt counted."""
    wait = admit(repos, username, guard.policy, guard.now)
    if wait is not None:
        return Checked(False, wait)
    guard.commit()
    if not verify_password(password_hash, password):
        return Checked(False)
    succeeded(repos, username)
    guard.commit()
    return Checked(True)


def backoff(policy: ThrottlePolicy, lockouts: int) -> timedelta:
    """`base`, doubled for every earlier lock, never beyond `cap`. Doubled step by step and
    stopped at the cap: `base * 2**n` overflows timedelta for a base of hours and many locks."""
    wait = min(policy.cap, policy.base)
    for _ in range(lockouts):
        if wait >= policy.cap:
            break
        wait = min(policy.cap, wait * 2)
    return wait


def retry_after_seconds(wait: timedelta) -> int:
    return max(1, math.ceil(wait.total_seconds()))


def succeeded(repos: Repositories, username: str) -> None:
    """A right password: the name's count starts over (and its lock, if this very attempt
    set it, is lifted)."""
    repos.login_throttles.clear(subject(username))


def state(
    repos: Repositories, username: str, policy: ThrottlePolicy, now: datetime
) -> ThrottleState:
    row = repos.login_throttles.find(subject(username))
    if row is None or _left_alone(row, policy, now):
        return ThrottleState(0, None)
    locked = row.locked_until if row.locked_until and row.locked_until > now else None
    return ThrottleState(row.failures, locked)


def clear(repos: Repositories, username: str) -> bool:
    """An administrator lifts the throttle (or a new password was set): whether there was one."""
    return repos.login_throttles.clear(subject(username))


def _left_alone(row: LoginThrottle, policy: ThrottlePolicy, now: datetime) -> bool:
    """No attempt and no lock for a whole window: the name starts over, back-off included."""
    moments = [m for m in (row.last_failure_at, row.locked_until) if m is not None]
    return not moments or now - max(moments) >= policy.window
