"""What the SCEP services hand the protocol layer: who answers, and what the answer is."""

from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

# failInfo values (RFC 8894 section 3.2.1.4).
BAD_ALG, BAD_MESSAGE_CHECK, BAD_REQUEST, BAD_TIME, BAD_CERT_ID = "0", "1", "2", "3", "4"


class PkiStatus(StrEnum):
    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


@dataclass(frozen=True)
class Responder:
    """Who answers for a profile: the RA (or the CA itself) with its RSA key, and the
    certificates GetCACert hands out (the responder's first)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey
    ca_certificates: list[x509.Certificate]


@dataclass(frozen=True)
class Reply:
    """What the service decided, before it is signed (and encrypted)."""

    status: PkiStatus
    fail_info: str | None = None
    text: str | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)
    crl: bytes | None = None

    @classmethod
    def failure(cls, fail_info: str, text: str) -> "Reply":
        return cls(PkiStatus.FAILURE, fail_info, text)

    @classmethod
    def pending(cls) -> "Reply":
        return cls(PkiStatus.PENDING)

    @classmethod
    def success(cls, certificates: list[x509.Certificate], crl: bytes | None = None) -> "Reply":
        return cls(PkiStatus.SUCCESS, certificates=certificates, crl=crl)
