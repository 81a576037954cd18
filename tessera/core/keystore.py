"""Private keys at rest: every stored key is encrypted with the key-encryption key (KEK).

The KEK file holds a keyring: the primary key first (new tokens), then older keys that are
still being rotated away (read only). MultiFernet decrypts with any of them, which is what
rotation needs. The file is either a bare Fernet key (one key, no master password: the
original format) or a JSON document; with a master password the keyring is sealed with a
key derived by argon2id, so a copy of the data directory alone does not reveal the KEK.

Decrypted keys are cached in memory by token, since CA keys are read on every issuance and
parsing an RSA key is not free. Another process may rotate the KEK: the encryptor asks its
source whether the file changed before encrypting, and reloads before giving up on a token.
"""

import base64
import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from argon2.low_level import Type, hash_secret_raw
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization

from tessera.core.errors import InvalidInput, TesseraError
from tessera.core.keys import PrivateKey

FORMAT = "tessera-kek/1"
# argon2id, RFC 9106's second recommended option (64 MiB, 3 passes): about 0.2 s here.
KDF_TIME_COST = 3
KDF_MEMORY_KIB = 64 * 1024
KDF_PARALLELISM = 1
MIN_MASTER_PASSWORD = 12


class KeyDecryptionError(TesseraError):
    """A stored key could not be decrypted with any configured KEK: the server's
    configuration is wrong (another data directory's KEK?), not the request."""

    status = 500


class MasterPasswordError(TesseraError):
    """The KEK file is sealed and the master password is missing or wrong."""

    status = 403


@dataclass(frozen=True)
class Keyring:
    """KEKs, primary first. `protected`: sealed with a master password in the file."""

    keys: tuple[bytes, ...]
    protected: bool = False

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("at least one key-encryption key is required")

    @property
    def primary(self) -> bytes:
        return self.keys[0]

    def with_primary(self, key: bytes) -> "Keyring":
        return Keyring((key, *(k for k in self.keys if k != key)), self.protected)

    def only_primary(self) -> "Keyring":
        return Keyring((self.primary,), self.protected)


def fingerprint(kek: bytes) -> str:
    """A short public name for a KEK (it reveals nothing usable about the key)."""
    return hashlib.sha256(b"tessera-kek-id" + kek).hexdigest()[:16]


