"""Passwords: change (re-authenticated), reset by mailed link, and invitation links.

Reset and invitation links carry a random token; only its SHA-256 digest is stored, it
expires, and it is consumed by a conditional UPDATE, so it works once. A reset request
answers the same whether or not the address belongs to anyone."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from tessera.core.errors import InvalidInput, PermissionDenied
from tessera.domains import audit
from tessera.domains.actor import Actor, as_user
from tessera.domains.identity import throttle
from tessera.domains.identity.effective import require_full_access
from tessera.domains.identity.secrets import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    new_token,
    token_digest,
)
from tessera.domains.identity.twofactor import LOGIN_PURPOSE
from tessera.domains.mail import Message
from tessera.storage import models
from tessera.storage.models_accounts import AccountToken
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.identity import load_user, users_by_email

RESET, INVITE = "reset", "invite"
LINK_PURPOSES = (RESET, INVITE)
# A login waiting for its second factor proves the password it was started with: a new
# password voids it as it voids the links, or it would still open a session.
VOIDED_BY_NEW_PASSWORD = (*LINK_PURPOSES, LOGIN_PURPOSE)
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True)
class LinkPolicy:
    """Where links point and how long they live (from the settings)."""

    base_url: str
    reset_minutes: int
    invite_hours: int


def check_password(password: str | None) -> str:
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def set_password(repos: Repositories, user: models.User, password: str, now: datetime) -> None:
    """A new password ends every session and voids unused reset and invitation links and
    logins waiting for their second factor. A throttle on the name's logins is lifted: the
    guesses it counted were against the old password, and the owner who just reset it (or
    was given it) should be able to use it."""
    user.password_hash = hash_password(check_password(password))
    repos.web_sessions.delete_for_user(user.id)
    repos.account_tokens.revoke_for_user(user.id, VOIDED_BY_NEW_PASSWORD, now)
    throttle.clear(repos, user.username)


def address_changed(
    repos: Repositories, user: models.User, old: str | None, now: datetime, actor: Actor
) -> Message | None:
    """Links already mailed went to `old`, an address the account no longer trusts (a typo
    corrected, a mailbox given up): they stop working. The old address is told, since reset
    links now go to the new one: a stolen session changing it is how an account is kept."""
    if (old or "").lower() == (user.email or "").lower():
        return None
    repos.account_tokens.revoke_for_user(user.id, LINK_PURPOSES, now)
    if not old:
        return None
    where = f" from {actor.ip_address}" if actor.ip_address else ""
    body = (
        f"The email address of the Tessera account {user.username!r} was changed from {old} "
        f"to {user.email} at {now:%Y-%m-%d %H:%M} UTC{where}.\n\n"
        "Password reset links now go to the new address. If you did not make this change, "
        "ask an administrator to lock the account at once.\n"
    )
    return Message(old, "Tessera: your account's email address was changed", body)


def _link_message(
    repos: Repositories, user: models.User, purpose: str, policy: LinkPolicy, now: datetime
) -> Message:
    """Store a fresh link token for the user (older unused ones of the purpose stop working)
    and return the mail that carries it."""
    repos.account_tokens.revoke_for_user(user.id, [purpose], now)
    token = new_token()
    lifetime = (
        timedelta(minutes=policy.reset_minutes)
        if purpose == RESET
        else timedelta(hours=policy.invite_hours)
    )
    repos.account_tokens.add(
        AccountToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=token_digest(token),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    link = f"{policy.base_url}/reset-password?token={token}"
    if purpose == RESET:
        subject = "Tessera: reset your password"
        text = (
            f"Someone asked to reset the password of the Tessera account {user.username!r}.\n\n"
            f"To choose a new password, open:\n{link}\n\n"
            f"The link works once and expires in {policy.reset_minutes} minutes. If you did "
            "not ask for this, ignore this mail; your password is unchanged.\n"
        )
    else:
        subject = "Tessera: you are invited"
        text = (
            f"An account {user.username!r} was created for you on Tessera.\n\n"
            f"To set your password, open:\n{link}\n\n"
            f"The link works once and expires in {policy.invite_hours} hours.\n"
        )
    return Message(user.email or "", subject, text)


def request_reset(
    repos: Repositories, email: str, policy: LinkPolicy, now: datetime, anonymous: Actor
) -> list[Message]:
    """Reset mails for every active account with this address (possibly none)."""
    messages = []
    for user in users_by_email(repos.session, email):
        messages.append(_link_message(repos, user, RESET, policy, now))
        who = as_user(user, anonymous)
        audit.record(repos.audit, who, "auth.password_reset_request", "user", user.id)
    return messages


def invitation(
    repos: Repositories, user: models.User, policy: LinkPolicy, now: datetime
) -> Message:
    return _link_message(repos, user, INVITE, policy, now)


def reset_link(
    repos: Repositories, user: models.User, policy: LinkPolicy, now: datetime
) -> Message:
    return _link_message(repos, user, RESET, policy, now)


def redeem(
    repos: Repositories, token: str, password: str, now: datetime, anonymous: Actor
) -> models.User | None:
    """Set the password named by a reset or invitation link; None (audited) when the link is
    unknown, expired or used."""
    check_password(password)  # before consuming, so a weak password does not burn the link
    found = repos.account_tokens.live(token_digest(token), LINK_PURPOSES, now)
    user = load_user(repos.session, found.user_id) if found else None
    if found is None or user is None or not user.active:
        audit.record(
            repos.audit,
            anonymous,
            "auth.password_reset",
            "user",
            None,
            {"reason": "invalid or expired token"},
            False,
        )
        return None
    if not repos.account_tokens.consume(found.id, now):
        return None
    set_password(repos, user, password, now)
    who = as_user(user, anonymous)
    audit.record(repos.audit, who, "auth.password_reset", "user", user.id, {"via": found.purpose})
    return user


def change(
    repos: Repositories,
    actor: Actor,
    current: str,
    new: str,
    keep_session_id: int | None,
    guard: throttle.Guard,
) -> throttle.Checked:
    """The caller's own password, after checking the current one under the name's login
    throttle (a refusal is audited and returned). Every other session of the user ends; the
    current one stays."""
    if actor.user_id is None:
        raise PermissionDenied("passwords belong to users")
    user = load_user(repos.session, actor.user_id)
    if user is None:
        raise PermissionDenied("passwords belong to users")
    require_full_access(repos.session, actor, user)
    checked = throttle.check_current(repos, user.username, user.password_hash, current, guard)
    if not checked.right:
        audit.record(
            repos.audit,
            actor,
            "account.password_change",
            "user",
            user.id,
            {"reason": checked.reason},
            False,
        )
        return checked
    if new == current:
        raise InvalidInput("the new password must differ from the current one")
    user.password_hash = hash_password(check_password(new))
    repos.web_sessions.delete_for_user(user.id, keep_id=keep_session_id)
    repos.account_tokens.revoke_for_user(user.id, VOIDED_BY_NEW_PASSWORD, guard.now)
    audit.record(repos.audit, actor, "account.password_change", "user", user.id)
    return checked
