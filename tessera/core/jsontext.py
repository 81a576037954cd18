"""JSON from outside, refused when its text is not Unicode in UTF-8.

JSON allows an unpaired surrogate escape ("\\ud800"), but it decodes to a Python str that
cannot be encoded: the databases, the nonce file and the JSON encoder all fail on it, deep
inside a request. And `json.loads` reads bytes in UTF-16 and UTF-32 too, where no `\\u`
escape shows in the raw bytes; RFC 8259 8.1 has JSON exchanged in UTF-8 only. Parsed here,
either is a ValueError like any other bad JSON."""

import json
from typing import Any


def loads(raw: bytes | str) -> Any:
    """`json.loads`; raises ValueError for text that is not UTF-8, or has an unpaired
    surrogate (UnicodeEncodeError)."""
    text = decode(raw) if isinstance(raw, bytes) else raw
    value = json.loads(text)
    if "\\u" in text:  # only an escape can make a surrogate
        check_text(value)
    return value


def decode(raw: bytes) -> str:
    """The JSON text of a body: UTF-8 (with or without a byte order mark), nothing else."""
    if json.detect_encoding(raw) not in ("utf-8", "utf-8-sig"):
        raise ValueError("JSON text must be UTF-8 (RFC 8259 8.1)")
    return raw.decode("utf-8-sig")


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
