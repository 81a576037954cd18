"""PKCS#12 files are opened in CPU-limited children, a bounded number at a time per process."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from tessera.core import pkcs12_sandbox, uploads
from tessera.core.errors import Unavailable
from tests.e2e.helpers import self_signed


def _file() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return pkcs12.serialize_key_and_certificates(
        b"device", key, self_signed(key, "device"), None, BestAvailableEncryption(b"secret")
    )


def test_a_file_waits_for_a_free_slot_and_is_refused_as_busy_past_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pkcs12_sandbox, "WALL_SECONDS", 0.2)
    data = _file()
    taken = [pkcs12_sandbox._opening.acquire(blocking=False) for _ in range(pkcs12_sandbox.AT_ONCE)]
    assert all(taken)  # every slot held, as by files being opened
    try:
        with pytest.raises(Unavailable) as refused:
            pkcs12_sandbox.load(data, b"secret")
        assert refused.value.status == 503
    finally:
        for _ in taken:
            pkcs12_sandbox._opening.release()
    key, certificate, others = pkcs12_sandbox.load(data, b"secret")
    assert key is not None and certificate is not None and others == []


def test_a_slot_is_given_back_when_the_file_is_unreadable() -> None:
    for _ in range(pkcs12_sandbox.AT_ONCE + 1):
        with pytest.raises(pkcs12_sandbox.Unreadable):
            pkcs12_sandbox.load(_file(), b"wrong")
    assert pkcs12_sandbox.load(_file(), b"secret")[0] is not None


def test_a_busy_server_is_a_503_for_smart_import_and_convert_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`read_objects` (smart import's analyze and execute, tools/convert) reports a file it
    cannot read as a problem of that file; a server too busy to open it is no such problem
    (it was `valid: false` with the busy text, a 200), but the request's 503."""
    monkeypatch.setattr(pkcs12_sandbox, "WALL_SECONDS", 0.2)
    data = _file()
    taken = [pkcs12_sandbox._opening.acquire(blocking=False) for _ in range(pkcs12_sandbox.AT_ONCE)]
    assert all(taken)
    try:
        with pytest.raises(Unavailable):
            uploads.read_objects(data, b"secret")
    finally:
        for _ in taken:
            pkcs12_sandbox._opening.release()
    assert [found.kind for found in uploads.read_objects(data, b"secret").objects] == [
        "certificate",
        "private_key",
    ]
