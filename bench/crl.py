"""CRL generation at scale: build, sign and store the CRL of one CA with 100,000 and
1,000,000 revoked certificates, in a scratch SQLite database made by Tessera's migrations.

    .venv/bin/python bench/crl.py [--sizes 100000,1000000] [--repeat 3] [--key ec|rsa]

Revoked certificates are written with SQLAlchemy Core bulk inserts (not timed). Each
measured run is `CRLPublisher.publish`, exactly what the background job and
`POST /api/v2/crl/{id}/regenerate` do: claim a CRL number, read the revoked entries, encode,
sign (full and delta CRL), store. The phases are also timed one by one. In the same run, the
peers: `openssl ca -gencrl` over an index.txt with the same entries, and cryptography's
own CRL builder given the whole list at once.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tessera.core.keys import PrivateKey, signature_hash
from tessera.core.keystore import KeyEncryptor
from tessera.core.names import name_text
from tessera.domains.actor import system_actor
from tessera.domains.audit import wiring as audit_wiring
from tessera.domains.crl.builder import CRLSpec, build_crl
from tessera.domains.crl.publisher import CRLPolicy, CRLPublisher
from tessera.domains.issuance import PublicationBase
from tessera.storage import models
from tessera.storage.db import make_engine, migrate, session_factory
from tessera.storage.models_crl import PublishedCRL
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.crl import CRLRepository

TARGET_100K = 1.5  # seconds
BATCH = 50_000
REASONS = ["keyCompromise", "superseded", "cessationOfOperation", None, "certificateHold"]


def ca_material(kind: str) -> tuple[PrivateKey, x509.Certificate]:
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CRL CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, signature_hash(key))  # type: ignore[arg-type]
    )
    return key, cert


def revoked_rows(
    count: int, org_id: int, ca_id: int, now: datetime, rng: random.Random
) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for i in range(count):
        revoked_at = now - timedelta(seconds=rng.randrange(365 * 86400))
        batch.append(
            {
                "org_id": org_id,
                "refid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "ca_id": ca_id,
                "serial_number": format(rng.getrandbits(159) | 1 << 158, "X"),
                "common_name": f"h{i}",
                "subject": f"CN=h{i}",
                "issuer": "CN=Bench CRL CA",
                "not_before": revoked_at - timedelta(days=30),
                "not_after": now + timedelta(days=rng.randrange(1, 365)),
                "status": "revoked",
                "revoked_at": revoked_at,
                "revocation_reason": REASONS[i % len(REASONS)],
                "key_algorithm": "EC",
                "key_size": 256,
                "fingerprint_sha256": f"{rng.getrandbits(256):064x}",
                "certificate_pem": "-",  # only the CRL columns matter here
                "created_at": revoked_at,
            }
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def suspended_triggers(engine: Engine) -> Iterator[None]:
    """Seeding only (not timed): the certificates table's triggers maintain the search index
    and the dashboard tally, which a CRL never reads; they are dropped while the rows go in
    and put back after, so a million rows load in a minute rather than most of an hour."""
    with engine.begin() as connection:
        triggers = connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
            " AND tbl_name = 'certificates'"
        ).all()
        for name, _ in triggers:
            connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
    try:
        yield
    finally:
        with engine.begin() as connection:
            for _, sql in triggers:
                connection.exec_driver_sql(sql)


class Scratch:
    """A fresh SQLite database with one CA and `count` revoked certificates."""

    def __init__(self, directory: Path, count: int, key_kind: str) -> None:
        self.engine = make_engine(f"sqlite:///{directory / 'crl-bench.db'}")
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        audit_wiring.ensure_key(directory)  # audit rows are chained: sessions carry the key
        audit_wiring.install(self.sessions, audit_wiring.read_key(directory))
        self.keys = KeyEncryptor([KeyEncryptor.new_kek()])
        self.key, self.cert = ca_material(key_kind)
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            repos = Repositories(session, 0)
            self.org_id = repos.organizations.add("default").id
            ca = models.CertificateAuthority(
                refid=str(uuid.uuid4()),
                name="Bench CRL CA",
                common_name="Bench CRL CA",
                ca_type="root",
                serial_number=format(self.cert.serial_number, "X"),
                subject=name_text(self.cert.subject),
                issuer=name_text(self.cert.issuer),
                not_before=self.cert.not_valid_before_utc,
                not_after=self.cert.not_valid_after_utc,
                key_algorithm=key_kind.upper(),
                key_size=256 if key_kind == "ec" else 2048,
                signature_algorithm="bench",
                certificate_pem=self.cert.public_bytes(serialization.Encoding.PEM).decode(),
                encrypted_private_key=self.keys.encrypt(self.key),
            )
            self.ca_id = Repositories(session, self.org_id).cas.add(ca).id
        rng = random.Random(count)
        with suspended_triggers(self.engine):
            for batch in revoked_rows(count, self.org_id, self.ca_id, now, rng):
                with self.engine.begin() as connection:
                    connection.execute(insert(models.Certificate), batch)

    def publisher(self) -> CRLPublisher:
        policy = CRLPolicy(timedelta(hours=24), timedelta(hours=4), timedelta(0))
        base = PublicationBase("http://crl.bench.example", delta_crls=True)
        return CRLPublisher(self.sessions, self.keys, base, policy, lambda: datetime.now(UTC))


def timed(work: Callable[[], object]) -> tuple[float, object]:
    seconds, _, result = timed_cpu(work)
    return seconds, result


def timed_cpu(work: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU seconds: the machine may be shared, and CPU time shows the cost of the
    work itself when other processes compete for the cores."""
    started, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - started, time.process_time() - cpu, result


