"""Substring search against a brute-force scan, on both backends: the search copy follows
every change to certificates, results do not depend on the trigram statistics, and the
statistics job ranks trigrams by how common they are."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from tessera.domains.search.trigrams import refresh_trigram_stats, trigram_shares
from tessera.storage import models
from tessera.storage.db import session_factory
from tessera.storage.models_search import SearchTrigramShare
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.certificate_search import SearchStatsRepository, rarest_trigrams
from tessera.storage.repositories.certificates import CertificateFilter

NOW = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
TERMS = [
    "example-07.com",  # every fiftieth row, made of trigrams most rows have
    "EXAMPLE-07",  # case is folded
    "i-000001",
    "www.web-0000",
    "ip:10.0.1",
    ".com",
    "dns:",
    "com dns:www",  # across two SAN entries
    "co",  # too short for a trigram index
    "%",  # LIKE wildcards and FTS syntax are plain characters
    "50%_off",
    "a\\b",
    '"quoted" AND',
    "café",
    "c.com\ndns",  # spans the copy's separator: no name has a newline
    "no-such-name",
]


def _names(n: int) -> tuple[str, str]:
    service = ["api", "web", "mail"][n % 3]
    cn = f"{service}-{n:07d}.example-{n % 50:02d}.com"
    sans = f"dns:{cn} dns:www.{cn}" + (f" ip:10.0.{n % 7}.{n % 200}" if n % 4 == 0 else "")
    odd = {5: "50%_off.example.com", 6: "a\\b.example.com", 7: '"quoted" and.example'}
    return odd.get(n, cn), sans if n != 8 else "dns:café.example"


def _rows(org_id: int, numbers: Sequence[int]) -> list[dict[str, object]]:
    rows = []
    for n in numbers:
        cn, sans = _names(n)
        rows.append(
            {
                "org_id": org_id,
                "refid": str(uuid.uuid4()),
                "serial_number": f"{n:040x}{org_id}",
                "common_name": cn,
                "subject": f"CN={cn}",
                "issuer": "CN=CA",
                "san_text": sans,
                "not_before": NOW - timedelta(days=10),
                "not_after": NOW + timedelta(days=80 if n % 3 else -1),
                "status": "active",
                "key_algorithm": "EC",
                "key_size": 256,
                "fingerprint_sha256": f"{n:064x}",
                "certificate_pem": "-",
            }
        )
    return rows


def _expected(session: Session, org_id: int, term: str) -> list[int]:
    cert = models.Certificate
    rows = session.execute(
        select(cert.id, cert.common_name, cert.san_text).where(cert.org_id == org_id)
    ).all()
    wanted = term.lower()
    found = [i for i, cn, san in rows if wanted in cn.lower() or wanted in (san or "").lower()]
    return sorted(found, reverse=True)


def _check(engine: Engine, org_id: int) -> None:
    with session_factory(engine)() as session:
        certificates = Repositories(session, org_id).certificates
        for term in TERMS:
            expected = _expected(session, org_id, term)
            rows, total = certificates.page(CertificateFilter(search=term), NOW, 1, 1000)
            assert ([r.id for r in rows], total) == (expected, len(expected)), term
            second, total = certificates.page(CertificateFilter(search=term), NOW, 2, 7)
            assert ([r.id for r in second], total) == (expected[7:14], len(expected)), term
            valid, _ = certificates.page(
                CertificateFilter(search=term, status="active"), NOW, 1, 1000
            )
            wanted = {r.id for r in rows if r.not_after > NOW}
            assert {r.id for r in valid} == wanted, term
            found = Repositories(session, org_id).search.certificates(term, 5)
            assert [r.id for r in found] == expected[:5], term


@pytest.fixture
def orgs(engine: Engine) -> tuple[int, int]:
    with session_factory(engine).begin() as session:
        repos = Repositories(session, 0)
        return repos.organizations.add("search").id, repos.organizations.add("other").id


def test_search_matches_a_scan_through_every_change(engine: Engine, orgs: tuple[int, int]) -> None:
    org_id, other = orgs
    with engine.begin() as connection:
        connection.execute(insert(models.Certificate), _rows(org_id, range(600)))
        connection.execute(insert(models.Certificate), _rows(other, range(0, 600, 3)))
    _check(engine, org_id)
    refresh_trigram_stats(session_factory(engine))
    _check(engine, org_id)

    cert = models.Certificate
    with engine.begin() as connection:
        ids = connection.scalars(select(cert.id).where(cert.org_id == org_id)).all()
        renamed = {"common_name": "renamed-example-07.com", "san_text": ""}
        connection.execute(update(cert).where(cert.id.in_(ids[:30])).values(**renamed))
        connection.execute(update(cert).where(cert.id.in_(ids[30:60])).values(org_id=other))
        connection.execute(delete(cert).where(cert.id.in_(ids[60:90])))
        connection.execute(insert(cert), _rows(org_id, range(600, 700)))
    _check(engine, org_id)
    _check(engine, other)


def test_results_do_not_depend_on_the_statistics(engine: Engine, orgs: tuple[int, int]) -> None:
    """Shares that call the most common trigrams rare (and the rare ones common) change
    which trigrams are looked up, never what is found."""
    org_id, _ = orgs
    with engine.begin() as connection:
        connection.execute(insert(models.Certificate), _rows(org_id, range(300)))
    with session_factory(engine).begin() as session:
        stats = SearchStatsRepository(session)
        honest = trigram_shares(stats.sample(1000))
        stats.replace({gram: 1 - share for gram, share in honest.items()})
    _check(engine, org_id)


def test_statistics_rank_trigrams_by_how_common_they_are(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        org_id = Repositories(session, 0).organizations.add("stats").id
    with engine.begin() as connection:
        connection.execute(insert(models.Certificate), _rows(org_id, range(500)))
    refresh_trigram_stats(session_factory(engine))
    with session_factory(engine)() as session:
        query = select(SearchTrigramShare.trigram, SearchTrigramShare.share)
        shares = {gram: share for gram, share in session.execute(query)}
    assert shares["com"] == pytest.approx(1.0)
    assert shares["-07"] < shares["api"] < shares["exa"]
    grams = ["exa", "xam", "-07", "07.", "api"]
    assert set(rarest_trigrams(grams, shares)[:2]) == {"-07", "07."}
    assert rarest_trigrams(["exa", "com"], shares) == ["exa"]  # common, but nothing rarer


def test_trigram_shares_count_rows_not_occurrences() -> None:
    shares = trigram_shares(["aaaa", "aaab", "xyz"])
    assert shares["aaa"] == pytest.approx(2 / 3)
    assert "xyz" not in shares  # seen once: rare to the ranking
