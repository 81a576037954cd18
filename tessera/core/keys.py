"""Key types, generation, the key-strength floor and key descriptions."""

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tessera.core.errors import InvalidInput, PolicyViolation

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

Algorithm = Literal["RSA", "EC", "Ed25519"]

RSA_SIZES = (2048, 3072, 4096)
MIN_RSA_BITS = 2048
CURVES: dict[int, ec.EllipticCurve] = {
    256: ec.SECP256R1(),
    384: ec.SECP384R1(),
    521: ec.SECP521R1(),
}
CURVE_NAMES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}


@dataclass(frozen=True)
class KeySpec:
    algorithm: Algorithm
    size: int  # RSA modulus bits, or EC field size; 256 for Ed25519

    @property
    def label(self) -> str:
        if self.algorithm == "RSA":
            return f"RSA-{self.size}"
        if self.algorithm == "EC":
            return f"EC-P{self.size}"
        return "Ed25519"


def parse_key_spec(algorithm: str | None, size: int | None, curve: str | None = None) -> KeySpec:
    """Accept the spellings the seed and common clients use: RSA, EC/ECDSA, Ed25519."""
    name = (algorithm or "RSA").strip().upper()
    if name == "RSA":
        bits = 2048 if size is None else size  # 0 is a size asked for, not "the default"
        if bits < MIN_RSA_BITS:
            raise PolicyViolation(f"RSA keys must be at least {MIN_RSA_BITS} bits (got {bits})")
        if bits not in RSA_SIZES:
            # An RSA modulus may have any size: refusing one is policy (the floor below, the
            # cost of generating one above), so 422 at both ends, as the floor always was.
            raise PolicyViolation(f"RSA key size must be one of {list(RSA_SIZES)} (got {bits})")
        return KeySpec("RSA", bits)
    if name in ("EC", "ECDSA"):
        # An EC size names a curve: one that names none is malformed input, as a bad name.
        bits = _curve_bits(curve) if curve else (256 if size is None else size)
        if bits not in CURVES:
            raise InvalidInput("EC key size must be 256, 384 or 521 (P-256, P-384, P-521)")
        return KeySpec("EC", bits)
    if name == "ED25519":
        if size not in (None, 256):
            raise InvalidInput(f"Ed25519 keys are 256 bits; key_size {size} contradicts it")
        return KeySpec("Ed25519", 256)
    raise InvalidInput(f"unknown key algorithm {algorithm!r}: use RSA, EC or Ed25519")


def _curve_bits(curve: str) -> int:
    text = curve.strip().lower().replace("-", "")
    for key, bits in {"p256": 256, "p384": 384, "p521": 521, **CURVE_NAMES}.items():
        if text == key or text == f"prime{bits}v1":
            return bits
    raise InvalidInput(f"unknown curve {curve!r}")


def generate_private_key(spec: KeySpec) -> PrivateKey:
    if spec.algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.size)
    if spec.algorithm == "EC":
        return ec.generate_private_key(CURVES[spec.size])
    return ed25519.Ed25519PrivateKey.generate()


def describe_public_key(key: object) -> KeySpec:
    """Name a public key; refuse types Tessera does not issue for."""
    if isinstance(key, rsa.RSAPublicKey):
        return KeySpec("RSA", key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        # The curve itself, not its size: secp256k1 and brainpoolP256r1 are 256 bits too.
        known = CURVES.get(key.curve.key_size)
        if known is None or key.curve.name != known.name:
            raise PolicyViolation(
                f"unsupported EC curve {key.curve.name}; Tessera issues for P-256, P-384 and P-521"
            )
        return KeySpec("EC", key.curve.key_size)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeySpec("Ed25519", 256)
    if isinstance(key, ed448.Ed448PublicKey):
        raise PolicyViolation("Ed448 keys are not supported")
    raise PolicyViolation(f"unsupported public key type {type(key).__name__}")


def enforce_key_floor(key: object) -> KeySpec:
    """The floor applied on every issuance path, whatever produced the key."""
    spec = describe_public_key(key)
    if spec.algorithm == "RSA" and spec.size < MIN_RSA_BITS:
        raise PolicyViolation(f"RSA keys must be at least {MIN_RSA_BITS} bits (got {spec.size})")
    return spec


def signature_hash(issuer_key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The digest to sign with: matched to the curve for EC, none for Ed25519."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        if issuer_key.curve.key_size >= 521:
            return hashes.SHA512()
        if issuer_key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()
