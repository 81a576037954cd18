"""OCSP throughput: Tessera's POST /ocsp against `openssl ocsp` as a responder and
`cfssl ocspserve` with pre-signed responses, same requests and concurrency, in one run.

    .venv/bin/python bench/ocsp.py [--duration 15] [--concurrency 16] [--workers 2]
        [--certs 200] [--nonce] [--database-url postgresql://postgres@/postgres?host=/var/run/postgresql]

The whole benchmark re-executes itself inside a new network namespace (`unshare -n`, with
`ip link set lo up`): openssl's responder cannot bind to loopback only, and the load
generator must share its namespace. PostgreSQL is reachable there through its Unix socket
only, hence the URL form above; SQLite is the default (the hot path reads no database).

Every server gets a P-256 CA and the same number of certificates (a tenth revoked); each
request asks for one of them (SHA-1 CertID, no nonce unless --nonce). The load generator is
`--concurrency` processes, each with one blocking keep-alive connection (reconnecting when the
server closes it, as openssl's responder does after every response): a Python client in
asyncio would be the bottleneck. req/s counts successful OCSP responses only.
"""

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.e2e.helpers import self_signed_ca
from tests.support import admin_api_key, free_port, group_cpu, start_server, stop_server

NETNS_MARK = "TESSERA_BENCH_NETNS"
SUCCESSFUL = b"\x0a\x01\x00"  # OCSPResponse.responseStatus = successful(0), DER


# --- load generator -----------------------------------------------------------------------


def _client(port: int, payloads: list[bytes], start: float, stop: float, out) -> None:
    """One connection, requests back to back until `stop`; reports (ok, errors, latencies)."""
    rng = random.Random(os.getpid())
    latencies: list[float] = []
    errors = 0
    sock = None
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < stop:
        payload = payloads[rng.randrange(len(payloads))]
        began = time.perf_counter()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(payload)
            status, body, close = _read(sock)
        except OSError:
            status, body, close = 0, b"", True
        if status == 200 and SUCCESSFUL in body[:8]:
            latencies.append(time.perf_counter() - began)
        else:
            errors += 1
        if close and sock is not None:
            sock.close()
            sock = None
    out.send((errors, latencies))
    out.close()


def _read(sock: socket.socket) -> tuple[int, bytes, bool]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    if length < 0:  # no length: the body ends when the server closes
        while chunk := sock.recv(65536):
            body += chunk
        return int(lines[0].split()[1]), body, True
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        body += chunk
    close = headers.get("connection", "").lower() == "close" or lines[0].startswith("HTTP/1.0")
    return int(lines[0].split()[1]), body, close


def drive(
    port: int, path: str, requests: list[bytes], args: argparse.Namespace, pgid: int = 0
) -> dict:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "Content-Type: application/ocsp-request\r\n"
    payloads = [f"{head}Content-Length: {len(r)}\r\n\r\n".encode() + r for r in requests]
    context = multiprocessing.get_context("fork")
    cpu = group_cpu(pgid) if pgid else 0.0
    start = time.time() + 1.0  # every client process started and waiting by then
    stop = start + args.duration
    pipes, procs = [], []
    for _ in range(args.concurrency):
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_client, args=(port, payloads, start, stop, sender))
        proc.start()
        pipes.append(receiver)
        procs.append(proc)
    errors, latencies = 0, []
    for receiver in pipes:
        failed, measured = receiver.recv()
        errors += failed
        latencies += measured
    cpu = group_cpu(pgid) - cpu if pgid else 0.0
    for proc in procs:
        proc.join()
    latencies.sort()
    count = len(latencies) or 1
    return {
        "requests": len(latencies),
        "rate": len(latencies) / args.duration,
        "p50": latencies[count // 2] * 1000 if latencies else 0.0,
        "p99": latencies[int(count * 0.99)] * 1000 if latencies else 0.0,
        "errors": errors,
        "cpu_us": 1e6 * cpu / len(latencies) if latencies else 0.0,
    }


# --- a CA and its certificates, for the peers ----------------------------------------------


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return self_signed_ca(common_name, lifetime=timedelta(days=30))


def request_for(ca: x509.Certificate, serial: int, nonce: bool) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *_issuer_hashes(ca), serial, hashes.SHA1()
    )
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _issuer_hashes(ca: x509.Certificate) -> tuple[bytes, bytes]:
    probe = ocsp.OCSPRequestBuilder().add_certificate(ca, ca, hashes.SHA1()).build()
    return probe.issuer_name_hash, probe.issuer_key_hash


