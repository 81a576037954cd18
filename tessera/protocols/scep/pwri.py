"""Password-based CMS envelopes (PasswordRecipientInfo: RFC 3211, RFC 5652 section 6.2.4),
what RFC 8894 section 3.1 has a SCEP message use when its recipient's key cannot encrypt
(EC, DSA): the content key is wrapped with a key derived from the challengePassword.

The key derivation is PBKDF2 (the one RFC 3211 names); the key wrap is id-alg-PWRI-KEK
(RFC 3211 section 2.3) with the AES or 3DES CBC cipher its parameters name. asn1crypto reads
and writes the structures, `cryptography` does PBKDF2 and the block ciphers.
"""

import os

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tessera.domains.scep.types import BAD_ALG, BAD_MESSAGE_CHECK
from tessera.protocols.scep.cms import (
    ASN1_ERRORS,
    CIPHERS,
    HASHES,
    CmsError,
    Decrypted,
    answer_cipher,
    block_cipher,
    cipher_key_size,
    encrypted_content_info,
    load_enveloped,
    sealed_content,
)

PWRI_KEK = "1.2.840.113549.1.9.16.3.9"  # id-alg-PWRI-KEK (RFC 3211 section 2.3)
# The iteration count is the sender's choice, and every envelope costs us one derivation:
# bounded, so an unauthenticated request cannot buy much CPU with one. The challenge passwords
# are random (143 bits), so iterations add nothing to their strength; OpenSSL writes 2048.
MAX_ITERATIONS = 20_000  # ~25 ms with HMAC-SHA-512 here; 10,000 is a common default
ANSWER_ITERATIONS, SALT_BYTES = 10_000, 16
_ENVELOPED_V3 = 3  # RFC 5652 section 6.1: an EnvelopedData with a pwri is version 3


def signing_only(cert: x509.Certificate) -> bool:
    """Whether a requester's key is one SCEP cannot encrypt to (EC): its answers are
    encrypted with the challenge password. Others go through `cms.recipient_key`."""
    try:
        return isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    except ASN1_ERRORS:
        return False  # refused by `cms.recipient_key`


def password_only(der: bytes) -> bool:
    """Whether an EnvelopedData is for a password (a PasswordRecipientInfo) and for no key:
    one with a key-transport recipient is opened as before, with the RA's key."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "enveloped_data":
            return False
        names = [choice.name for choice in info["content"]["recipient_infos"]]
    except ASN1_ERRORS:
        return False  # refused as unreadable by the key-transport path
    return "pwri" in names and "ktri" not in names


def decrypt(der: bytes, password: str, allow_des: bool = False) -> Decrypted:
    """Open an EnvelopedData with its PasswordRecipientInfo and `password`. A wrong password
    is badMessageCheck (as a key that does not open it is); a KDF or cipher we do not do
    is badAlg."""
    enveloped = load_enveloped(der)
    try:
        pwri = next(c.chosen for c in enveloped["recipient_infos"] if c.name == "pwri")
        kdf = pwri["key_derivation_algorithm"]
        wrap = pwri["key_encryption_algorithm"]
        wrapped = pwri["encrypted_key"].native
        wrap_oid = wrap["algorithm"].dotted
    except (StopIteration, *ASN1_ERRORS) as exc:
        raise CmsError(BAD_MESSAGE_CHECK, f"unreadable PasswordRecipientInfo: {exc}") from exc
    sealed = sealed_content(enveloped, allow_des)
    if wrap_oid != PWRI_KEK:
        raise CmsError(BAD_ALG, f"unsupported password key wrap {wrap_oid}")
    kek_algorithm, kek_cipher, kek_size = _kek_cipher(wrap, allow_des)
    kek = _derive(kdf, password, kek_size)
    return sealed.open(_unwrap(kek_cipher, kek, _iv(kek_algorithm), wrapped))


def _kek_cipher(
    wrap: cms.KeyEncryptionAlgorithm, allow_des: bool
) -> tuple[algos.EncryptionAlgorithm, str, int]:
    """The CBC cipher id-alg-PWRI-KEK names in its parameters, and its key size."""
    try:
        kek_algorithm = algos.EncryptionAlgorithm.load(wrap["parameters"].dump(), strict=True)
        kek_cipher = kek_algorithm["algorithm"].native
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, f"unreadable password key wrap cipher: {exc}") from exc
    kek_size = cipher_key_size(kek_cipher, allow_des)
    if kek_size is None:
        raise CmsError(BAD_ALG, f"unsupported password key wrap cipher {kek_cipher}")
    return kek_algorithm, kek_cipher, kek_size


def encrypt(content: bytes, password: str, request_cipher: str) -> bytes:
    """An EnvelopedData of `content` for whoever knows `password`: the content and the key
    wrap use the request's cipher (single DES made 3DES), the KEK is PBKDF2-HMAC-SHA256."""
    cipher_name = answer_cipher(request_cipher)
    content_key = os.urandom(CIPHERS[cipher_name])
    salt = os.urandom(SALT_BYTES)
    kdf = algos.KdfAlgorithm(
        {
            "algorithm": "pbkdf2",
            "parameters": {
                "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                "iteration_count": ANSWER_ITERATIONS,
                "prf": {"algorithm": "sha256"},
            },
        }
    )
    kek = _pbkdf2(password, salt, ANSWER_ITERATIONS, "sha256", CIPHERS[cipher_name])
    iv = os.urandom(block_cipher(cipher_name, kek).block_size // 8)
    kek_algorithm = algos.EncryptionAlgorithm(
        {"algorithm": cipher_name, "parameters": core.OctetString(iv)}
    )
    recipient = cms.PasswordRecipientInfo(
        {
            "version": "v0",
            "key_derivation_algorithm": kdf,
            "key_encryption_algorithm": {
                "algorithm": PWRI_KEK,
                "parameters": core.Any.load(kek_algorithm.dump()),
            },
            "encrypted_key": _wrap(cipher_name, kek, iv, content_key),
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": _ENVELOPED_V3,
            "recipient_infos": [cms.RecipientInfo(name="pwri", value=recipient)],
            "encrypted_content_info": cms.EncryptedContentInfo.load(
                encrypted_content_info(content, cipher_name, content_key)
            ),
        }
    )
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def _derive(kdf: algos.KdfAlgorithm | None, password: str, key_size: int) -> bytes:
    """The KEK: PBKDF2 with the envelope's salt, iterations and PRF. An absent
    keyDerivationAlgorithm means a KEK from elsewhere (a token): not ours to supply."""
    try:
        if not kdf or kdf["algorithm"].native != "pbkdf2":
            name = kdf["algorithm"].dotted if kdf else "none"
            raise CmsError(BAD_ALG, f"unsupported password key derivation {name}")
        params = kdf["parameters"]
        salt_choice = params["salt"]
        iterations = params["iteration_count"].native
        key_length = params["key_length"].native
        prf = params["prf"]["algorithm"].native
    except CmsError:
        raise
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, f"unreadable PBKDF2 parameters: {exc}") from exc
    if salt_choice.name != "specified" or prf not in HASHES:
        raise CmsError(BAD_ALG, f"unsupported PBKDF2 salt source or PRF {prf}")
    if not 1 <= iterations <= MAX_ITERATIONS or key_length not in (None, key_size):
        raise CmsError(BAD_ALG, "unsupported PBKDF2 iteration count or key length")
    return _pbkdf2(password, salt_choice.chosen.native, iterations, prf, key_size)