def phases(scratch: Scratch) -> dict[str, float]:
    """The publish path taken apart: read, encode and sign, store (one full CRL)."""
    now = datetime.now(UTC).replace(microsecond=0)
    with scratch.sessions() as session:
        read, rows = timed(lambda: CRLRepository(session).revoked_entries([scratch.ca_id], now))
    spec = CRLSpec(scratch.cert, scratch.key, 10**9, now, now + timedelta(days=1))
    sign, der = timed(lambda: build_crl(spec, rows))  # type: ignore[arg-type]
    assert isinstance(der, bytes)

    def store() -> None:
        with scratch.sessions.begin() as session:
            session.add(
                PublishedCRL(
                    ca_id=scratch.ca_id,
                    org_id=scratch.org_id,
                    kind="bench",
                    crl_number=10**9 + int(time.time() * 1000) % 10**6,
                    this_update=now,
                    next_update=now,
                    entries=len(rows),  # type: ignore[arg-type]
                    size=len(der),
                    sha256="-",
                    der=der,
                )
            )

    write, _ = timed(store)
    return {"read": read, "encode+sign": sign, "store": write, "bytes": float(len(der))}


def cryptography_builder(scratch: Scratch, count: int) -> float:
    """The library's own builder, given the whole list at once (the fast way to use it)."""
    now = datetime.now(UTC).replace(microsecond=0)
    with scratch.sessions() as session:
        rows = CRLRepository(session).revoked_entries([scratch.ca_id], now)

    def build() -> None:
        entries = []
        for serial, revoked_at, reason, _ in rows:
            builder = x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
            builder = builder.revocation_date(datetime.fromtimestamp(revoked_at, UTC))
            if reason and reason != "unspecified":
                flag = x509.ReasonFlags.key_compromise  # the cost is the same for any reason
                builder = builder.add_extension(x509.CRLReason(flag), critical=False)
            entries.append(builder.build())
        crl = x509.CertificateRevocationListBuilder(
            issuer_name=scratch.cert.subject,
            last_update=now,
            next_update=now + timedelta(days=1),
            revoked_certificates=entries,
        ).add_extension(x509.CRLNumber(1), critical=False)
        crl.sign(scratch.key, signature_hash(scratch.key)).public_bytes(  # type: ignore[arg-type]
            serialization.Encoding.DER
        )

    return timed(build)[0]


