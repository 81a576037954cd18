"""Pure pieces of the accounts code: permission arithmetic, TOTP step matching, secrets."""

from datetime import UTC, datetime

import pyotp

from tessera.domains.identity import permissions
from tessera.domains.identity.secrets import (
    UNUSABLE_PASSWORD,
    hash_password,
    new_recovery_code,
    recovery_digest,
    verify_password,
)
from tessera.domains.identity.twofactor import matching_step


def test_effective_permissions_add_groups_to_the_role() -> None:
    granted = permissions.of_user("viewer", ["write:certificates"])
    assert permissions.grants(granted, "write:certificates")
    assert permissions.grants(granted, "read:cas")
    assert not permissions.grants(granted, "write:cas")
    assert permissions.of_user("nobody", []) == frozenset()


def test_covers_never_lets_a_wildcard_through_by_accident() -> None:
    operator = permissions.role_permissions("operator")
    assert permissions.covers(operator, ["read:users", "write:certificates"])
    assert permissions.covers(operator, ["read:*"])
    assert not permissions.covers(operator, ["*"])
    assert not permissions.covers(operator, ["write:users"])
    assert permissions.covers(frozenset({"*"}), ["*", "delete:audit"])
    assert permissions.covers(frozenset(), [])


def test_totp_step_matching_window() -> None:
    secret = pyotp.random_base32()
    moment = datetime(2026, 11, 25, 12, 0, 10, tzinfo=UTC)
    step = int(moment.timestamp()) // 30
    totp = pyotp.TOTP(secret)
    for offset in (-1, 0, 1):
        assert matching_step(secret, totp.generate_otp(step + offset), moment) == step + offset
    assert matching_step(secret, totp.generate_otp(step + 2), moment) is None
    assert matching_step(secret, totp.generate_otp(step - 2), moment) is None
    assert matching_step(secret, "12345", moment) is None
    assert matching_step(secret, "abcdef", moment) is None
    spaced = totp.generate_otp(step)
    assert matching_step(secret, f"{spaced[:3]} {spaced[3:]}", moment) == step


def test_recovery_codes_and_unusable_passwords() -> None:
    code = new_recovery_code()
    assert len(code) == 21 and code[10] == "-"
    assert recovery_digest(code) == recovery_digest(code.upper().replace("-", " "))
    assert recovery_digest(code) != recovery_digest(new_recovery_code())
    assert not verify_password(UNUSABLE_PASSWORD, "")
    assert not verify_password(UNUSABLE_PASSWORD, UNUSABLE_PASSWORD)
    assert not verify_password(None, "anything")
    stored = hash_password("a-password-123")
    assert verify_password(stored, "a-password-123")
    assert not verify_password(stored, "a-password-124")
