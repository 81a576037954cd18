"""ACME order throughput: full flows (new account, new order, answer the challenges,
finalize, download) with certbot's `acme` library at a given concurrency, against Tessera
(challenges made instant by TESSERA_ACME_INSECURE_ALWAYS_VALID) and, in the same run,
against pebble (PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0).

    .venv/bin/python bench/acme.py [--orders 160] [--concurrency 16] [--workers 2]

Prints orders/s and p50/p99 of each ACME request (every POST and GET the library sends).
Both servers are polled the same way (every 20 ms), so neither pays a client-side sleep.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This file is named like the `acme` package it drives: keep bench/ off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import httpx  # noqa: E402
import josepy  # noqa: E402
from acme import client as acme_client  # noqa: E402
from acme import messages  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

sys.path.insert(0, str(_HERE.parent))
from tests.e2e.helpers import API, create_root, data  # noqa: E402
from tests.support import (  # noqa: E402
    admin_api_key,
    free_port,
    group_cpu,
    loopback_certificate,
    start_server,
    stop_server,
)

POLL = 0.02


@dataclass
class Timings:
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)


class TimedNetwork(acme_client.ClientNetwork):
    timings: Timings

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super()._send_request(method, url, *args, **kwargs)
        finally:
            self.timings.add(time.perf_counter() - start)


def csr_pem(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def one_client(directory_url: str, timings: Timings) -> acme_client.ClientV2:
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = TimedNetwork(key, alg=josepy.ES256, user_agent="tessera-bench")
    network.timings = timings
    directory = messages.Directory.from_json(network.get(directory_url).json())
    client = acme_client.ClientV2(directory, network)
    network.account = client.new_account(
        messages.NewRegistration.from_data(terms_of_service_agreed=True)
    )
    return client


def one_order(client: acme_client.ClientV2, csr: bytes) -> None:
    order = client.new_order(csr)
    for authz in order.authorizations:
        challenge = next(c for c in authz.body.challenges if c.chall.typ == "http-01")
        client.answer_challenge(challenge, challenge.response(client.net.key))
    for authz in order.authorizations:
        while True:
            body = messages.Authorization.from_json(client._post_as_get(authz.uri).json())
            if body.status == messages.STATUS_VALID:
                break
            if body.status == messages.STATUS_INVALID:
                raise RuntimeError(f"authorization invalid: {body}")
            time.sleep(POLL)
    order = client.begin_finalization(order)
    while True:
        body = messages.Order.from_json(client._post_as_get(order.uri).json())
        if body.status == messages.STATUS_VALID and body.certificate:
            break
        if body.status == messages.STATUS_INVALID:
            raise RuntimeError(f"order invalid: {body}")
        time.sleep(POLL)
    pem = client._post_as_get(body.certificate).text
    assert "BEGIN CERTIFICATE" in pem


@dataclass
class Result:
    rate: float
    timings: Timings
    server_ms: float  # server CPU per order (its process group)
    client_ms: float  # this process's CPU per order (the acme library, 16 threads)


def run(directory_url: str, orders: int, concurrency: int, server_pgid: int) -> Result:
    timings = Timings()
    per_client = max(1, orders // concurrency)
    csrs = [
        [csr_pem(f"b{c}-{i}.bench.test") for i in range(per_client)] for c in range(concurrency)
    ]

    def worker(index: int) -> int:
        client = one_client(directory_url, timings)
        for csr in csrs[index]:
            one_order(client, csr)
        return per_client

    start, server_cpu, client_cpu = time.perf_counter(), group_cpu(server_pgid), time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        done = sum(pool.map(worker, range(concurrency)))
    rate = done / (time.perf_counter() - start)
    server_ms = 1000 * (group_cpu(server_pgid) - server_cpu) / done
    return Result(rate, timings, server_ms, 1000 * (time.process_time() - client_cpu) / done)


@contextmanager
def tessera(workers: int, work: Path) -> Iterator[tuple[str, Path, int]]:
    env = {"TESSERA_ACME_INSECURE_ALWAYS_VALID": "true", "TESSERA_RATE_LIMIT_ENABLED": "false"}
    server = start_server(work / "tessera", None, workers=workers, env=env)
    try:
        server.api_key = admin_api_key(server)
        with server.client() as api:
            ca = create_root(api, "ACME bench root")
            data(api.patch(f"{API}/acme/settings", json={"issuing_ca_id": ca["id"]}))
        yield f"{server.url}/acme/directory", server.ca_bundle, server.process.pid
    finally:
        stop_server(server)


@contextmanager
def pebble(work: Path) -> Iterator[tuple[str, Path, int]]:
    loopback_certificate(work, "pebble")
    port = free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{free_port()}",
            "certificate": str(work / "pebble.pem"),
            "privateKey": str(work / "pebble.key"),
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (work / "pebble.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PEBBLE_VA_ALWAYS_VALID": "1",
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    log = open(work / "pebble.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [shutil.which("pebble") or "pebble", "-config", str(work / "pebble.json")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, for its CPU figure
    )
    url = f"https://127.0.0.1:{port}/dir"
    try:
        for _ in range(100):
            try:
                httpx.get(url, verify=str(work / "pebble.pem"), timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, work / "pebble.pem", process.pid
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def summary(label: str, result: Result) -> str:
    values = sorted(result.timings.latencies)
    p50 = statistics.median(values) * 1000
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
    requests = f"{len(values):6} requests"
    cpu = f"cpu per order: server {result.server_ms:5.1f} ms, client {result.client_ms:5.1f} ms"
    latency = f"p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"
    return f"{label:8} {result.rate:8.1f} orders/s   {requests}   {latency}   {cpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with tessera(args.workers, work) as (directory, bundle, pgid):
            os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
            ours = run(directory, args.orders, args.concurrency, pgid)
        with pebble(work) as (directory, bundle, pgid):
            os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
            theirs = run(directory, args.orders, args.concurrency, pgid)
    print(f"ACME full order flows, concurrency {args.concurrency}, {args.orders} orders each")
    print(summary("tessera", ours))
    print(summary("pebble", theirs))
    print(f"orders/s ratio tessera/pebble: {ours.rate / theirs.rate:.2f}")


if __name__ == "__main__":
    main()
