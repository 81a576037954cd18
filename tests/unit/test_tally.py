"""The certificate tally against brute-force counts, on both backends, through inserts,
revocations, deletions, a deleted CA and folds."""

import random
import uuid
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.models_tally import CertificateTallyDelta
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.tally import TallyFolder, TallyRepository

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
UNTIL = NOW + timedelta(days=30)


def _ca(session: Session, org_id: int, n: int) -> int:
    ca = models.CertificateAuthority(
        refid=str(uuid.uuid4()),
        name=f"CA {n}",
        common_name=f"CA {n}",
        ca_type="root",
        serial_number=f"{n:040x}",
        subject=f"CN=CA {n}",
        issuer=f"CN=CA {n}",
        not_before=NOW - timedelta(days=900),
        not_after=NOW + timedelta(days=900),
        key_algorithm="EC",
        key_size=256,
        signature_algorithm="ecdsa-with-SHA256",
        certificate_pem="-",
    )
    return Repositories(session, org_id).cas.add(ca).id


def _not_after(rng: random.Random) -> datetime:
    """Spread over a year around now, with many on the boundaries the counts cut at."""
    midnight = datetime.combine(NOW.date(), time.min, tzinfo=UTC)
    special = [
        NOW,
        NOW + timedelta(microseconds=1),
        NOW - timedelta(microseconds=1),
        midnight,
        midnight + timedelta(days=1),
        midnight + timedelta(days=1, microseconds=-1),
        UNTIL,
        UNTIL + timedelta(microseconds=1),
        UNTIL - timedelta(microseconds=1),
        datetime.combine(UNTIL.date(), time.min, tzinfo=UTC),
    ]
    if rng.random() < 0.4:
        return rng.choice(special)
    return NOW + timedelta(seconds=rng.uniform(-200 * 86400, 200 * 86400))


def _rows(
    org_id: int, ca_ids: list[int | None], count: int, rng: random.Random
) -> list[dict[str, object]]:
    return [
        {
            "org_id": org_id,
            "refid": str(uuid.uuid4()),
            "ca_id": rng.choice(ca_ids),
            "serial_number": f"{rng.getrandbits(64):x}",
            "common_name": "x",
            "subject": "CN=x",
            "issuer": "CN=CA",
            "not_before": NOW - timedelta(days=400),
            "not_after": _not_after(rng),
            "status": "revoked" if rng.random() < 0.15 else "active",
            "key_algorithm": "EC",
            "key_size": 256,
            "fingerprint_sha256": f"{rng.getrandbits(256):064x}",
            "certificate_pem": "-",
        }
        for _ in range(count)
    ]


def _expected(session: Session, org_id: int, ca_id: int | None) -> dict[str, int]:
    query = select(models.Certificate.status, models.Certificate.not_after).where(
        models.Certificate.org_id == org_id
    )
    if ca_id is not None:
        query = query.where(models.Certificate.ca_id == ca_id)
    rows = session.execute(query).all()
    issued = [not_after for status, not_after in rows if status == "active"]
    return {
        "total": len(rows),
        "revoked": len(rows) - len(issued),
        "valid": sum(1 for t in issued if t > NOW),
        "expiring": sum(1 for t in issued if NOW < t <= UNTIL),
    }


def _check(engine: Engine, org_id: int, ca_ids: list[int]) -> None:
    with session_factory(engine)() as session:
        for ca_id in [None, *ca_ids]:
            got = TallyRepository(session, org_id).stats(NOW, UNTIL, ca_id)
            assert got == _expected(session, org_id, ca_id), f"ca {ca_id}"


def _fold(engine: Engine) -> None:
    with session_factory(engine)() as session:
        TallyFolder(session).fold()
        session.commit()


def test_tally_matches_row_counts(engine: Engine) -> None:
    rng = random.Random(7)
    with session_factory(engine).begin() as session:
        repos = Repositories(session, 0)
        org_id = repos.organizations.add("tally").id
        other_org = repos.organizations.add("other").id
        ca_ids = [_ca(session, org_id, n) for n in range(3)]
    with engine.begin() as connection:
        connection.execute(insert(models.Certificate), _rows(org_id, [*ca_ids, None], 400, rng))
        connection.execute(insert(models.Certificate), _rows(other_org, [None], 50, rng))
    _check(engine, org_id, ca_ids)  # every change still in the deltas
    _fold(engine)
    _check(engine, org_id, ca_ids)

    with engine.begin() as connection:
        cert = models.Certificate
        ids = connection.scalars(select(cert.id).where(cert.org_id == org_id)).all()
        connection.execute(update(cert).where(cert.id.in_(ids[:40])).values(status="revoked"))
        connection.execute(update(cert).where(cert.id.in_(ids[40:60])).values(status="active"))
        connection.execute(
            update(cert).where(cert.id.in_(ids[60:80])).values(not_after=NOW + timedelta(days=3))
        )
        connection.execute(delete(cert).where(cert.id.in_(ids[80:100])))
        connection.execute(insert(cert), _rows(org_id, ca_ids, 30, rng))
    _check(engine, org_id, ca_ids)
    _fold(engine)
    _check(engine, org_id, ca_ids)

    with engine.begin() as connection:  # ON DELETE SET NULL moves its certificates to "no CA"
        connection.execute(
            delete(models.CertificateAuthority).where(models.CertificateAuthority.id == ca_ids[2])
        )
    _check(engine, org_id, ca_ids[:2])
    _fold(engine)
    _check(engine, org_id, ca_ids[:2])
    with session_factory(engine)() as session:
        orphaned = TallyRepository(session, org_id).stats(NOW, UNTIL, ca_ids[2])
        assert orphaned == {"total": 0, "revoked": 0, "valid": 0, "expiring": 0}
        assert session.scalar(select(CertificateTallyDelta.id).limit(1)) is None
