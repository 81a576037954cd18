"""Inventory queries at scale: the certificate list (every filter, first and a deep page),
substring search, get by id, certificate and dashboard statistics, over 1,000,000 certificates
in a fresh SQLite database and a throwaway PostgreSQL database, both built by Tessera's
migrations. Prints p50/p99 per query against the 50 ms p99 target.

    .venv/bin/python bench/inventory.py [--rows 1000000] [--backend sqlite|postgresql|both]
        [--repeat 50] [--database-url postgresql://postgres@127.0.0.1:5432/test]

Rows are written with SQLAlchemy Core bulk inserts into Tessera's own tables (the API would
take hours for a million certificates); every measured call goes through the same repository
and service functions the API endpoints use, in its own transaction as a request would.
"""

import argparse
import gc
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tessera.domains.actor import system_actor
from tessera.domains.dashboard.service import DashboardService
from tessera.domains.search.service import SearchService
from tessera.domains.search.trigrams import refresh_trigram_stats
from tessera.storage import models
from tessera.storage.db import make_engine, migrate, session_factory
from tessera.storage.models_tally import CertificateTallyDelta
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.certificates import CertificateFilter
from tessera.storage.repositories.tally import TallyFolder
from tests import support

TARGET_MS = 50.0
PER_PAGE = 100
DEEP_PAGE = 1000  # the 100,000th row at per_page=100 (or the last page, if there are fewer)
BATCH = 20_000
SPAN = timedelta(days=3 * 365)  # certificates were issued over the last three years
# validity in days and its share: mostly short-lived TLS, some yearly, a few long-lived
VALIDITY = [(30, 0.05), (90, 0.55), (365, 0.30), (730, 0.10)]
REVOKED_SHARE = 0.04
IMPORTED_SHARE = 0.05  # imported later, so their ids do not follow their dates
CA_COUNT = 20
SERVICES = ["api", "web", "mail", "vpn", "db", "cache", "auth", "sso", "git", "ci", "cdn", "lb"]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "corp", "lab", "edge"]


@dataclass
class Timing:
    label: str
    walls: list[float]
    cpus: list[float]
    note: str


def leaf_pem() -> str:
    """One real certificate; every row carries it (only indexed columns matter here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.example.com")])
    start = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("bench.example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def common_name(i: int) -> str:
    service, region = SERVICES[i % len(SERVICES)], REGIONS[i // 7 % len(REGIONS)]
    return f"{service}-{i:07d}.{region}.example-{i % 50:02d}.com"


def seed_cas(session: Session, org_id: int, pem: str, now: datetime) -> list[int]:
    repos = Repositories(session, org_id)
    ids = []
    for n in range(CA_COUNT):
        ca = models.CertificateAuthority(
            refid=str(uuid.uuid4()),
            name=f"Bench CA {n}",
            common_name=f"Bench CA {n}",
            ca_type="root" if n == 0 else "intermediate",
            parent_id=ids[0] if n else None,
            serial_number=f"{n:040x}",
            subject=f"CN=Bench CA {n}",
            issuer="CN=Bench CA 0",
            not_before=now - SPAN - timedelta(days=30),
            not_after=now + timedelta(days=3650),
            key_algorithm="EC",
            key_size=256,
            signature_algorithm="ecdsa-with-SHA256",
            certificate_pem=pem,
        )
        ids.append(repos.cas.add(ca).id)
    return ids


def certificate_rows(
    count: int, org_id: int, ca_ids: list[int], pem: str, now: datetime, rng: random.Random
) -> Iterator[list[dict[str, Any]]]:
    days, shares = zip(*VALIDITY, strict=True)
    ca_weights = [1 / (k + 1) for k in range(len(ca_ids))]  # a few CAs issue most
    batch: list[dict[str, Any]] = []
    for i in range(count):
        imported = rng.random() < IMPORTED_SHARE
        issued = now - SPAN * (rng.random() if imported else 1 - i / count)
        lifetime = timedelta(days=rng.choices(days, shares)[0])
        not_after = issued + lifetime
        revoked = rng.random() < REVOKED_SHARE
        revoked_at = issued + min(lifetime, now - issued) * rng.random() if revoked else None
        cn = common_name(i)
        sans = f"dns:{cn} dns:www.{cn}"
        if i % 4 == 0:
            sans += f" ip:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        batch.append(
            {
                "org_id": org_id,
                "refid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "ca_id": rng.choices(ca_ids, ca_weights)[0],
                "serial_number": f"{rng.getrandbits(159):040x}",
                "common_name": cn,
                "subject": f"CN={cn},O=Example Corp",
                "issuer": "CN=Bench CA",
                "san_text": sans,
                "not_before": issued,
                "not_after": not_after,
                "status": "revoked" if revoked else "active",
                "revoked_at": revoked_at,
                "revocation_reason": "superseded" if revoked else None,
                "key_algorithm": "EC",
                "key_size": 256,
                "fingerprint_sha256": f"{rng.getrandbits(256):064x}",
                "certificate_pem": pem,
                "origin": "import" if imported else "api",
                "created_by": "bench",
                "created_at": issued,
            }
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def seed(engine: Engine, rows: int, now: datetime) -> tuple[int, float]:
    """Organization, CAs, `rows` certificates and a few hundred CSRs; returns the org id."""
    rng, pem, started = random.Random(42), leaf_pem(), time.perf_counter()
    sessions = session_factory(engine)
    with sessions.begin() as session:
        org_id = Repositories(session, 0).organizations.add("default").id
        ca_ids = seed_cas(session, org_id, pem, now)
        session.execute(insert(models.CertificateRequestRow), csr_rows(org_id, pem, now))
    done = 0
    for batch in certificate_rows(rows, org_id, ca_ids, pem, now, rng):
        with engine.begin() as connection:
            connection.execute(insert(models.Certificate), batch)
        done += len(batch)
        print(f"\r  seeded {done:,} / {rows:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    fold_tally(engine)
    if engine.dialect.name == "sqlite":  # as each server process does at start
        refresh_trigram_stats(sessions)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does after a load
        else:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return org_id, time.perf_counter() - started


def fold_tally(engine: Engine) -> None:
    """What the server's background job does every few seconds, until no delta is left."""
    sessions = session_factory(engine)
    while True:
        with sessions() as session:
            if session.scalar(select(CertificateTallyDelta.id).limit(1)) is None:
                return
            TallyFolder(session).fold()
            session.commit()


