"""Real third-party checkers: openssl and pkilint, run as the tools they are."""

import shutil
import subprocess
import sys
from pathlib import Path

PKILINT = Path(sys.executable).parent / "lint_pkix_cert"


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60)


def openssl_verify(workdir: Path, leaf_pem: str, chain_pems: list[str]) -> str:
    """`openssl verify` with the root as trust anchor and the rest as untrusted."""
    root = workdir / "root.pem"
    root.write_text(chain_pems[-1])
    leaf = workdir / "leaf.pem"
    leaf.write_text(leaf_pem)
    args = ["verify", "-x509_strict", "-CAfile", str(root)]
    if len(chain_pems) > 1:
        untrusted = workdir / "untrusted.pem"
        untrusted.write_text("".join(chain_pems[:-1]))
        args += ["-untrusted", str(untrusted)]
    result = openssl(*args, str(leaf))
    return (result.stdout + result.stderr).decode()


def pkilint_findings(workdir: Path, pem: str, name: str = "cert.pem") -> str:
    """Findings at ERROR or above; empty text means the certificate is clean."""
    path = workdir / name
    path.write_text(pem)
    executable = str(PKILINT) if PKILINT.exists() else shutil.which("lint_pkix_cert")
    assert executable, "pkilint is not installed"
    result = subprocess.run(
        [executable, "lint", "-s", "ERROR", str(path)], capture_output=True, timeout=120
    )
    return (result.stdout + result.stderr).decode().strip()


def pkilint_crl_findings(workdir: Path, der: bytes, name: str = "crl.der") -> str:
    """`lint_crl` (RFC 5280 profile) findings at ERROR or above; empty text means clean."""
    path = workdir / name
    path.write_bytes(der)
    executable = PKILINT.with_name("lint_crl")
    command = str(executable) if executable.exists() else shutil.which("lint_crl")
    assert command, "pkilint is not installed"
    args = ["lint", "-t", "CRL", "-p", "PKIX", "-s", "ERROR", "--document-format", "DER"]
    result = subprocess.run([command, *args, str(path)], capture_output=True, timeout=120)
    return (result.stdout + result.stderr).decode().strip()


def pem_blocks(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + end + "\n" for part in text.split(end) if "BEGIN" in part]


def openssl_csr(
    workdir: Path, subject: str, newkey: str = "ec", sans: str | None = None
) -> tuple[Path, Path]:
    """A key and CSR made by `openssl req`; newkey is "ec" (P-256) or e.g. "rsa:2048"."""
    key, csr = workdir / "k.pem", workdir / "r.csr"
    args = ["req", "-new", "-newkey", newkey, "-nodes", "-keyout", str(key), "-out", str(csr)]
    if newkey == "ec":
        args += ["-pkeyopt", "ec_paramgen_curve:P-256"]
    args += ["-subj", subject]
    if sans:
        args += ["-addext", f"subjectAltName={sans}"]
    made = openssl(*args)
    assert made.returncode == 0, made.stderr.decode()
    return key, csr


def pkilint_ocsp_findings(workdir: Path, der: bytes, name: str = "response.der") -> str:
    """`lint_ocsp_response` findings at ERROR or above; empty text means a clean response."""
    path = workdir / name
    path.write_bytes(der)
    executable = Path(sys.executable).parent / "lint_ocsp_response"
    found = str(executable) if executable.exists() else shutil.which("lint_ocsp_response")
    assert found, "pkilint is not installed"
    result = subprocess.run(
        [found, "lint", "-s", "ERROR", "--document-format", "DER", str(path)],
        capture_output=True,
        timeout=120,
    )
    return (result.stdout + result.stderr).decode().strip()