def _pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".pem"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- the servers ----------------------------------------------------------------------------


@contextmanager
def throwaway_database(admin_url: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped afterwards), or None for SQLite. The URL may
    name a Unix socket directory in its query (?host=/run/postgresql)."""
    if not admin_url:
        yield None
        return
    import psycopg

    name = f"tessera_ocsp_bench_{os.getpid()}"
    base, _, query = admin_url.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_tessera(tmp: Path, args: argparse.Namespace, database_url: str | None) -> dict:
    env = {
        "TESSERA_RATE_LIMIT_ENABLED": "false",  # every request comes from one address
        "TESSERA_RATE_LIMIT_PROTOCOL_PER_MINUTE": "0",
    }
    server = start_server(tmp / "tessera", database_url, workers=args.workers, env=env)
    try:
        server.api_key = admin_api_key(server)
        with server.client() as api:
            body = {"common_name": "Tessera OCSP bench P-256", "ca_type": "root"}
            body |= {"key_algorithm": "EC", "key_size": 256}
            ca_id = api.post("/api/v2/cas", json=body).raise_for_status().json()["data"]["id"]
            ca_pem = api.get(f"/api/v2/cas/{ca_id}").raise_for_status().json()["data"]["pem"]
            ca = x509.load_pem_x509_certificate(ca_pem.encode())
            serials = []
            for i in range(args.certs):
                leaf = {
                    "common_name": f"bench-{i}.ocsp.test",
                    "ca_id": ca_id,
                    "key_algorithm": "EC",
                }
                made = api.post("/api/v2/certificates", json=leaf | {"key_size": 256})
                made_data = made.raise_for_status().json()["data"]
                serials.append(int(made_data["serial_number"].removeprefix("0x"), 16))
                if i % 10 == 0:
                    revoke = {"reason": "keyCompromise"}
                    url = f"/api/v2/certificates/{made_data['id']}/revoke"
                    api.post(url, json=revoke).raise_for_status()
        requests = [request_for(ca, s, args.nonce) for s in serials]
        check(server.http_port, "/ocsp", requests[0])
        drive(server.http_port, "/ocsp", requests, _short(args))  # warm every pre-signed response
        return drive(server.http_port, "/ocsp", requests, args, server.process.pid)
    finally:
        stop_server(server)


def bench_openssl(stack: ExitStack, tmp: Path, args: argparse.Namespace) -> dict:
    ca, key = make_ca("openssl ocsp bench P-256")
    ca_path, key_path = _pem(tmp / "openssl-ca", ca, key)
    serials = [x509.random_serial_number() for _ in range(args.certs)]
    expiry = (datetime.now(UTC) + timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
    revoked_on = datetime.now(UTC).strftime("%y%m%d%H%M%SZ")
    lines = []
    for i, serial in enumerate(serials):
        if i % 10 == 0:
            lines.append(f"R\t{expiry}\t{revoked_on},keyCompromise\t{serial:X}\tunknown\t/CN=b{i}")
        else:
            lines.append(f"V\t{expiry}\t\t{serial:X}\tunknown\t/CN=b{i}")
    index = tmp / "index.txt"
    index.write_text("\n".join(lines) + "\n")
    (tmp / "index.txt.attr").write_text("unique_subject = no\n")
    port = free_port()
    argv = ["openssl", "ocsp", "-index", str(index), "-port", str(port), "-CA", str(ca_path)]
    argv += ["-rsigner", str(ca_path), "-rkey", str(key_path), "-nmin", "60"]
    requests = [request_for(ca, s, args.nonce) for s in serials]
    pgid = spawn(stack, argv, tmp / "openssl.log", port, requests[0])  # fresh for this run
    return drive(port, "/", requests, args, pgid)


def bench_cfssl(stack: ExitStack, tmp: Path, args: argparse.Namespace) -> dict:
    ca, key = make_ca("cfssl ocspserve bench P-256")
    serials = [x509.random_serial_number() for _ in range(args.certs)]
    name_hash, key_hash = _issuer_hashes(ca)
    now = datetime.now(UTC).replace(microsecond=0)
    responses = []
    for i, serial in enumerate(serials):
        status = ocsp.OCSPCertStatus.REVOKED if i % 10 == 0 else ocsp.OCSPCertStatus.GOOD
        revoked = (now, x509.ReasonFlags.key_compromise) if i % 10 == 0 else (None, None)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                name_hash,
                key_hash,
                serial,
                hashes.SHA1(),
                status,
                now,
                now + timedelta(hours=1),
                *revoked,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
        )
        der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        responses.append(b64encode(der).decode())
    file = tmp / "cfssl-responses.txt"
    file.write_text("\n".join(responses) + "\n")
    port = free_port()
    argv = ["cfssl", "ocspserve", "-address", "127.0.0.1", "-port", str(port)]
    argv += ["-responses", str(file), "-loglevel", "5"]
    requests = [request_for(ca, s, args.nonce) for s in serials]
    pgid = spawn(stack, argv, tmp / "cfssl.log", port, requests[0])
    return drive(port, "/", requests, args, pgid)


def spawn(stack: ExitStack, argv: list[str], log: Path, port: int, probe: bytes) -> int:
    """Start a peer and wait until it answers a real OCSP request: a bare connect as the
    readiness probe would hang openssl's responder, which waits for the request forever."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    stack.callback(stop, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            check(port, "/", probe)
            return proc.pid
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check(port: int, path: str, request: bytes) -> None:
    """One request answered in full and parsed: the figures count real OCSP answers."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{head}Content-Length: {len(request)}\r\n\r\n".encode() + request)
        status, body, _ = _read(sock)
    parsed = ocsp.load_der_ocsp_response(body)
    if status != 200 or parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RuntimeError(f"{path} on {port}: HTTP {status}, {parsed.response_status}")


def _short(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "duration": min(2.0, args.duration)})


# --- main --------------------------------------------------------------------------------


def in_namespace() -> None:
    """Re-run this script in a fresh network namespace with only loopback up."""
    if os.environ.get(NETNS_MARK):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if not shutil.which("unshare"):
        raise SystemExit("unshare (util-linux) is needed")
    env = {**os.environ, NETNS_MARK: "1"}
    os.execvpe("unshare", ["unshare", "-n", sys.executable, *sys.argv], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="Tessera server processes")
    parser.add_argument("--certs", type=int, default=200, help="certificates asked about")
    parser.add_argument("--nonce", action="store_true", help="a nonce in every request")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL through its Unix socket, the only way into the benchmark's "
        "network namespace: postgresql://postgres@/postgres?host=/var/run/postgresql",
    )
    parser.add_argument("--only", choices=["tessera", "openssl", "cfssl"], action="append")
    args = parser.parse_args()
    in_namespace()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = args.only or ["tessera", "openssl", "cfssl"]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tessera-ocsp-bench-") as tmp:
        folder = Path(tmp)
        if "tessera" in chosen:
            with throwaway_database(args.database_url) as url:
                results["tessera"] = bench_tessera(folder, args, url)
        for name, run in (("openssl", bench_openssl), ("cfssl", bench_cfssl)):
            if name in chosen:
                with ExitStack() as stack:
                    results[name] = run(stack, folder, args)
    report(results, args)
    return 1 if any(r["errors"] for r in results.values()) else 0


def report(results: dict[str, dict], args: argparse.Namespace) -> None:
    storage = "PostgreSQL" if args.database_url else "SQLite"
    kind = "with nonce" if args.nonce else "no nonce (pre-signed)"
    print(
        f"\nOCSP POST, P-256 CA, {args.certs} certificates, {kind}; concurrency "
        f"{args.concurrency}, {args.duration:.0f} s each; Tessera: {args.workers} workers on "
        f"{storage}; {os.cpu_count()} cores\n"
    )
    head = f"{'server':10}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(f"{head}{'server us cpu/req':>19}")
    for name, r in results.items():
        row = f"{name:10}{r['requests']:>10}{r['rate']:>9.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
        print(f"{row}{r['errors']:>8}{r['cpu_us']:>19.0f}")
    tessera = results.get("tessera")
    for peer in ("openssl", "cfssl"):
        if tessera and peer in results and results[peer]["rate"]:
            print(f"tessera/{peer} req/s = {tessera['rate'] / results[peer]['rate']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
