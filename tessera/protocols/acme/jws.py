"""JWS as ACME uses it (RFC 8555 section 6.2): flattened JSON serialization, a protected
header with alg, nonce, url and exactly one of jwk or kid, and no unprotected header.

Signatures are checked with josepy for ES256, ES384 and RS256, and with `cryptography` for
EdDSA (RFC 8037), which josepy does not implement."""

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import josepy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tessera.core import jsontext
from tessera.protocols.acme.problems import AcmeProblem, malformed

ALGORITHMS = ("ES256", "ES384", "RS256", "EdDSA")
_JOSEPY = {"ES256": josepy.ES256, "ES384": josepy.jwa.ES384, "RS256": josepy.RS256}
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
MIN_RSA_BITS = 2048

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def b64decode(value: object, what: str) -> bytes:
    """Strict base64url without padding: anything else is malformed, never a 500."""
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise malformed(f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise malformed(f"{what} is not unpadded base64url") from exc


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Jws:
    protected: dict[str, Any]
    protected_b64: str
    payload_b64: str
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.protected.get("alg"))

    @property
    def url(self) -> object:
        return self.protected.get("url")

    @property
    def nonce(self) -> object:
        return self.protected.get("nonce")

    @property
    def kid(self) -> str | None:
        kid = self.protected.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def jwk(self) -> dict[str, Any] | None:
        jwk = self.protected.get("jwk")
        return jwk if isinstance(jwk, dict) else None

    def json_payload(self) -> dict[str, Any]:
        """The payload as a JSON object; POST-as-GET (empty payload) is refused here."""
        if self.payload == b"":
            raise malformed("this request needs a JSON payload, not POST-as-GET")
        try:
            value = jsontext.loads(self.payload)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise malformed("the payload is not JSON") from exc
        if not isinstance(value, dict):
            raise malformed("the payload must be a JSON object")
        return value


