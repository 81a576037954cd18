"""The server's TLS key file is encrypted with a passphrase derived from the primary KEK, so
it must follow the KEK when the KEK is rotated."""

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tessera.core.keystore import Keyring, tls_key_password


def opening_password(path: Path, ring: Keyring) -> str | None:
    """The passphrase, derived from one of the ring's KEKs, that opens the key file as it is
    now (the primary's once a rotation has re-encrypted it); None when none does."""
    data = path.read_bytes()
    for kek in ring.keys:
        password = tls_key_password(kek)
        try:
            serialization.load_pem_private_key(data, password.encode())
        except (ValueError, TypeError):
            continue
        return password
    return None


def rewrap_tls_key(path: Path, ring: Keyring) -> bool:
    """Make the key file open with the primary KEK's passphrase. Tries the older KEKs still
    in the ring (a rotation stopped between writing the keyring and this step). False when
    no KEK opens it: the caller issues a new TLS certificate and key."""
    data = path.read_bytes()
    for index, kek in enumerate(ring.keys):
        try:
            key = serialization.load_pem_private_key(data, tls_key_password(kek).encode())
        except (ValueError, TypeError):
            continue
        if index == 0:
            return True
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(tls_key_password(ring.primary).encode()),
        )
        tmp = path.with_name(path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(encrypted)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return True
    return False
