"""Substring search over certificates' common names and SANs (migration 0013).

A match is a row of the narrow `certificate_search` copy whose text (lower-cased common name,
newline, lower-cased SAN text) contains the term. PostgreSQL finds them with the LIKE itself,
through its pg_trgm index on that text. SQLite narrows first with its FTS5 trigram table: an
AND of the term's rarest trigrams finds a superset of the matches from row-id lists alone, and
the LIKE then re-checks each candidate's narrow row. Which trigrams are rare comes from
sampled shares (`search_trigram_stats`); they choose the lookup, never the result.
See docs/inventory-performance.md.
"""

import random
from collections.abc import Mapping, Sequence

from sqlalchemy import (
    BindParameter,
    Select,
    String,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    table,
)
from sqlalchemy.orm import Session

from tessera.storage.models import Certificate
from tessera.storage.models_search import CertificateSearchRow, SearchTrigramShare

_SEARCH = CertificateSearchRow.__table__.c
_FTS = table("certificate_search_fts", column("rowid"), column("certificate_search_fts"))
_SHARES = SearchTrigramShare.__table__.c
FTS_MIN_TERM = 3  # the trigram index cannot look up anything shorter
LOOKED_UP = 4  # at most this many trigrams are ANDed
# A trigram in more of the rows than this is looked up only when the term has nothing rarer:
# SQLite's FTS5 reads an AND's long row-id lists whole, so it would cost more than it narrows.
COMMON_SHARE = 0.25


class CertificateSearchRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def ids(self, term: str) -> Select[int]:
        """Ids of the organization's certificates whose common name or SAN contains `term`
        (case-insensitively, every character literal), newest first."""
        dialect = self._session.get_bind().dialect.name
        # On PostgreSQL the pattern is written into the statement (quoted by SQLAlchemy): a
        # trigram index helps only a plan made for the pattern, and psycopg prepares a
        # statement after five runs, after which PostgreSQL may reuse one generic plan for
        # every pattern; at 1M rows that plan (walk the primary key, filter) took 3-4 s for a
        # term with 20 matches.
        pattern = bindparam(None, like_pattern(term), String, literal_execute=dialect != "sqlite")
        if "\n" in term:  # would span the separator of the copy's two names
            return self._unindexed(pattern)
        found = select(_SEARCH.id).where(
            _SEARCH.org_id == self._org_id, _SEARCH.text.like(pattern, escape="\\")
        )
        if dialect != "sqlite" or len(term) < FTS_MIN_TERM:
            return found.order_by(_SEARCH.id.desc())
        lookup = _FTS.c.certificate_search_fts.op("MATCH")(self._trigram_query(term))
        # Ordered by the FTS table's row id, FTS5 yields candidates newest first itself, so a
        # page stops after its rows instead of re-checking every candidate.
        narrowed = found.join(_FTS, _FTS.c.rowid == _SEARCH.id).where(lookup)
        return narrowed.order_by(_FTS.c.rowid.desc())

    def _trigram_query(self, term: str) -> str:
        lowered = term.lower()
        grams = list(dict.fromkeys(lowered[i : i + 3] for i in range(len(lowered) - 2)))
        known = select(_SHARES.trigram, _SHARES.share).where(_SHARES.trigram.in_(grams))
        shares: dict[str, float] = {g: s for g, s in self._session.execute(known)}
        return " AND ".join(_fts_string(g) for g in rarest_trigrams(grams, shares))

    def _unindexed(self, pattern: BindParameter[str]) -> Select[int]:
        return (
            select(Certificate.id)
            .where(
                Certificate.org_id == self._org_id,
                or_(
                    func.lower(Certificate.common_name).like(pattern, escape="\\"),
                    func.lower(Certificate.san_text).like(pattern, escape="\\"),
                ),
            )
            .order_by(Certificate.id.desc())
        )


class SearchStatsRepository:
    """The sampled trigram shares, for every organization: they only steer lookups."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def sample(self, size: int) -> Sequence[str]:
        """The texts of up to `size` search rows picked at random (fewer where ids have gaps)."""
        low, high = self._session.execute(select(func.min(_SEARCH.id), func.max(_SEARCH.id))).one()
        if low is None:
            return []
        picked = random.sample(range(low, high + 1), min(size, high - low + 1))
        return self._session.scalars(select(_SEARCH.text).where(_SEARCH.id.in_(picked))).all()

    def replace(self, shares: Mapping[str, float]) -> None:
        self._session.execute(delete(SearchTrigramShare))
        if shares:
            rows = [{"trigram": gram, "share": share} for gram, share in shares.items()]
            self._session.execute(insert(SearchTrigramShare), rows)


def rarest_trigrams(grams: Sequence[str], shares: Mapping[str, float]) -> list[str]:
    """Up to LOOKED_UP of `grams` with the smallest shares (a trigram without one is rare),
    leaving out common ones unless nothing else is left."""
    ranked = sorted(grams, key=lambda gram: shares.get(gram, 0.0))
    chosen = [gram for gram in ranked[:LOOKED_UP] if shares.get(gram, 0.0) <= COMMON_SHARE]
    return chosen or ranked[:1]


def like_pattern(term: str) -> str:
    """A lower-case LIKE pattern (ESCAPE '\\') that finds `term` as a literal substring."""
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fts_string(gram: str) -> str:
    return '"' + gram.replace('"', '""') + '"'  # an FTS5 string: every character literal
