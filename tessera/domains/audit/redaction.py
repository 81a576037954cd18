"""Sensitive values never leave in exports or syslog: names from the platform dialect's list
are replaced by *** wherever they appear as a key or as a query parameter."""

import re
from typing import Any

SENSITIVE = ("api_key", "token", "access_token", "secret", "password", "key", "authorization")
MASK = "***"
_NAMES = {name.lower() for name in SENSITIVE}
# name=value pairs in a query string or form body: only exact names, not e.g. key_size.
_PAIR = re.compile(
    r"(?P<lead>(?:^|[?&;\s]))(?P<name>" + "|".join(SENSITIVE) + r")=(?P<value>[^&;\s\"']*)",
    re.IGNORECASE,
)


def exported_details(details: dict[str, Any] | None) -> dict[str, Any]:
    """An audit row's details as they may leave the server: every export (v1 CSV, v2 JSON
    and CSV) and syslog go through here, so none of them can forget the masking."""
    masked: dict[str, Any] = redact(details or {})
    return masked


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: MASK if str(k).lower() in _NAMES else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _PAIR.sub(lambda m: f"{m['lead']}{m['name']}={MASK}", value)
    return value


_FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_LEAD) else value
