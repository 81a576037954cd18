"""name texts

Subject and issuer texts name emailAddress, serialNumber and the other attribute types of
RENAMED as OpenSSL does (`emailAddress=a@b.example`, `names.name_text`) where they held their
dotted OIDs (`1.2.840.113549.1.9.1=a@b.example`, `2.5.4.5=SN123`). These texts are keys
too: a certificate imported later is linked to its CA by comparing its issuer's new text
with the CA's stored subject, so every stored text is rewritten, from the certificate or CSR
the row holds, in `certificates`, `certificate_authorities`, `trusted_certificates` and
`csrs`. SAN texts are recomputed in the same pass: a directory name SAN may name an
emailAddress, and rows stored before other names, directory names and registered ids had
their own texts (commit 3ffca64) still hold `other:` and a Python repr. `scep_requests` holds
its CSR sealed under the KEK, which a migration cannot open; its subject text is rewritten as
text (a re-sent request is matched by it).

Only rows whose texts can differ are read (a LIKE on the markers), in id order and in
batches, and only rows whose texts change are written; the search copy follows `san_text`
by its triggers. The downgrade writes the dotted OIDs back into subject and issuer texts and
leaves SAN texts in the newer form (they are shown, never matched).

Revision ID: 0022
Revises: 0021
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from cryptography import x509

from tessera.core.inspect import general_names
from tessera.core.names import format_san, name_text
from tessera.core.pkcs12_sandbox import UNREADABLE

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# (dotted, named) attribute types: core.names.ATTRIBUTE_NAMES as this revision wrote them,
# kept here so that what this revision does does not change with that table.
RENAMED = [
    ("1.2.840.113549.1.9.1=", "emailAddress="),
    ("1.2.840.113549.1.9.2=", "unstructuredName="),
    ("1.2.840.113549.1.9.8=", "unstructuredAddress="),
    ("2.5.4.5=", "serialNumber="),
    ("2.5.4.4=", "SN="),
    ("2.5.4.42=", "GN="),
    ("2.5.4.43=", "initials="),
    ("2.5.4.44=", "generationQualifier="),
    ("2.5.4.12=", "title="),
    ("2.5.4.13=", "description="),
    ("2.5.4.15=", "businessCategory="),
    ("2.5.4.16=", "postalAddress="),
    ("2.5.4.17=", "postalCode="),
    ("2.5.4.46=", "dnQualifier="),
    ("2.5.4.45=", "x500UniqueIdentifier="),
    ("2.5.4.65=", "pseudonym="),
    ("2.5.4.97=", "organizationIdentifier="),
    ("1.3.6.1.4.1.311.60.2.1.1=", "jurisdictionL="),
    ("1.3.6.1.4.1.311.60.2.1.2=", "jurisdictionST="),
    ("1.3.6.1.4.1.311.60.2.1.3=", "jurisdictionC="),
]
BATCH = 500

Signed = x509.Certificate | x509.CertificateSigningRequest
# table: (PEM column, loader, the text columns the loaded object gives)
_FROM_PEM: dict[str, tuple[str, Callable[[bytes], Signed], tuple[str, ...]]] = {
    "certificates": ("certificate_pem", x509.load_pem_x509_certificate, ("subject", "issuer")),
    "certificate_authorities": (
        "certificate_pem",
        x509.load_pem_x509_certificate,
        ("subject", "issuer"),
    ),
    "trusted_certificates": (
        "certificate_pem",
        x509.load_pem_x509_certificate,
        ("subject", "issuer"),
    ),
    "csrs": ("csr_pem", x509.load_pem_x509_csr, ("subject",)),
}
_WITH_SANS = {"certificates", "csrs"}


def upgrade() -> None:
    for table, (pem_column, load, names) in _FROM_PEM.items():
        columns = [*names, "san_text"] if table in _WITH_SANS else list(names)
        _rewrite_from_pem(table, pem_column, load, columns)
    _rewrite_texts("scep_requests", ["subject"], RENAMED)


def downgrade() -> None:
    back = [(named, dotted) for dotted, named in RENAMED]
    for table, (_, _, names) in _FROM_PEM.items():
        _rewrite_texts(table, list(names), back)
    _rewrite_texts("scep_requests", ["subject"], back)


def _rewrite_from_pem(
    table_name: str, pem_column: str, load: Callable[[bytes], Signed], columns: list[str]
) -> None:
    table = sa.table(table_name, sa.column("id"), sa.column(pem_column), *map(sa.column, columns))
    stale = [table.c[c].like(f"%{dotted}%") for c in columns for dotted, _ in RENAMED]
    if "san_text" in columns:  # the texts before commit 3ffca64 began with `other:`
        stale += [table.c.san_text.like("other:%"), table.c.san_text.like("% other:%")]
    read = [table.c[pem_column], *(table.c[c] for c in columns)]
    for rows in _batches(table, sa.or_(*stale), read):
        changed: list[dict[str, object]] = []
        for row_id, pem, *old in rows:
            new = _texts(pem, load, dict(zip(columns, old, strict=True)))
            if new != old:
                changed.append({"row_id": row_id, **dict(zip(columns, new, strict=True))})
        _update(table, columns, changed)


def _texts(pem: str, load: Callable[[bytes], Signed], old: dict[str, str]) -> list[str]:
    """The row's texts as today's code writes them. What this library cannot read (a row
    stored by an older version, or imported as is; `UNREADABLE`, several of which are no
    ValueError) keeps its text: the whole row when the PEM does not load, only the SAN text
    when the names read but the extensions do not (they are parsed apart, on first use),
    since the subject and issuer texts are what imports and issuer groups match on."""
    texts = dict(old)
    try:
        signed = load(pem.encode())
        texts["subject"] = name_text(signed.subject)
        if isinstance(signed, x509.Certificate):
            texts["issuer"] = name_text(signed.issuer)
    except UNREADABLE:
        return list(old.values())
    if "san_text" in texts:
        with contextlib.suppress(*UNREADABLE):  # the SAN text stays
            texts["san_text"] = " ".join(format_san(name) for name in general_names(signed))
    return [texts[c] for c in old]


def _rewrite_texts(table_name: str, columns: list[str], pairs: list[tuple[str, str]]) -> None:
    """Each (old, new) attribute type of `pairs` renamed in the texts, where it begins one."""
    table = sa.table(table_name, sa.column("id"), *map(sa.column, columns))
    stale = sa.or_(*(table.c[c].like(f"%{old}%") for c in columns for old, _ in pairs))
    for rows in _batches(table, stale, [table.c[c] for c in columns]):
        changed: list[dict[str, object]] = []
        for row_id, *texts in rows:
            renamed = list(texts)
            for old, new in pairs:
                renamed = [renamed_attribute(text, old, new) for text in renamed]
            if renamed != texts:
                changed.append({"row_id": row_id, **dict(zip(columns, renamed, strict=True))})
        _update(table, columns, changed)


def renamed_attribute(text: str, old: str, new: str) -> str:
    """`text` (RFC 4514) with the attribute type `old` (`type=`) written as `new` wherever
    an attribute begins: at the start, or after a `,` or `+` that is not escaped. A value
    that holds the same characters is left alone (an unescaped `=` may occur in a value)."""
    out: list[str] = []
    at_type, i = True, 0
    while i < len(text):
        if at_type and text.startswith(old, i):
            out.append(new)
            i += len(old)
            at_type = False
            continue
        char = text[i]
        if char == "\\":
            out.append(text[i : i + 2])
            i += 2
            continue
        out.append(char)
        at_type = char in ",+"
        i += 1
    return "".join(out)


def _batches(
    table: sa.TableClause, where: sa.ColumnElement[bool], columns: Sequence[sa.ColumnClause[object]]
) -> Iterator[list[tuple[Any, ...]]]:
    """The matching rows (id first) in id order, `BATCH` at a time (a keyset, not OFFSET)."""
    bind, last = op.get_bind(), None
    while True:
        query = sa.select(table.c.id, *columns).where(where).order_by(table.c.id).limit(BATCH)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = bind.execute(query).all()
        if not rows:
            return
        yield [tuple(row) for row in rows]
        last = rows[-1][0]


def _update(table: sa.TableClause, columns: list[str], changed: list[dict[str, object]]) -> None:
    if changed:
        values: dict[str, Any] = {c: sa.bindparam(c) for c in columns}
        statement = table.update().where(table.c.id == sa.bindparam("row_id")).values(values)
        op.get_bind().execute(statement, changed)
