"""SCEP challenge passwords, per CA.

- static: one password per CA, shown to admins as often as they ask (it goes into MDM
  profiles and device configurations), kept encrypted under the KEK and as a SHA-256 digest.
- dynamic: each `GET /scep/challenge/{ca_id}` mints a new single-use password valid for
  `challenge_validity` hours; only its SHA-256 digest is stored, and using it marks it used in
  the same transaction as the enrollment (so a refused enrollment does not burn it).

Passwords are compared as digests with `hmac.compare_digest`.
"""

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from tessera.core.keystore import KeyEncryptor
from tessera.domains import audit
from tessera.domains.actor import Actor
from tessera.storage.models_scep import ScepChallenge
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.scep import DYNAMIC, STATIC

# 24 letters and digits (143 bits): no character a shell, a device UI or a command-line
# flag parser could take for something else (a leading "-" would read as an option).
CHALLENGE_LENGTH = 24
ALPHABET = string.ascii_letters + string.digits
VALID, MISSING, INVALID = "valid", "missing", "invalid"


@dataclass(frozen=True)
class ShownChallenge:
    ca_id: int
    challenge: str
    challenge_type: str
    expires_at: datetime | None


def new_password() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CHALLENGE_LENGTH))


def digest(password: str) -> str:
    """The SHA-256 of the password's UTF-8 encoding, however a client encoded it."""
    return hashlib.sha256(password.encode()).hexdigest()


def _seal(keys: KeyEncryptor, password: str) -> str:
    return keys.seal(password.encode())


def _open(keys: KeyEncryptor, token: str) -> str:
    return keys.unseal(token).decode()


class ChallengeService:
    def __init__(self, repos: Repositories, keys: KeyEncryptor, actor: Actor, now: datetime):
        self._repos, self._keys, self._actor, self._now = repos, keys, actor, now

    def show(self, ca_id: int, challenge_type: str, validity_hours: int) -> ShownChallenge:
        """The CA's static password (made on first use), or a new dynamic one."""
        if challenge_type == DYNAMIC:
            return self._mint_dynamic(ca_id, validity_hours)
        row = self._repos.scep.static_challenge(ca_id)
        if row is None or row.encrypted_value is None:
            return self._new_static(ca_id, "scep.challenge.create")
        return ShownChallenge(ca_id, _open(self._keys, row.encrypted_value), STATIC, None)

    def regenerate(self, ca_id: int, challenge_type: str, validity_hours: int) -> ShownChallenge:
        """Static: replace the password. Dynamic: void every unused one, mint a fresh one."""
        if challenge_type == DYNAMIC:
            voided = self._repos.scep.expire_dynamic_challenges(ca_id, self._now)
            self._audit("scep.challenge.void", ca_id, {"voided": voided})
            return self._mint_dynamic(ca_id, validity_hours)
        self._repos.scep.drop_static_challenges(ca_id)
        return self._new_static(ca_id, "scep.challenge.regenerate")

    def static_password(self, ca_id: int) -> str | None:
        """The CA's static password if it has one (never made here): the shared secret of a
        requester whose key cannot encrypt (RFC 8894 section 3.1). Dynamic passwords are
        kept as digests only, so they cannot serve as one."""
        row = self._repos.scep.static_challenge(ca_id)
        if row is None or row.encrypted_value is None:
            return None
        return _open(self._keys, row.encrypted_value)

    def check(self, ca_id: int, challenge_type: str, given: str | None) -> str:
        """VALID, MISSING or INVALID, without spending anything (see `spend`)."""
        if not given:
            return MISSING
        wanted = digest(given)
        if challenge_type == DYNAMIC:
            return VALID if self._usable_dynamic(ca_id, wanted) is not None else INVALID
        static = self._repos.scep.static_challenge_digest(ca_id)
        if static is None or not hmac.compare_digest(static, wanted):
            return INVALID
        return VALID

    def spend(self, ca_id: int, challenge_type: str, given: str) -> bool:
        """Use a valid password up: a dynamic one is single use, so of two requests racing
        with it exactly one gets True. A static one is never used up."""
        if challenge_type != DYNAMIC:
            return True
        row = self._usable_dynamic(ca_id, digest(given))
        return row is not None and self._repos.scep.consume_challenge(row, self._now)

    def _usable_dynamic(self, ca_id: int, wanted: str) -> ScepChallenge | None:
        row = self._repos.scep.dynamic_challenge(ca_id, wanted)
        usable = (
            row is not None
            and hmac.compare_digest(row.digest, wanted)
            and row.used_at is None
            and (row.expires_at is None or row.expires_at > self._now)
        )
        return row if usable else None

    def _new_static(self, ca_id: int, action: str) -> ShownChallenge:
        password = new_password()
        row = ScepChallenge(
            ca_id=ca_id,
            kind=STATIC,
            digest=digest(password),
            encrypted_value=_seal(self._keys, password),
            created_by=self._actor.username,
            created_at=self._now,
        )
        self._repos.scep.add_challenge(row)
        self._audit(action, ca_id, {"challenge_type": STATIC})
        return ShownChallenge(ca_id, password, STATIC, None)

    def _mint_dynamic(self, ca_id: int, validity_hours: int) -> ShownChallenge:
        password = new_password()
        expires = self._now + timedelta(hours=validity_hours)
        row = ScepChallenge(
            ca_id=ca_id,
            kind=DYNAMIC,
            digest=digest(password),
            expires_at=expires,
            created_by=self._actor.username,
            created_at=self._now,
        )
        self._repos.scep.add_challenge(row)
        self._audit("scep.challenge.issue", ca_id, {"challenge_type": DYNAMIC, "id": row.id})
        return ShownChallenge(ca_id, password, DYNAMIC, expires)

    def _audit(self, action: str, ca_id: int, details: dict[str, object]) -> None:
        audit.record(self._repos.audit, self._actor, action, "ca", ca_id, details)
