"""Private keys at rest: every stored key is encrypted with the key-encryption key (KEK).

MultiFernet lets a new KEK be added in front while old tokens stay readable, which is what
key rotation needs. Decrypted keys are cached in memory by token, since CA keys are read on
every issuance and parsing an RSA key is not free.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization

from tessera.core.errors import InvalidInput, TesseraError
from tessera.core.keys import PrivateKey


class KeyDecryptionError(TesseraError):
    """A stored key could not be decrypted with any configured KEK: the server's
    configuration is wrong (another data directory's KEK?), not the request."""

    status = 500


class KeyEncryptor:
    def __init__(self, keks: list[bytes]) -> None:
        if not keks:
            raise ValueError("at least one key-encryption key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keks])
        self._load = lru_cache(maxsize=256)(self._decrypt_uncached)

    @staticmethod
    def new_kek() -> bytes:
        return Fernet.generate_key()

    def encrypt(self, key: PrivateKey) -> str:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._fernet.encrypt(der).decode("ascii")

    def decrypt(self, token: str) -> PrivateKey:
        return self._load(token)

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")

    def _decrypt_uncached(self, token: str) -> PrivateKey:
        try:
            der = self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken as exc:
            raise KeyDecryptionError("stored private key cannot be decrypted") from exc
        key = serialization.load_der_private_key(der, password=None)
        return _as_supported(key)


def _as_supported(key: object) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise InvalidInput(f"unsupported private key type {type(key).__name__}")