def check_kek(text: str) -> bytes:
    """A caller-supplied KEK must be a Fernet key: urlsafe base64 of 32 random bytes."""
    raw = text.strip().encode("ascii", "replace")
    try:
        Fernet(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("new_key must be a Fernet key (urlsafe base64 of 32 bytes)") from exc
    return raw


def tls_key_password(kek: bytes) -> str:
    # The TLS key file's passphrase is derived from the primary KEK, never stored.
    return hmac.new(kek, b"tessera-tls-key", hashlib.sha256).hexdigest()


def dump_keyring(ring: Keyring, master_password: str | None = None) -> bytes:
    """Serialise a keyring; sealed when a master password is given."""
    if master_password is None:
        if len(ring.keys) == 1:
            return ring.primary + b"\n"
        doc: dict[str, object] = {
            "format": FORMAT,
            "protection": "none",
            "keys": [k.decode() for k in ring.keys],
        }
        return json.dumps(doc).encode() + b"\n"
    salt = os.urandom(16)
    params = {"t": KDF_TIME_COST, "m": KDF_MEMORY_KIB, "p": KDF_PARALLELISM}
    wrapping = _derive(master_password, salt, params["t"], params["m"], params["p"])
    inner = json.dumps([k.decode() for k in ring.keys]).encode()
    sealed: dict[str, object] = {
        "format": FORMAT,
        "protection": "argon2id",
        "kdf": {"salt": base64.b64encode(salt).decode(), **params},
        "sealed": Fernet(wrapping).encrypt(inner).decode(),
    }
    return json.dumps(sealed).encode() + b"\n"


def parse_keyring(data: bytes, master_password: str | None) -> Keyring:
    text = data.strip()
    if not text.startswith(b"{"):
        return Keyring((text,))
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError("unknown format")
        if doc.get("protection") == "none":
            return Keyring(tuple(k.encode() for k in doc["keys"]))
        return _unseal(doc, master_password)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyDecryptionError(f"the KEK file cannot be read: {exc}") from exc


def is_sealed(data: bytes) -> bool:
    text = data.strip()
    return text.startswith(b"{") and b'"argon2id"' in text


def _unseal(doc: dict[str, object], master_password: str | None) -> Keyring:
    if not master_password:
        raise MasterPasswordError(
            "the KEK is protected by a master password: set TESSERA_MASTER_PASSWORD "
            "or TESSERA_MASTER_PASSWORD_FILE"
        )
    kdf = doc["kdf"]
    if not isinstance(kdf, dict):
        raise ValueError("kdf must be an object")
    salt = base64.b64decode(kdf["salt"])
    wrapping = _derive(master_password, salt, int(kdf["t"]), int(kdf["m"]), int(kdf["p"]))
    try:
        inner = Fernet(wrapping).decrypt(str(doc["sealed"]).encode())
    except InvalidToken as exc:
        raise MasterPasswordError("wrong master password") from exc
    return Keyring(tuple(k.encode() for k in json.loads(inner)), protected=True)


@lru_cache(maxsize=4)
def _derive(password: str, salt: bytes, time_cost: int, memory_kib: int, lanes: int) -> bytes:
    # Bounded so a crafted file cannot make start-up allocate gigabytes.
    if not (1 <= time_cost <= 10 and 8 * lanes <= memory_kib <= 1024 * 1024 and lanes <= 8):
        raise ValueError("KDF parameters out of range")
    raw = hash_secret_raw(
        password.encode(), salt, time_cost, memory_kib, lanes, 32, Type.ID, version=19
    )
    return base64.urlsafe_b64encode(raw)


class KeyringSource(Protocol):
    """Where the keyring lives (the KEK file): `changed()` must be cheap (a stat)."""

    def changed(self) -> bool: ...

    def load(self) -> Keyring: ...


class KeyEncryptor:
    def __init__(self, keks: list[bytes] | Keyring, source: KeyringSource | None = None) -> None:
        ring = keks if isinstance(keks, Keyring) else Keyring(tuple(keks))
        self._source = source
        self._lock = threading.Lock()
        self._use(ring)
        self._load = lru_cache(maxsize=256)(self._decrypt_uncached)

    @staticmethod
    def new_kek() -> bytes:
        return Fernet.generate_key()

    @property
    def ring(self) -> Keyring:
        return self._ring

    def _use(self, ring: Keyring) -> None:
        self._ring = ring
        self._primary = Fernet(ring.primary)
        self._fernet = MultiFernet([Fernet(k) for k in ring.keys])

    def refresh(self, force: bool = False) -> bool:
        """Re-read the keyring if its file changed. A file this process cannot open (sealed
        since, without the password here) leaves the keys in memory in place."""
        if self._source is None:
            return False
        with self._lock:
            if not (force or self._source.changed()):
                return False
            try:
                ring = self._source.load()
            except MasterPasswordError:
                return False
            if ring.keys == self._ring.keys and ring.protected == self._ring.protected:
                return False
            self._use(ring)
            return True

    def encrypt(self, key: PrivateKey) -> str:
        self.refresh()  # a rotation elsewhere moved the primary key: write under the new one
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._primary.encrypt(der).decode("ascii")

    def decrypt(self, token: str) -> PrivateKey:
        return self._load(token)

    def seal(self, secret: bytes) -> str:
        """Encrypt a secret that is not a private key (a TOTP seed, a password, an HMAC
        key) under the primary KEK. The token is an ordinary Fernet token, so KEK rotation
        rewrites it like any key. Not cached: these are small and read rarely."""
        self.refresh()
        return self._primary.encrypt(secret).decode("ascii")

    def unseal(self, token: str) -> bytes:
        return self._open(token, "stored secret cannot be decrypted")

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")

    def under_primary(self, token: str) -> bool:
        """Whether the token was written with the primary KEK (no older key needed)."""
        try:
            self._primary.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def readable(self, token: str) -> bool:
        try:
            self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def _open(self, token: str, failure: str) -> bytes:
        """Decrypt with any KEK; on failure re-read the keyring once (another process may
        have rotated it) before reporting the server's configuration as wrong."""
        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken as exc:
            if not self.refresh():
                raise KeyDecryptionError(failure) from exc
            try:
                return self._fernet.decrypt(token.encode("ascii"))
            except InvalidToken as again:
                raise KeyDecryptionError(failure) from again

    def _decrypt_uncached(self, token: str) -> PrivateKey:
        der = self._open(token, "stored private key cannot be decrypted")
        key = serialization.load_der_private_key(der, password=None)
        return _as_supported(key)


def _as_supported(key: object) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise InvalidInput(f"unsupported private key type {type(key).__name__}")
