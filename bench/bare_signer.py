"""The ceiling `bench/issue.py` compares Tessera with: a bare FastAPI endpoint that only signs.

It verifies the CSR and signs a leaf certificate as Tessera's does (subject and SANs from the
CSR, SKI/AKI, key usage, 30 days), under uvicorn with uvloop and httptools over TLS, and
stores nothing: no database, authentication, audit, template or policy. What Tessera does
beyond it is what a request to Tessera costs more than this.

    python bench/bare_signer.py --port P --workers 2 --certfile ... --keyfile ...
        (bench/issue.py starts it)

Each worker process listens on its own SO_REUSEPORT socket made by `tessera.server.listen`,
as Tessera's workers do, so that the kernel spreads the client's connections over them as
it does for Tessera (uvicorn's own --workers shares one socket, and one process could take
most of the connections).

The CA's certificate and key come from the files named by BARE_SIGNER_CA and
BARE_SIGNER_CA_KEY (PEM, unencrypted: a throwaway key made by the benchmark).
"""

import argparse
import datetime
import multiprocessing
import os
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from tessera.server import listen

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


def _worker(port: int, certfile: str, keyfile: str) -> None:
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run(sockets=[listen("127.0.0.1", port)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    args = parser.parse_args()
    workers = [
        multiprocessing.Process(target=_worker, args=(args.port, args.certfile, args.keyfile))
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:  # bench/issue.py stops the whole process group
        worker.join()


if __name__ == "__main__":
    main()
