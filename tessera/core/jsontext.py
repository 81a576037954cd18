"""JSON from outside, refused when its text is no Unicode.

JSON allows an unpaired surrogate escape ("\\ud800"), but it decodes to a Python str that
cannot be encoded: the databases, the nonce file and the JSON encoder all fail on it, deep
inside a request. Parsed here, such a document is a ValueError like any other bad JSON."""

import json
from typing import Any


def loads(raw: bytes | str) -> Any:
    """`json.loads`; raises ValueError (UnicodeEncodeError) for an unpaired surrogate too."""
    value = json.loads(raw)
    escaped = b"\\u" in raw if isinstance(raw, bytes) else "\\u" in raw
    if escaped:  # only an escape can make a surrogate: raw UTF-8 cannot carry one
        check_text(value)
    return value


def check_text(value: Any) -> None:
    """Raises UnicodeEncodeError for a str anywhere in the parsed value (keys included) that
    has no UTF-8 form. Iterative: the document may be as deep as the parser allowed."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