def csr_rows(org_id: int, pem: str, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "org_id": org_id,
            "refid": str(uuid.uuid4()),
            "name": f"request {n}",
            "common_name": f"csr-{n}.example.com",
            "subject": f"CN=csr-{n}.example.com",
            "san_text": "",
            "key_algorithm": "EC",
            "key_size": 256,
            "csr_pem": pem,
            "status": "pending" if n % 3 else "signed",
            "created_at": now - timedelta(hours=n),
        }
        for n in range(300)
    ]


def timed(
    engine: Engine, org_id: int, repeat: int, call: Callable[[Repositories, int], str]
) -> tuple[list[float], list[float], str]:
    """`call` in a fresh transaction per run, like one request; two unmeasured runs first.
    Returns wall times, CPU times (this process plus the PostgreSQL backend serving it, read
    from /proc in ns, so they do not grow when other processes compete for the cores), and
    the last run's note."""
    walls, cpus, note = [], [], ""
    with engine.connect() as connection:
        backend = None
        if engine.dialect.name == "postgresql":
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            connection.commit()
        for n in range(repeat + 2):
            cpu, start = cpu_seconds(backend), time.perf_counter()
            with Session(bind=connection) as session, session.begin():
                note = call(Repositories(session, org_id), n)
            if n >= 2:
                walls.append(time.perf_counter() - start)
                cpus.append(cpu_seconds(backend) - cpu)
    return walls, cpus, note


def cpu_seconds(backend_pid: int | None) -> float:
    used = time.process_time()
    if backend_pid is not None:  # first field of schedstat: ns spent running
        used += int(Path(f"/proc/{backend_pid}/schedstat").read_text().split()[0]) / 1e9
    return used


