"""The ceiling `bench/issue.py` compares Tessera with: a bare FastAPI endpoint that only signs.

It verifies the CSR and signs a leaf certificate as Tessera's does (subject and SANs from the
CSR, SKI/AKI, key usage, 30 days), under uvicorn with uvloop and httptools over TLS, and
stores nothing: no database, authentication, audit, template or policy. What Tessera does
beyond it is what a request to Tessera costs more than this.

    uvicorn bench.bare_signer:app --workers 2 --ssl-certfile ... (bench/issue.py starts it)

The CA's certificate and key come from the files named by BARE_SIGNER_CA and
BARE_SIGNER_CA_KEY (PEM, unencrypted: a throwaway key made by the benchmark).
"""

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

CA = x509.load_pem_x509_certificate(Path(os.environ["BARE_SIGNER_CA"]).read_bytes())
CA_KEY = serialization.load_pem_private_key(
    Path(os.environ["BARE_SIGNER_CA_KEY"]).read_bytes(), password=None
)
assert isinstance(CA_KEY, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
CA_SKI = x509.SubjectKeyIdentifier.from_public_key(CA_KEY.public_key())
LEAF_USAGE = x509.KeyUsage(True, False, False, False, False, False, False, False, False)

app = FastAPI()


class SignRequest(BaseModel):
    csr: str
    validity_days: int = 30


@app.post("/sign", status_code=201)
async def sign(body: SignRequest) -> dict[str, str]:
    try:
        csr = x509.load_pem_x509_csr(body.csr.encode())
    except ValueError as exc:
        raise HTTPException(400, "not a PEM CSR") from exc
    if not csr.is_signature_valid:
        raise HTTPException(400, "the CSR's signature does not verify")
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(CA.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=body.validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(LEAF_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(CA_SKI), critical=False
        )
    )
    try:
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(names, critical=False)
    except x509.ExtensionNotFound:
        pass
    certificate = builder.sign(CA_KEY, hashes.SHA256())
    return {"certificate": certificate.public_bytes(serialization.Encoding.PEM).decode()}