def parse(body: bytes | dict[str, Any], algorithms: tuple[str, ...] = ALGORITHMS) -> Jws:
    """Read a flattened JWS and its protected header; check the header's shape."""
    document = body if isinstance(body, dict) else _json_object(body, "the request body")
    if "signatures" in document:
        raise malformed("only the flattened JWS JSON serialization is accepted")
    if "header" in document:
        raise malformed("JWS unprotected headers are not allowed")
    missing = [k for k in ("protected", "payload", "signature") if k not in document]
    if missing:
        raise malformed(f"the JWS lacks {', '.join(missing)}")
    protected = _json_object(b64decode(document["protected"], "protected"), "protected header")
    payload = b64decode(document["payload"], "payload")
    signature = b64decode(document["signature"], "signature")
    alg = protected.get("alg")
    if alg not in algorithms:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"unsupported JWS algorithm {alg!r}",
            extra={"algorithms": list(algorithms)},
        )
    if "crit" in protected:  # RFC 7515 4.1.11: extensions a recipient does not know refuse
        raise malformed("the JWS names critical header parameters this server does not know")
    if ("jwk" in protected) == ("kid" in protected):
        raise malformed("the protected header needs exactly one of jwk and kid")
    if "jwk" in protected and not isinstance(protected["jwk"], dict):
        raise malformed("jwk must be a JSON object")
    if "kid" in protected and not isinstance(protected["kid"], str):
        raise malformed("kid must be a string")
    if not isinstance(protected.get("url"), str):
        raise malformed("the protected header needs a url")
    return Jws(protected, str(document["protected"]), str(document["payload"]), payload, signature)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = jsontext.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise malformed(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise malformed(f"{what} must be a JSON object")
    return value


def public_key(jwk: dict[str, Any]) -> PublicKey:
    """A public JWK (RSA, EC P-256/P-384, OKP Ed25519) as a cryptography key. Account keys
    are read on every request: parsed keys are cached by their canonical JSON."""
    return _public_key(json.dumps(jwk, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=4096)
def _public_key(canonical: str) -> PublicKey:
    jwk = json.loads(canonical)
    if "d" in jwk:
        raise malformed("the JWK contains a private key")
    kty = jwk.get("kty")
    try:
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise AcmeProblem("badPublicKey", "only Ed25519 OKP keys are supported")
            return ed25519.Ed25519PublicKey.from_public_bytes(b64decode(jwk.get("x"), "x"))
        if kty in ("EC", "RSA"):
            key = getattr(josepy.JWK.from_json(jwk), "key", None)
            key = getattr(key, "_wrapped", key)
            if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                _check_strength(key)
                return key
    except AcmeProblem:
        raise
    except (josepy.errors.Error, ValueError, TypeError, KeyError, AttributeError) as exc:
        # AttributeError: josepy reads members of the wrong JSON type (a number for "x")
        raise AcmeProblem("badPublicKey", f"the JWK cannot be read: {exc}") from exc
    raise AcmeProblem("badPublicKey", f"unsupported key type {kty!r}")


def _check_strength(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise AcmeProblem("badPublicKey", f"RSA account keys need {MIN_RSA_BITS} bits or more")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in (
        "secp256r1",
        "secp384r1",
    ):
        raise AcmeProblem("badPublicKey", "EC account keys must be P-256 or P-384")


def verify(jws: Jws, key: PublicKey) -> None:
    """The signature must match the key, and the algorithm must fit the key."""
    message = f"{jws.protected_b64}.{jws.payload_b64}".encode("ascii")
    alg = jws.alg
    if alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise _mismatch(alg)
        try:
            key.verify(jws.signature, message)
        except InvalidSignature as exc:
            raise malformed("the JWS signature does not verify") from exc
        return
    if alg == "RS256" and not isinstance(key, rsa.RSAPublicKey):
        raise _mismatch(alg)
    if alg in _CURVES and not (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES[alg])
    ):
        raise _mismatch(alg)
    try:
        valid = _JOSEPY[alg].verify(key, message, jws.signature)
    except (josepy.errors.Error, ValueError) as exc:
        raise malformed("the JWS signature does not verify") from exc
    if not valid:
        raise malformed("the JWS signature does not verify")


def _mismatch(alg: str) -> AcmeProblem:
    return AcmeProblem(
        "badSignatureAlgorithm",
        f"{alg} does not fit the account key's type",
        extra={"algorithms": list(ALGORITHMS)},
    )


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 (and RFC 8037 for OKP): SHA-256 over the required members, base64url."""
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    members = required.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise AcmeProblem("badPublicKey", "the JWK lacks the members of its key type")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64encode(hashlib.sha256(canonical.encode()).digest())


_JWK_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48)}


def jwk_of(key: object) -> dict[str, str] | None:
    """The JWK (RFC 7518 6, RFC 8037) of a public key of a type an account key may have, in
    the minimal encoding the RFCs require; None for any other key, which no account has."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _JWK_CURVES:
        crv, size = _JWK_CURVES[key.curve.name]
        point = key.public_numbers()
        x, y = point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big")
        return {"kty": "EC", "crv": crv, "x": b64encode(x), "y": b64encode(y)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64encode(raw)}
    return None


def _b64_uint(value: int) -> str:
    return b64encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """Only the members that define the key (what we store and show)."""
    keep = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x")}
    return {m: jwk[m] for m in keep.get(str(jwk.get("kty")), ()) if m in jwk}


def verify_hmac(jws: Jws, secret: bytes) -> bool:
    """External account binding (RFC 8555 7.3.4): HS256 over the binding's signing input."""
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    digest = digests.get(str(jws.protected.get("alg")))
    if digest is None:
        return False
    message = f"{jws.protected_b64}.{jws.payload_b64}".encode("ascii")
    expected = hmac.new(secret, message, digest).digest()
    return hmac.compare_digest(expected, jws.signature)
