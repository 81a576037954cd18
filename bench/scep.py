"""SCEP enrollment throughput: PKCSReq enrollments by micromdm's `scepclient` at a fixed
concurrency against Tessera and, in the same run, against micromdm's own `scepserver` (Debian
`scep`), which runs inside `unshare -n` (it listens on every interface).

    .venv/bin/python bench/scep.py [--enrollments 80] [--concurrency 8] [--workers 2]
        [--rounds 3] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Client keys (RSA-2048) are made before the clock starts, so each enrollment is one
`scepclient` run: GetCACert, GetCACaps and a PKIOperation with a fresh key and CSR. Both
servers are measured with the same client, keys and concurrency; the ratio is
Tessera/scepserver enrollments per second. The two are measured in alternating rounds, each
with a fresh server, and the ratio printed is the median of the rounds' ratios: this VM's speed
drifts by up to 1.5x within minutes, more than a single pair of runs can tell apart.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import support
from tests.support import free_port, group_cpu

CHALLENGE_FOR_PEER = "bench-challenge"


def make_keys(directory: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        key = rsa.generate_private_key(65537, 2048)
        path = directory / f"key-{i}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        paths.append(path)
    return paths


def enroll_all(
    url: str, challenge: str, keys: list[Path], concurrency: int, server_pgid: int, runs: Path
) -> dict[str, float]:
    """Run one scepclient per key, `concurrency` at a time; returns rate, failures and the
    CPU time per enrollment of the server (its process group) and of the clients."""

    def one(index_key: tuple[int, Path]) -> bool:
        index, key = index_key
        workdir = runs / f"run-{index}"
        workdir.mkdir()
        shutil.copy(key, workdir / "key.pem")
        result = subprocess.run(
            [
                "scepclient",
                "-server-url",
                url,
                f"-challenge={challenge}",
                "-private-key",
                "key.pem",
                "-certificate",
                "cert.pem",
                "-cn",
                f"bench-{index}",
            ],
            cwd=workdir,
            capture_output=True,
            timeout=300,
        )
        return result.returncode == 0 and (workdir / "cert.pem").exists()

    server_cpu, client_cpu = group_cpu(server_pgid), _children_cpu()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, enumerate(keys)))
    elapsed = time.perf_counter() - started
    done = max(1, sum(outcomes))
    return {
        "enrollments": float(sum(outcomes)),
        "failures": float(len(outcomes) - sum(outcomes)),
        "seconds": elapsed,
        "rate": sum(outcomes) / elapsed,
        "server_ms": 1000 * (group_cpu(server_pgid) - server_cpu) / done,
        "client_ms": 1000 * (_children_cpu() - client_cpu) / done,
    }


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: the scepclient runs."""
    times = os.times()
    return times.children_user + times.children_system


def tessera_run(args: argparse.Namespace, keys: list[Path], scratch: Path) -> dict[str, float]:
    env = {
        "TESSERA_RATE_LIMIT_PROTOCOL_PER_MINUTE": "0",
        "TESSERA_LOG_LEVEL": "warning",
        "TESSERA_SCEP_ALLOW_DES": "true",  # scepclient sends single DES only, as scepserver takes
    }
    with support.database("postgresql" if args.database_url else "sqlite") as url:
        server = support.start_server(scratch / "tessera", url, workers=args.workers, env=env)
        try:
            server.api_key = support.admin_api_key(server)
            with server.client() as api:
                ca = api.post(
                    "/api/v2/cas",
                    json={
                        "common_name": "SCEP Bench Root",
                        "key_algorithm": "RSA",
                        "key_size": 2048,
                        "ca_type": "root",
                    },
                ).json()["data"]
                config = {"enabled": True, "ca_id": ca["id"], "auto_approve": True}
                api.patch("/api/v2/scep/config", json=config).raise_for_status()
                challenge = api.get(f"/api/v2/scep/challenge/{ca['id']}").json()["data"][
                    "challenge"
                ]
            url = f"{server.http_url}/scep/pkiclient.exe"
            runs = scratch / "runs"
            runs.mkdir()
            return enroll_all(url, challenge, keys, args.concurrency, server.process.pid, runs)
        finally:
            support.stop_server(server)


def peer_run(args: argparse.Namespace, keys: list[Path], scratch: Path) -> dict[str, float]:
    """Re-run this script inside a new network namespace, where it starts scepserver."""
    for key in keys:
        shutil.copy(key, scratch / key.name)
    command = [
        "unshare",
        "-n",
        sys.executable,
        __file__,
        "--inside-namespace",
        str(scratch),
        "--concurrency",
        str(args.concurrency),
        "--enrollments",
        str(len(keys)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"peer run failed:\n{result.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def inside_namespace(scratch: Path, concurrency: int, count: int) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    depot = scratch / "depot"
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "scepserver",
            "-depot",
            str(depot),
            "-port",
            str(port),
            "-challenge",
            CHALLENGE_FOR_PEER,
            "-allowrenew",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/scep"
        for _ in range(100):
            probe = subprocess.run(
                ["curl", "-s", f"{url}?operation=GetCACaps"], capture_output=True
            )
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        keys = sorted(scratch.glob("key-*.pem"), key=lambda p: int(p.stem.split("-")[1]))[:count]
        runs = scratch / "runs"
        runs.mkdir()
        figures = enroll_all(url, CHALLENGE_FOR_PEER, keys, concurrency, server.pid, runs)
        print(json.dumps(figures))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrollments", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--inside-namespace", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_namespace:
        inside_namespace(Path(args.inside_namespace), args.concurrency, args.enrollments)
        return
    if args.database_url:
        os.environ["TESSERA_TEST_PG"] = args.database_url
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as tmp:
        scratch = Path(tmp)
        keys = make_keys(scratch, args.enrollments)
        rounds = []
        for number in range(args.rounds):
            ours_dir, peer_dir = scratch / f"ours-{number}", scratch / f"peer-{number}"
            ours_dir.mkdir()
            peer_dir.mkdir()
            rounds.append((tessera_run(args, keys, ours_dir), peer_run(args, keys, peer_dir)))
    print(f"SCEP PKCSReq enrollments, scepclient x{args.concurrency}, {args.enrollments} each")
    for number, (ours, peer) in enumerate(rounds, 1):
        for label, figures in (("tessera", ours), ("scepserver", peer)):
            print(
                f"  round {number} {label:<11} {figures['rate']:6.2f} enrollments/s"
                f"  ({figures['enrollments']:.0f} ok, {figures['failures']:.0f} failed,"
                f" {figures['seconds']:.1f} s; cpu per enrollment: server"
                f" {figures['server_ms']:.1f} ms, client {figures['client_ms']:.1f} ms)"
            )
        print(f"  round {number} ratio tessera/scepserver: {ours['rate'] / peer['rate']:.2f}x")
    ratios = [ours["rate"] / peer["rate"] for ours, peer in rounds]
    print(f"  median ratio tessera/scepserver over {len(rounds)} rounds: {median(ratios):.2f}x")


if __name__ == "__main__":
    main()
