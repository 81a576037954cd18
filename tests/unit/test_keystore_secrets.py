"""KeyEncryptor.seal/unseal: non-key secrets (TOTP seeds, SMTP passwords, EAB HMAC keys,
SCEP challenges) under the KEK, and their rotation to a new KEK."""

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tessera.core.keystore import KeyDecryptionError, KeyEncryptor, Keyring
from tessera.storage import models, models_accounts
from tessera.storage.repositories.security import FERNET_PREFIX, SecurityRepository


class _Source:
    """A keyring file stand-in: `changed()` says whether `ring` was replaced."""

    def __init__(self, ring: Keyring) -> None:
        self.ring, self._dirty = ring, False

    def replace(self, ring: Keyring) -> None:
        self.ring, self._dirty = ring, True

    def changed(self) -> bool:
        dirty, self._dirty = self._dirty, False
        return dirty

    def load(self) -> Keyring:
        return self.ring


@pytest.mark.parametrize("secret", [b"", b"s3cret-smtp", bytes(range(256)), b"\0" * 32])
def test_seal_round_trip(secret: bytes) -> None:
    keys = KeyEncryptor([KeyEncryptor.new_kek()])
    token = keys.seal(secret)
    assert token.startswith(FERNET_PREFIX)
    assert secret not in token.encode() or not secret
    assert keys.unseal(token) == secret
    assert keys.under_primary(token) and keys.readable(token)


def test_seal_is_randomised() -> None:
    keys = KeyEncryptor([KeyEncryptor.new_kek()])
    assert keys.seal(b"same") != keys.seal(b"same")


def test_unseal_with_another_kek_fails_cleanly() -> None:
    token = KeyEncryptor([KeyEncryptor.new_kek()]).seal(b"secret")
    with pytest.raises(KeyDecryptionError):
        KeyEncryptor([KeyEncryptor.new_kek()]).unseal(token)
    with pytest.raises(KeyDecryptionError):
        KeyEncryptor([KeyEncryptor.new_kek()]).unseal("not a token")


def test_a_sealed_secret_is_not_a_private_key() -> None:
    keys = KeyEncryptor([KeyEncryptor.new_kek()])
    with pytest.raises(ValueError):
        keys.decrypt(keys.seal(b"totp secret"))


def test_rotation_of_a_sealed_secret() -> None:
    old, new = KeyEncryptor.new_kek(), KeyEncryptor.new_kek()
    token = KeyEncryptor([old]).seal(b"JBSWY3DPEHPK3PXP")
    during = KeyEncryptor(Keyring((new, old)))  # rotation: new key first, old behind it
    assert during.readable(token) and not during.under_primary(token)
    rotated = during.rotate(token)
    assert during.under_primary(rotated)
    after = KeyEncryptor([new])  # the old key dropped from the file
    assert after.unseal(rotated) == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(KeyDecryptionError):
        after.unseal(token)


def test_unseal_rereads_a_keyring_rotated_elsewhere() -> None:
    old, new = KeyEncryptor.new_kek(), KeyEncryptor.new_kek()
    source = _Source(Keyring((old,)))
    keys = KeyEncryptor(source.ring, source)
    token = KeyEncryptor([new]).seal(b"written by another process")
    source.replace(Keyring((new, old)))
    assert keys.unseal(token) == b"written by another process"
    # seal writes under the primary KEK of the file as it is now
    source.replace(Keyring((old, new)))
    assert KeyEncryptor([old]).unseal(keys.seal(b"x")) == b"x"


def test_rotation_finds_the_sealed_secret_columns() -> None:
    engine = create_engine("sqlite://")
    tables = [models.User.__table__, models_accounts.MailSettings.__table__]
    models.Base.metadata.create_all(engine, tables=[models.Organization.__table__, *tables])
    with Session(engine) as session:
        found = {c.name: c for c in SecurityRepository(session).key_columns()}
    for name in ("users.encrypted_totp_secret", "mail_settings.encrypted_password"):
        assert found[name].encrypted_by_convention
        assert not found[name].holds_private_keys
