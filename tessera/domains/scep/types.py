"""What the SCEP services hand the protocol layer: who answers, and what the answer is."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

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
    """What the service decided, before it is signed (and encrypted). `password`: for a
    SUCCESS to a key that cannot encrypt, the challenge password the request proved (a
    dynamic profile's one-time password, RFC 8894 section 3.1), to encrypt it with."""

    status: PkiStatus
    fail_info: str | None = None
    text: str | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)
    crl: bytes | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def failure(cls, fail_info: str, text: str) -> "Reply":
        return cls(PkiStatus.FAILURE, fail_info, text)

    @classmethod
    def pending(cls) -> "Reply":
        return cls(PkiStatus.PENDING)

    @classmethod
    def success(
        cls,
        certificates: list[x509.Certificate],
        crl: bytes | None = None,
        password: str | None = None,
    ) -> "Reply":
        return cls(PkiStatus.SUCCESS, certificates=certificates, crl=crl, password=password)


class ProfileSettings(Protocol):
    """What the protocol operations read of a SCEP profile: the stored row, or the read model the
    protocol's hot path loads without the ORM (`repositories.scep.ProfileView`)."""

    @property
    def id(self) -> int: ...
    @property
    def slug(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def ca_id(self) -> int | None: ...
    @property
    def next_ca_id(self) -> int | None: ...
    @property
    def template_id(self) -> int | None: ...
    @property
    def auto_approve(self) -> bool: ...
    @property
    def challenge_type(self) -> str: ...
    @property
    def queue_without_challenge(self) -> bool: ...
    @property
    def use_ra(self) -> bool: ...
    @property
    def ra_certificate_id(self) -> int | None: ...
    @property
    def next_ra_certificate_id(self) -> int | None: ...
