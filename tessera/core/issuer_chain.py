"""What the chain above an issuer allows below it, as relying parties validate a path.

A relying party walks the whole path (RFC 5280 6.1): the permitted subtrees of every CA in
it are intersected and the excluded ones unioned (6.1.4 g), so a name must lie within the
permitted subtrees of each CA that has some of its type and outside every excluded one; and
each pathLenConstraint counts every CA below it that is not self-issued (6.1.4 l, m). A CA
imported under a constrained one need not repeat the constraints, so checking the direct
issuer alone would sign certificates that fail validation at every client.

The chain is the issuer's certificate and its issuers as far as they are held here; an
ancestor not held here is unknown and not checked. Like OpenSSL, the constraints of the root
itself count too.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import NameOID

from tessera.core import name_constraints
from tessera.core.errors import PolicyViolation
from tessera.core.names import name_text
from tessera.core.profile import CertificateRequest


@dataclass(frozen=True)
class PathRoom:
    """How many more CAs (not self-issued) may stand below the issuer, and the CA whose
    pathLenConstraint sets it. Negative: the chain is too deep already."""

    room: int
    limit: int
    holder: str


@dataclass(frozen=True)
class IssuerChain:
    """The issuing CA's certificate first, then its issuers up to the highest held here."""

    certificates: tuple[x509.Certificate, ...] = ()

    def check(self, request: CertificateRequest) -> None:
        """Refuse what no relying party would accept under this chain: a chain broken
        already, names outside any CA's constraints, a sub-CA deeper than a path length
        allows (or asking for a longer one than is left)."""
        if not self.certificates:
            return
        broken = self.broken()
        if broken is not None:
            raise PolicyViolation(broken)
        self.check_names(request.subject, request.sans, request.is_ca)
        if request.is_ca and not self._self_issued(request):
            self._check_depth(request.path_length)

    def broken(self) -> str | None:
        """Why nothing signed under this chain would validate, or None."""
        return _broken_chain(self.certificates) if self.certificates else None

    def check_names(
        self, subject: x509.Name, sans: Sequence[x509.GeneralName], is_ca: bool = False
    ) -> None:
        for position, certificate in enumerate(self.certificates):
            constraints = name_constraints.issuer_constraints(certificate)
            if constraints is not None:
                holder = _holder(position, certificate)
                name_constraints.check(constraints, subject, sans, is_ca, holder)

    def with_default_path_length(self, request: CertificateRequest) -> CertificateRequest:
        """A sub-CA that asks for no path length gets what the chain leaves it. Left
        unlimited, it could sign CAs below it that an ancestor's constraint forbids."""
        if not request.is_ca or request.path_length is not None or self._self_issued(request):
            return request
        room = path_room(self.certificates)
        if room is None or room.room < 1:
            return request  # unlimited; or no sub-CA allowed at all, which `check` refuses
        return replace(request, path_length=room.room - 1)

    def subject_within(self, preferred: x509.Name, common_name: str) -> x509.Name:
        """A subject for a certificate Tessera names itself (an OCSP responder, a SCEP RA):
        `preferred` when the chain's constraints allow it, else `common_name` under the
        issuer's own subject, else under a permitted directoryName subtree of the chain."""
        for candidate in self._subject_candidates(preferred, common_name):
            if self._names_allowed(candidate):
                return candidate
        raise PolicyViolation(
            f"no subject named {common_name!r} fits the directoryName constraints of the CA "
            f"chain of {name_text(self.certificates[0].subject)!r}"
        )

    def _subject_candidates(self, preferred: x509.Name, common_name: str) -> list[x509.Name]:
        bases = [_without_names(self.certificates[0].subject)] if self.certificates else []
        bases += sorted(_permitted_directory_names(self.certificates), key=len, reverse=True)
        return [preferred, *(_under(base, common_name) for base in bases)]

    def _names_allowed(self, subject: x509.Name) -> bool:
        try:
            self.check_names(subject, ())
        except PolicyViolation:
            return False
        return True

    def _self_issued(self, request: CertificateRequest) -> bool:
        return bool(self.certificates) and request.subject == self.certificates[0].subject

    def _check_depth(self, path_length: int | None) -> None:
        room = path_room(self.certificates)
        if room is None:
            return
        if room.room < 1:
            raise PolicyViolation(
                f"the path length constraint of {room.holder} ({room.limit}) allows no "
                "further CA below the issuing CA"
            )
        if path_length is not None and path_length > room.room - 1:
            raise PolicyViolation(
                f"path length must be at most {room.room - 1}: the path length constraint "
                f"of {room.holder} ({room.limit}) counts the CAs below it"
            )


def path_room(chain: Sequence[x509.Certificate]) -> PathRoom | None:
    """The tightest pathLenConstraint along the chain (the issuer first): each counts the CAs
    between it and what is issued now, self-issued ones aside. None when none sets one."""
    tightest: PathRoom | None = None
    below = 0
    for position, certificate in enumerate(chain):
        limit = _path_length(certificate)
        if limit is not None and (tightest is None or limit - below < tightest.room):
            tightest = PathRoom(limit - below, limit, _holder(position, certificate))
        if not _self_issued(certificate):
            below += 1
    return tightest


@lru_cache(maxsize=256)
def _broken_chain(chain: tuple[x509.Certificate, ...]) -> str | None:
    """Why nothing signed under the chain would validate, or None: a CA in it already
    deeper than a path length above it allows, or named outside the constraints above it."""
    room = path_room(chain)
    if room is not None and room.room < 0:
        return (
            f"the path length constraint of {room.holder} ({room.limit}) is exceeded by the "
            "CAs below it already: nothing the issuing CA signs would validate"
        )
    for position, certificate in enumerate(chain):
        if _self_issued(certificate):
            continue  # RFC 5280 6.1.3 (b): a self-issued CA's names are not checked
        try:
            IssuerChain(chain[position + 1 :]).check_names(
                certificate.subject, _sans(certificate), is_ca=True
            )
        except PolicyViolation as exc:
            who = "the issuing CA" if position == 0 else _holder(position, certificate)
            return f"{who} itself is outside the chain's constraints: {exc.message}"
    return None


def _holder(position: int, certificate: x509.Certificate) -> str:
    if position == 0:
        return "the issuing CA"
    return f"its ancestor CA {name_text(certificate.subject)!r}"


def _self_issued(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer


def _path_length(certificate: x509.Certificate) -> int | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value.path_length
    except x509.ExtensionNotFound:
        return None


def _sans(certificate: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(
            certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        return []


def _permitted_directory_names(chain: Sequence[x509.Certificate]) -> list[x509.Name]:
    names = []
    for certificate in chain:
        constraints = name_constraints.issuer_constraints(certificate)
        for base in (constraints.permitted_subtrees or []) if constraints else []:
            if isinstance(base, x509.DirectoryName):
                names.append(base.value)
    return names


def _without_names(subject: x509.Name) -> x509.Name:
    """The issuer's subject without its common name and e-mail address: the organization
    and the like it names are what a directoryName constraint usually permits."""
    dropped = {NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS}
    return x509.Name([rdn for rdn in subject.rdns if not any(a.oid in dropped for a in rdn)])


def _under(base: x509.Name, common_name: str) -> x509.Name:
    """`base` with CN=`common_name` added last: `base` stays the prefix that directoryName
    constraints compare (RFC 5280 4.2.1.10)."""
    common = x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return x509.Name([*base.rdns, common])
