"""What the password-based key derivations of an uploaded PKCS#12 file or encrypted PKCS#8
key cost, read from the file before it is opened.

Such a file names its own cost (PBKDF2 or PKCS#12 KDF iterations, scrypt's N, r and p; the
PKCS#12 MAC's iterations or PBMAC1's PBKDF2), and OpenSSL pays it in full before it can tell
a wrong password: 2^31 PBKDF2 iterations are a quarter of an hour of one core. Anyone who may
decode a certificate (tools, smart import: `read:certificates`) could send that with every
request the rate limit lets through. So every derivation a file names is counted here (with
asn1crypto: iterations, or N*r*p for scrypt, which costs about as much per unit), and a file
asking for more than MAX_KDF_WORK in all is refused before cryptography opens it. Files as
OpenSSL (2,048 iterations), Java (10,000), Windows (2,000) or cryptography make them are
far below it, and so is a file with 600,000 PBKDF2 iterations on its MAC, certificates and key.

Not counted, because it cannot be seen without decrypting: a shrouded key bag inside an
encrypted SafeContents. OpenSSL decrypts at most one key bag per attempt; that derivation is
bounded by the CPU limit of the process that opens PKCS#12 files (`pkcs12_sandbox`).
"""

from asn1crypto import algos, core, keys, pem, pkcs12

from tessera.core.errors import InvalidInput

MAX_KDF_WORK = 4_000_000
# OpenSSL checks a PKCS#12 MAC up to three times: the password given, then (the second
# attempt, with none) no password and the empty one.
MAC_CHECKS = 3
MAX_NESTING = 8  # safeContentsBag within safeContentsBag
_SCRYPT = "1.3.6.1.4.1.11591.4.11"  # RFC 7914 section 7
_PBMAC1 = "1.2.840.113549.1.5.14"  # RFC 9579
_READ_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


class _ScryptParams(core.Sequence):
    _fields = [
        ("salt", core.OctetString),
        ("cost_parameter", core.Integer),
        ("block_size", core.Integer),
        ("parallelization_parameter", core.Integer),
        ("key_length", core.Integer, {"optional": True}),
    ]


class _Pbmac1Params(core.Sequence):
    _fields = [
        ("key_derivation_func", algos.KdfAlgorithm),
        ("message_auth_scheme", algos.HmacAlgorithm),
    ]


class Unreadable(Exception):
    """The structure cannot be read, so its cost cannot be told."""


def check_pkcs12(data: bytes, unreadable: str) -> None:
    """Refuses a PKCS#12 file whose derivations cost more than MAX_KDF_WORK (or whose
    structure cannot be read: `unreadable` is the message then)."""
    try:
        work = _pkcs12_work(pkcs12.Pfx.load(data))
    except (Unreadable, *_READ_ERRORS) as exc:
        raise InvalidInput(unreadable) from exc
    _within_budget(work, "PKCS#12 file")


def check_key(key: bytes, unreadable: str) -> None:
    """Refuses a key (PEM block or DER) whose derivation costs too much, or whose encryption
    cannot be read (`unreadable` is the message then)."""
    try:
        work = _key_work(key)
    except (Unreadable, *_READ_ERRORS) as exc:
        raise InvalidInput(unreadable) from exc
    _within_budget(work, "private key")


def check_bundle_keys(keys_pem: list[bytes]) -> None:
    """Refuses PEM key blocks, all opened with one password, that together cost too much.
    One that cannot be read counts for nothing here: opening it refuses it on its own."""
    work = 0
    for key in keys_pem:
        try:
            work += _key_work(key)
        except (Unreadable, *_READ_ERRORS):
            continue
    _within_budget(work, "private keys")


def _within_budget(work: int, what: str) -> None:
    if work > MAX_KDF_WORK:
        raise InvalidInput(
            f"the {what}'s password-based encryption asks for {work} key derivation "
            f"iterations; at most {MAX_KDF_WORK} are accepted (export it again with fewer, "
            "e.g. OpenSSL's default of 2048)"
        )


def _key_work(key: bytes) -> int:
    """An EncryptedPrivateKeyInfo's derivation; nothing for a key in the clear or in
    OpenSSL's traditional encrypted PEM (one MD5 round)."""
    if pem.detect(key):
        label, _, key = pem.unarmor(key)
        if label != "ENCRYPTED PRIVATE KEY":
            return 0
    try:
        info = keys.EncryptedPrivateKeyInfo.load(key)
        algorithm = info["encryption_algorithm"]
    except _READ_ERRORS:
        return 0  # no EncryptedPrivateKeyInfo: nothing is derived to read it
    return _encryption_work(algorithm)


def _pkcs12_work(pfx: pkcs12.Pfx) -> int:
    work = MAC_CHECKS * _mac_work(pfx["mac_data"])
    for content in pfx.authenticated_safe:
        kind = content["content_type"].native
        if kind == "encrypted_data":
            encrypted = content["content"]["encrypted_content_info"]
            work += _encryption_work(encrypted["content_encryption_algorithm"])
        elif kind == "data":
            work += _bags_work(pkcs12.SafeContents.load(content["content"].native), 0)
    return work


def _mac_work(mac_data: pkcs12.MacData) -> int:
    if isinstance(mac_data, core.Void):
        return 0
    work = int(mac_data["iterations"].native)
    algorithm = mac_data["mac"]["digest_algorithm"]
    if algorithm["algorithm"].dotted == _PBMAC1:
        params = _Pbmac1Params.load(algorithm["parameters"].dump())
        work += _kdf_work(params["key_derivation_func"])
    return work


def _bags_work(bags: pkcs12.SafeContents, depth: int) -> int:
    if depth > MAX_NESTING:
        raise Unreadable("SafeContents nested too deep")
    work = 0
    for bag in bags:
        kind = bag["bag_id"].native
        if kind == "pkcs8_shrouded_key_bag":
            work += _encryption_work(bag["bag_value"]["encryption_algorithm"])
        elif kind == "safe_contents":
            work += _bags_work(bag["bag_value"], depth + 1)
    return work


def _encryption_work(algorithm: algos.EncryptionAlgorithm) -> int:
    if algorithm["algorithm"].native == "pbes2":
        return _kdf_work(algorithm["parameters"]["key_derivation_func"])
    return int(algorithm.kdf_iterations)  # PBES1 and the PKCS#12 PBEs; no PBE: ValueError


def _kdf_work(kdf: algos.KdfAlgorithm) -> int:
    if kdf["algorithm"].dotted == _SCRYPT:
        params = _ScryptParams.load(kdf["parameters"].dump())
        return int(
            params["cost_parameter"].native
            * params["block_size"].native
            * params["parallelization_parameter"].native
        )
    if kdf["algorithm"].native != "pbkdf2":
        raise Unreadable(f"unknown key derivation {kdf['algorithm'].dotted}")
    return int(kdf["parameters"]["iteration_count"].native)