def _pbkdf2(password: str, salt: bytes, iterations: int, prf: str, size: int) -> bytes:
    kdf = PBKDF2HMAC(HASHES[prf](), size, salt, iterations)
    return kdf.derive(password.encode())


def _iv(algorithm: algos.EncryptionAlgorithm) -> bytes:
    try:
        return bytes(algorithm.encryption_iv)
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, "the password key wrap has no usable IV") from exc


def _cbc(name: str, key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(block_cipher(name, key), modes.CBC(iv))
    context = cipher.encryptor() if encrypt else cipher.decryptor()
    return context.update(data) + context.finalize()


def _wrap(name: str, kek: bytes, iv: bytes, content_key: bytes) -> bytes:
    """RFC 3211 2.3.1: length, three check bytes (the key's first three, inverted), the key,
    random padding to at least two blocks; encrypted in CBC twice, the second pass chained
    from the first pass's last block."""
    block = len(iv)
    formatted = bytes([len(content_key)]) + bytes(b ^ 0xFF for b in content_key[:3])
    formatted += content_key
    size = max(2 * block, -(-len(formatted) // block) * block)
    formatted += os.urandom(size - len(formatted))
    first = _cbc(name, kek, iv, formatted, encrypt=True)
    return _cbc(name, kek, first[-block:], first, encrypt=True)


def _unwrap(name: str, kek: bytes, iv: bytes, wrapped: bytes) -> bytes:
    """RFC 3211 2.3.2, the wrap undone: the last block (chained from the one before it)
    gives the IV of the outer pass, then the inner pass is decrypted with the real IV."""
    block = len(iv)
    if block * 8 != block_cipher(name, kek).block_size:
        raise CmsError(BAD_ALG, "the password key wrap has no usable IV")
    if len(wrapped) < 2 * block or len(wrapped) % block:
        raise CmsError(BAD_MESSAGE_CHECK, "the wrapped content key is truncated")
    last = _cbc(name, kek, wrapped[-2 * block : -block], wrapped[-block:], encrypt=False)
    inner = _cbc(name, kek, last, wrapped[:-block], encrypt=False) + last
    formatted = _cbc(name, kek, iv, inner, encrypt=False)
    length, check, rest = formatted[0], formatted[1:4], formatted[4:]
    if (
        length < 3
        or length > len(rest)
        or bytes(a ^ b for a, b in zip(check, rest[:3], strict=True)) != b"\xff\xff\xff"
    ):
        raise CmsError(BAD_MESSAGE_CHECK, "the envelope cannot be opened with this password")
    return rest[:length]
