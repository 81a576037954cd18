"""A KEK rotation started by a process whose master password is no longer the file's (another
process disabled and re-enabled encryption with a new one) is refused: it would have sealed
the new keyring with the old password, which the next restart with the new one cannot open."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from tessera.core.errors import Conflict
from tessera.core.keystore import KeyEncryptor, Keyring, dump_keyring
from tessera.domains.actor import system_actor
from tessera.domains.security import rotation
from tessera.domains.security.kek import KekFile
from tessera.storage.db import session_factory
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.audit import KEY_INFO


def test_a_rotation_refuses_a_file_sealed_with_another_password(engine: Engine, tmp_path) -> None:
    kek = KeyEncryptor.new_kek()
    path = tmp_path / "kek"
    path.write_bytes(dump_keyring(Keyring((kek,)), "the password set since"))
    before = path.read_bytes()
    source = KekFile(path, "the password this process started with")
    keys = KeyEncryptor([kek], source)
    sessions = session_factory(engine)
    sessions.configure(info={KEY_INFO: b"k" * 32})  # the audit chain's key
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("rotating").id
    with pytest.raises(Conflict, match="another master password"), sessions.begin() as session:
        rotation.start(session, keys, source, system_actor(org), None, datetime.now(UTC))
    assert path.read_bytes() == before
    current = KekFile(path, "the password set since")
    with sessions.begin() as session:
        started = rotation.start(session, keys, current, system_actor(org), None, datetime.now(UTC))
        assert started.status == "running"
    assert path.read_bytes() != before  # sealed again, with the password set since
    assert KekFile(path, "the password set since").load().keys[1:] == (kek,)