def openssl_gencrl(scratch: Scratch, directory: Path) -> float | None:
    """`openssl ca -gencrl` over an index.txt listing the same revoked certificates."""
    now = datetime.now(UTC)
    with scratch.sessions() as session:
        rows = CRLRepository(session).revoked_entries([scratch.ca_id], now)
    index = directory / "index.txt"
    with index.open("w") as out:
        for serial, revoked_at, reason, _ in rows:
            when = datetime.fromtimestamp(revoked_at, UTC).strftime("%y%m%d%H%M%SZ")
            stamp = f"{when},{reason}" if reason and reason != "certificateHold" else when
            out.write(f"R\t491231235959Z\t{stamp}\t{serial}\tunknown\t/CN=x\n")
    (directory / "ca.pem").write_bytes(scratch.cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(
        scratch.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = directory / "ca.cnf"
    config.write_text(
        "[ca]\ndefault_ca = bench\n[bench]\n"
        f"database = {index}\ncertificate = {directory / 'ca.pem'}\n"
        f"private_key = {directory / 'ca.key'}\ndefault_md = sha256\n"
        "default_crl_days = 1\ncrl_extensions = ext\n[ext]\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    command = ["openssl", "ca", "-gencrl", "-config", str(config), "-out", str(directory / "o")]
    seconds, result = timed(lambda: subprocess.run(command, capture_output=True, timeout=600))
    assert isinstance(result, subprocess.CompletedProcess)
    if result.returncode != 0:
        print("  openssl ca -gencrl failed:", result.stderr.decode()[-300:])
        return None
    return seconds


def run(count: int, repeat: int, key_kind: str, peers: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tessera-crl-bench-") as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        scratch = Scratch(directory, count, key_kind)
        print(f"{count:>9,} revoked: seeded in {time.perf_counter() - started:.1f} s")
        publisher = scratch.publisher()
        actor = system_actor(scratch.org_id)
        totals, cpus = [], []
        for _ in range(repeat):
            seconds, cpu, published = timed_cpu(
                lambda: publisher.publish(scratch.ca_id, "manual", None, actor)
            )
            assert published is not None
            totals.append(seconds)
            cpus.append(cpu)
        parts = phases(scratch)
        result = {
            "publish": statistics.median(totals),
            "best": min(totals),
            "cpu": statistics.median(cpus),
            **parts,
        }
        if peers:
            result["cryptography"] = cryptography_builder(scratch, count)
            result["openssl"] = openssl_gencrl(scratch, directory) or float("nan")
        scratch.engine.dispose()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--key", choices=["ec", "rsa"], default="ec")
    parser.add_argument("--no-peers", action="store_true", help="skip openssl and cryptography")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {n: run(n, args.repeat, args.key, not args.no_peers) for n in sizes}
    print(f"\nCRL build+sign+store, {args.key.upper()} CA key, {os.cpu_count()} cores")
    header = "  entries  publish(full+delta)        cpu  read  encode+sign  store      MB"
    print(header + ("  cryptography  openssl -gencrl  vs openssl" if not args.no_peers else ""))
    for n, r in results.items():
        line = (
            f"{n:>9,}  {r['publish']:>8.2f} s (best {r['best']:.2f})  {r['cpu']:>6.2f} s"
            f"  {r['read']:.2f}  {r['encode+sign']:>10.2f}  {r['store']:>5.2f}"
            f"  {r['bytes'] / 1e6:>6.1f}"
        )
        if not args.no_peers:
            ratio = r["openssl"] / r["publish"]
            line += f"  {r['cryptography']:>10.2f} s  {r['openssl']:>13.2f} s  {ratio:>8.2f}x"
        print(line)
    if 100_000 in results:
        verdict = "meets" if results[100_000]["publish"] <= TARGET_100K else "MISSES"
        print(f"target: <= {TARGET_100K} s at 100,000 entries: {verdict}")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        growth = results[large]["publish"] / results[small]["publish"]
        print(
            f"growth {small:,} -> {large:,} entries: {growth:.1f}x (linear: {large / small:.0f}x)"
        )


if __name__ == "__main__":
    main()
