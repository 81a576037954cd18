"""AIA caIssuers: GET /ca/{ca}.cer (DER) and /ca/{ca}.pem, by CA id or reference id."""

from fastapi import Response
from sqlalchemy.orm import Session

from tessera.api.deps import UnitOfWork
from tessera.api.routing import PrefixRouter
from tessera.core.errors import NotFound
from tessera.core.formats import cert_der, load_certificate
from tessera.storage import models
from tessera.storage.repositories.cas import find_public_ca

router = PrefixRouter(tags=["Public: AIA"])


def _ca(session: Session, reference: str) -> models.CertificateAuthority:
    ca = find_public_ca(session, reference)
    if ca is None:
        raise NotFound(f"no CA {reference!r}")
    return ca


@router.get("/ca/{reference}.cer")
def ca_der(reference: str, session: UnitOfWork) -> Response:
    der = cert_der(load_certificate(_ca(session, reference).certificate_pem.encode()))
    return Response(der, media_type="application/pkix-cert")


@router.get("/ca/{reference}.pem")
def ca_pem(reference: str, session: UnitOfWork) -> Response:
    return Response(_ca(session, reference).certificate_pem, media_type="application/x-pem-file")
