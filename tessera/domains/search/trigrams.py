"""How common each trigram is among certificates' search texts, from a random sample, so that
SQLite's search looks up a term's rarest trigrams (storage/repositories/certificate_search).
PostgreSQL's trigram index keeps statistics of its own and needs none of this."""

from collections import Counter
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from tessera.storage.repositories.certificate_search import SearchStatsRepository

JOB = "search-trigram-stats"
REFRESH_SECONDS = 600.0
SAMPLE_SIZE = 4000  # rows; the shares rank trigrams, they need not be precise
MIN_SEEN = 2  # trigrams seen once in the sample are kept out: to the ranking they are rare


def trigram_shares(texts: Sequence[str]) -> dict[str, float]:
    """For each trigram seen in at least MIN_SEEN texts: the share of texts that contain it."""
    seen: Counter[str] = Counter()
    for text in texts:
        seen.update({text[i : i + 3] for i in range(len(text) - 2)})
    return {gram: n / len(texts) for gram, n in seen.items() if n >= MIN_SEEN}


def refresh_trigram_stats(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        stats = SearchStatsRepository(session)
        stats.replace(trigram_shares(stats.sample(SAMPLE_SIZE)))
        session.commit()
