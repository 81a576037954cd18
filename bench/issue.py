"""Issuance throughput: Tessera's POST /api/v2/certificates against `cfssl serve`'s
/api/v1/cfssl/sign, with the same CSRs and concurrency, measured in the same run. A third
server, `bench/bare_signer.py`, is the ceiling of the stack Tessera is built on: a bare
FastAPI endpoint under uvicorn (same workers, TLS) that verifies and signs, and stores nothing.

    .venv/bin/python bench/issue.py [--requests 5000] [--concurrency 16] [--workers 2]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

The load generator is a small keep-alive HTTP/1.1 client on asyncio and uvloop; httpx
costs ~10x more CPU per request and cannot drive cfssl on two shared cores. "client cpu" is its
share of one core; "server ms cpu" is the server processes' CPU time per request (from /proc).
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

import httpx
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import support
from tests.support import (
    ADMIN_PASSWORD,
    Server,
    admin_api_key,
    free_port,
    group_cpu,
    loopback_certificate,
)

# label, Tessera key_algorithm and size, cfssl algo, target Tessera/cfssl req/s
ROOT = Path(__file__).resolve().parent.parent
CAS = [("P-256", "EC", 256, "ecdsa", 0.5), ("RSA-2048", "RSA", 2048, "rsa", 1.0)]
Check = Callable[[int, bytes], bool]


@dataclass
class Result:
    latencies: list[float]
    errors: int = 0
    elapsed: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed


def make_csrs(count: int) -> list[str]:
    pems = []
    for i in range(count):
        host = f"bench-{i}.example.com"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        )
        pems.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return pems


def requests_for(port: int, path: str, bodies: Iterator[object], **headers: str) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = [json.dumps(body).encode() for body in bodies]
    return [f"{head}Content-Length: {len(d)}\r\n\r\n".encode() + d for d in data]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # chunked: Go's net/http sends larger bodies this way
        chunks = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            chunks.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")
        body = b"".join(chunks)
    return int(lines[0].split(" ", 2)[1]), body, headers.get("connection") == "close"


async def load(port: int, tls: object, payloads: list[bytes], concurrency: int, ok: Check):
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port, ssl=tls)  # type: ignore[arg-type]

    result, todo = Result([]), iter(payloads)

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for payload in todo:
            start = time.perf_counter()
            try:
                writer.write(payload)
                status, body, close = await read_response(reader)
            except (OSError, EOFError, ValueError) as exc:
                status, body, close = 0, repr(exc).encode(), True
            if ok(status, body):
                result.latencies.append(time.perf_counter() - start)
            else:
                result.errors += 1
                if result.errors <= 5:
                    print(f"failed: HTTP {status} {body[:300]!r}", file=sys.stderr)
            if close:
                writer.close()
                reader, writer = await connect()
        writer.close()

    connections = await asyncio.gather(*(connect() for _ in range(concurrency)))
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(*c) for c in connections))
    result.elapsed, result.client_cpu = time.perf_counter() - start, time.process_time() - cpu
    return result


def measure(proc: subprocess.Popen, port: int, tls: object, payloads: list[bytes], ok: Check, args):
    warm = uvloop.run(load(port, tls, payloads[: args.warmup], args.concurrency, ok))
    cpu = group_cpu(proc.pid)
    result = uvloop.run(load(port, tls, payloads[args.warmup :], args.concurrency, ok))
    result.server_cpu, result.errors = group_cpu(proc.pid) - cpu, result.errors + warm.errors
    return result


def spawn(stack: ExitStack, argv: list[str], log: Path, ready: Callable[[], object], **kw: object):
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True, **kw)
    stack.callback(stop, proc)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if ready():
                return proc
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{argv} did not start:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench_tessera(stack: ExitStack, tmp: Path, csrs: list[str], args) -> dict:
    support.PG_ADMIN_URL = args.database_url or ""
    url = stack.enter_context(support.database("postgresql" if args.database_url else "sqlite"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"TESSERA_DATA_DIR": str(tmp / "data"), "TESSERA_ADMIN_PASSWORD": ADMIN_PASSWORD}
    env |= {"TESSERA_LOG_LEVEL": "warning"} | ({"DATABASE_URL": url} if url else {})
    env |= support.UNLIMITED  # the limiter runs (its cost is measured) but never refuses
    port, http_port = free_port(), free_port()
    argv = [sys.executable, "-m", "tessera.cli", "serve", "--port", str(port)]
    argv += ["--http-port", str(http_port), "--workers", str(args.workers)]
    bundle = tmp / "data" / "tls" / "server.pem"

    def ready() -> bool:
        verify = ssl.create_default_context(cafile=str(bundle)) if bundle.exists() else None
        health = f"https://127.0.0.1:{port}/api/v2/health/ready"
        return verify is not None and httpx.get(health, verify=verify).status_code == 200

    proc = spawn(stack, argv, tmp / "tessera.log", ready, env=env)
    server = Server(tmp / "data", port, http_port, proc, tmp / "tessera.log", url)
    server.api_key, results = admin_api_key(server), {}
    with server.client() as api:
        for label, algorithm, size, *_ in CAS:
            body = {"common_name": f"Tessera bench {label}", "ca_type": "root"}
            body |= {"key_algorithm": algorithm, "key_size": size}
            ca_id = api.post("/api/v2/cas", json=body).raise_for_status().json()["data"]["id"]
            bodies = ({"ca_id": ca_id, "csr": c, "validity_days": 30} for c in csrs)
            key = {"X-API-Key": server.api_key}
            payloads = requests_for(port, "/api/v2/certificates", bodies, **key)
            issued = lambda s, _: s == 201  # noqa: E731
            result = measure(proc, port, server.ssl_context(), payloads, issued, args)
            listing = api.get("/api/v2/certificates", params={"ca_id": ca_id, "per_page": 1})
            unstored = len(payloads) - result.errors - listing.json()["meta"]["total"]
            if unstored:
                print(f"{label}: {unstored} issued but not stored", file=sys.stderr)
            result.errors += abs(unstored)
            results[label, "tessera"] = result
    stop(proc)
    return results


def bench_cfssl(stack: ExitStack, tmp: Path, csrs: list[str], args) -> dict:
    results = {}
    for label, _, size, algo, _ in CAS:
        spec = json.dumps({"CN": f"cfssl bench {label}", "key": {"algo": algo, "size": size}})
        genkey = ["cfssl", "genkey", "-initca", "-"]
        made = subprocess.run(genkey, input=spec.encode(), capture_output=True, check=True)
        pair = json.loads(made.stdout)
        (tmp / "ca.pem").write_text(pair["cert"])
        (tmp / "ca-key.pem").write_text(pair["key"])
        port, log = free_port(), tmp / f"cfssl-{algo}.log"
        argv = ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port), "-loglevel", "2"]
        argv += ["-ca", str(tmp / "ca.pem"), "-ca-key", str(tmp / "ca-key.pem")]
        proc = spawn(stack, argv, log, lambda p=port: httpx.get(f"http://127.0.0.1:{p}/"))
        bodies = ({"certificate_request": csr} for csr in csrs)
        payloads = requests_for(port, "/api/v1/cfssl/sign", bodies)
        signed = lambda s, b: s == 200 and b'"success":true' in b  # noqa: E731
        results[label, "cfssl"] = measure(proc, port, None, payloads, signed, args)
        stop(proc)
    return results


def bench_bare(stack: ExitStack, tmp: Path, csrs: list[str], args) -> dict:
    tls = loopback_certificate(tmp, "bare-tls")
    context = ssl.create_default_context(cafile=str(tls))
    results = {}
    for label, _, size, algo, _ in CAS:
        key = rsa.generate_private_key(65537, size) if algo == "rsa" else None
        ca = loopback_certificate(tmp, f"bare-{algo}", key)
        env = os.environ | {"BARE_SIGNER_CA": str(ca), "BARE_SIGNER_CA_KEY": str(ca)[:-4] + ".key"}
        port, log = free_port(), tmp / f"bare-{algo}.log"
        argv = [sys.executable, str(ROOT / "bench" / "bare_signer.py"), "--port", str(port)]
        argv += ["--workers", str(args.workers), "--certfile", str(tls)]
        argv += ["--keyfile", str(tls)[:-4] + ".key"]
        url = f"https://127.0.0.1:{port}/docs"
        ready = lambda u=url: httpx.get(u, verify=context).status_code == 200  # noqa: E731
        proc = spawn(stack, argv, log, ready, env=env, cwd=ROOT)
        bodies = ({"csr": csr, "validity_days": 30} for csr in csrs)
        payloads = requests_for(port, "/sign", bodies)
        signed = lambda s, _: s == 201  # noqa: E731
        results[label, "fastapi"] = measure(proc, port, context, payloads, signed, args)
        stop(proc)
    return results


SERVERS = ("tessera", "cfssl", "fastapi")
HEAD = "CA       server    requests   req/s  p50 ms  p99 ms errors client cpu server ms cpu"
ROW = "{:9}{:9}{:>9}{:>8.0f}{:>8.2f}{:>8.2f}{:>7}{:>11.0%}{:>14.2f}"


def report(results: dict) -> None:
    print(HEAD)
    for label, *_, target in CAS:
        for name in SERVERS:
            r, lat = results[label, name], sorted(results[label, name].latencies) or [0.0]
            p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
            client, server = r.client_cpu / r.elapsed, 1000 * r.server_cpu / len(lat)
            n = len(r.latencies)
            print(ROW.format(label, name, n, r.rate, p50, p99, r.errors, client, server))
        ratio = results[label, "tessera"].rate / results[label, "cfssl"].rate
        ceiling = results[label, "fastapi"].rate / results[label, "cfssl"].rate
        print(f"{label:9}tessera/cfssl req/s = {ratio:.2f}x (target >= {target}x)")
        print(f"{label:9}fastapi/cfssl req/s = {ceiling:.2f}x (the stack's ceiling)\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="measured, per CA and server")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests first")
    parser.add_argument("--csrs", type=int, default=2000, help="distinct CSRs, reused in turn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="Tessera server processes")
    parser.add_argument("--database-url", help="PostgreSQL admin URL: a throwaway DB is made there")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    csrs = list(islice(cycle(make_csrs(args.csrs)), args.warmup + args.requests))
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp, ExitStack() as stack:
        results = bench_tessera(stack, Path(tmp), csrs, args)
        results |= bench_cfssl(stack, Path(tmp), csrs, args)
        results |= bench_bare(stack, Path(tmp), csrs, args)
    storage = "PostgreSQL" if args.database_url else "SQLite"
    setup = f"{args.workers} workers; concurrency {args.concurrency}; {os.cpu_count()} cores"
    print(f"\nTessera on {storage}, {setup}\n")
    report(results)
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