def measure(engine: Engine, org_id: int, rows: int, now: datetime, repeat: int) -> list[Timing]:
    sessions = session_factory(engine)
    rng = random.Random(7)
    results: list[Timing] = []

    def run(label: str, call: Callable[[Repositories, int], str]) -> None:
        walls, cpus, note = timed(engine, org_id, repeat, call)
        results.append(Timing(label, walls, cpus, note))
        print(f"  {label}: p99 {percentile(walls, 99):.1f} ms", file=sys.stderr)

    with sessions.begin() as session:
        biggest_ca = Repositories(session, org_id).cas.all()[0].id
    for name, filters in [
        ("none", CertificateFilter()),
        ("status=active", CertificateFilter(status="active")),
        ("status=expired", CertificateFilter(status="expired")),
        ("status=revoked", CertificateFilter(status="revoked")),
        ("status=expiring", CertificateFilter(status="expiring")),
        ("ca_id (largest CA)", CertificateFilter(ca_id=biggest_ca)),
    ]:
        with sessions.begin() as session:
            _, total = Repositories(session, org_id).certificates.page(filters, now, 1, PER_PAGE)
        deep = max(1, min(DEEP_PAGE, math.ceil(total / PER_PAGE)))
        for page in (1, deep):
            run(f"list {name}, page {page}", listing(filters, now, page))

    def search_terms(n: int) -> str:  # a 5-digit run of the nth sampled certificate's number
        return f"{random.Random(n).randrange(rows):07d}"[1:6]

    run(
        "list search=<5 digits of a CN>",
        lambda r, n: page_note(
            r.certificates.page(CertificateFilter(search=search_terms(n)), now, 1, PER_PAGE)
        ),
    )
    run(
        "list search=<one domain, 2%>",
        lambda r, n: page_note(
            r.certificates.page(
                CertificateFilter(search=f"example-{n % 50:02d}.com"), now, 1, PER_PAGE
            )
        ),
    )
    actor = system_actor(org_id)
    run(
        "global search (limit 5)",
        lambda r, n: f"{len(SearchService(r, actor).search(search_terms(n)).certificates)} shown",
    )
    run("get by id", lambda r, n: str(r.certificates.get(rng.randrange(1, rows + 1)) is not None))
    run("certificate stats", lambda r, n: f"total {r.certificates.stats(now)['total']:,}")
    run(
        "dashboard stats",
        lambda r, n: f"expiring {DashboardService(r, now).stats()['expiring_soon']:,}",
    )
    run(
        "dashboard expiring-certs (30 d)",
        lambda r, n: f"{len(DashboardService(r, now).expiring(30, 10))} shown",
    )
    run(
        "dashboard certificate-trend (30 d)",
        lambda r, n: (
            f"{sum(int(str(d['issued'])) for d in DashboardService(r, now).trend(30)):,} issued"
        ),
    )
    return results


def listing(
    filters: CertificateFilter, now: datetime, page: int
) -> Callable[[Repositories, int], str]:
    return lambda r, n: page_note(r.certificates.page(filters, now, page, PER_PAGE))


def page_note(result: tuple[Any, int]) -> str:
    rows, total = result
    return f"{len(rows)} of {total:,}"


def percentile(latencies: list[float], pct: int) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, math.ceil(len(ordered) * pct / 100) - 1)]


def report(backend: str, rows: int, seconds: float, results: list[Timing], load: str) -> bool:
    print(f"\n{backend}: {rows:,} certificates (seeded in {seconds:.0f} s); {load}")
    print(f"target: p99 <= {TARGET_MS:.0f} ms; cpu = this process + the database backend")
    head = ["query", "p50 ms", "p99 ms", "cpu p50", "cpu p99", "p99", "result"]
    print(f"{head[0]:40}{head[1]:>8}{head[2]:>8}{head[3]:>9}{head[4]:>9}  {head[5]:8}{head[6]}")
    met = True
    for t in results:
        p99 = percentile(t.walls, 99)
        mark = "ok" if p99 <= TARGET_MS else "MISSED"
        met &= p99 <= TARGET_MS
        cpu50, cpu99 = statistics.median(t.cpus) * 1000, percentile(t.cpus, 99)
        wall50 = statistics.median(t.walls) * 1000
        print(f"{t.label:40}{wall50:8.1f}{p99:8.1f}{cpu50:9.1f}{cpu99:9.1f}  {mark:8}{t.note}")
    return met


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def bench(backend: str, args: argparse.Namespace) -> bool:
    now = datetime.now(UTC)
    with (
        tempfile.TemporaryDirectory(prefix="tessera-inventory-") as tmp,
        support.database(backend) as pg_url,
    ):
        engine = make_engine(pg_url or f"sqlite:///{Path(tmp) / 'tessera.db'}")
        try:
            migrate(engine)
            print(f"{backend}: seeding {args.rows:,} certificates", file=sys.stderr)
            org_id, seconds = seed(engine, args.rows, now)
            # As a server worker does after start-up (tessera/server.py): what is left is
            # frozen, so full collections do not walk it in the middle of a measured query.
            gc.collect()
            gc.freeze()
            before = load_average()
            results = measure(engine, org_id, args.rows, now, args.repeat)
            load = f"{before} before, {load_average().split(' on ')[0]} after measuring"
        finally:
            engine.dispose()
    return report(backend, args.rows, seconds, results, load)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="certificates to seed")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=50, help="measured runs per query")
    parser.add_argument("--database-url", help="PostgreSQL admin URL: a throwaway DB is made there")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so temporary databases go
    if args.database_url:
        support.PG_ADMIN_URL = args.database_url
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    met = [bench(backend, args) for backend in backends]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
