"""Time is injected so tests can move it; always timezone-aware UTC."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tessera.core.errors import InvalidInput

Clock = Callable[[], datetime]

# Python's datetime, and so every timestamp Tessera stores, spans years 1 to 9999.
LATEST = datetime.max.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime, name: str) -> datetime:
    """A moment someone gave (a query parameter, a request body) as the aware UTC datetime
    that is stored and compared; no zone means UTC. Near the ends of the calendar an offset
    can push UTC out of it (0001-01-01T00:00+14:00 is in year 0): that is an InvalidInput
    naming `name`, not an OverflowError later in a query or a streamed body."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{name}: {moment.isoformat()} is out of range (UTC years 1 to 9999)"
        ) from None


def wire_time(moment: datetime) -> str:
    """How every API writes a moment: UTC to the second with a `Z` (docs/native-api.md)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def later(moment: datetime, step: timedelta) -> datetime:
    """`moment + step`, or LATEST where that is past the calendar: the bound after the day
    9999-12-31, or just after its last microsecond, which no stored timestamp reaches."""
    return moment + step if moment <= LATEST - step else LATEST
