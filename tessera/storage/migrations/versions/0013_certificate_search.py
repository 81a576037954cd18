"""certificate search table

Substring search reads a narrow copy of what it matches instead of the certificate rows
(which carry the PEM inline): `certificate_search(id, org_id, text)`, where `text` is the
lower-cased common name and SAN text joined by a newline, kept in step by triggers on
`certificates` (so every writer, ORM or Core, updates it). Its trigram index replaces the
ones of migration 0003:
- PostgreSQL: one pg_trgm GIN index on `text` instead of two on the certificate columns.
- SQLite: an FTS5 trigram table over `text` with `detail=none` (row ids only, no positions),
  queried with an AND of the term's rarest trigrams; `search_trigram_stats` holds the share
  of rows that contain each trigram, from a sample taken by a background job.
See docs/inventory-performance.md.

Revision ID: 0013
Revises: 0012
"""

import runpy
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _text(row: str, newline: str) -> str:
    return f"lower({row}.common_name) || {newline} || lower(coalesce({row}.san_text, ''))"


POSTGRESQL = [
    """CREATE FUNCTION certificate_search_track() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO certificate_search (id, org_id, text)
            VALUES (NEW.id, NEW.org_id, """
    + _text("NEW", "chr(10)")
    + """);
        ELSIF TG_OP = 'UPDATE' THEN
            UPDATE certificate_search SET id = NEW.id, org_id = NEW.org_id, text = """
    + _text("NEW", "chr(10)")
    + """ WHERE id = OLD.id;
        ELSE
            DELETE FROM certificate_search WHERE id = OLD.id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER certificate_search_insert_delete AFTER INSERT OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificate_search_track()""",
    """CREATE TRIGGER certificate_search_update AFTER UPDATE ON certificates FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.org_id IS DISTINCT FROM NEW.org_id
          OR OLD.common_name IS DISTINCT FROM NEW.common_name
          OR OLD.san_text IS DISTINCT FROM NEW.san_text)
    EXECUTE FUNCTION certificate_search_track()""",
    "INSERT INTO certificate_search (id, org_id, text) SELECT id, org_id, "
    + _text("certificates", "chr(10)")
    + " FROM certificates",
    "CREATE INDEX ix_certificate_search_trgm ON certificate_search USING gin (text gin_trgm_ops)",
    "DROP INDEX IF EXISTS ix_certificates_san_trgm",
    "DROP INDEX IF EXISTS ix_certificates_cn_trgm",
    "ANALYZE certificate_search",  # so that plans know its size before autovacuum comes by
]
POSTGRESQL_DOWN = [
    "DROP TRIGGER certificate_search_update ON certificates",
    "DROP TRIGGER certificate_search_insert_delete ON certificates",
    "DROP FUNCTION certificate_search_track()",
]

_FTS_ADD = "INSERT INTO certificate_search_fts (rowid, text) VALUES (NEW.id, NEW.text)"
_FTS_REMOVE = (
    "INSERT INTO certificate_search_fts (certificate_search_fts, rowid, text) "
    "VALUES ('delete', OLD.id, OLD.text)"
)
SQLITE = [
    # Migration 0003's index over the certificate rows goes; this one indexes the narrow copy.
    "DROP TRIGGER IF EXISTS certificates_fts_update",
    "DROP TRIGGER IF EXISTS certificates_fts_delete",
    "DROP TRIGGER IF EXISTS certificates_fts_insert",
    "DROP TABLE IF EXISTS certificates_fts",
    """CREATE VIRTUAL TABLE certificate_search_fts USING fts5(
        text, content='certificate_search', content_rowid='id', tokenize='trigram', detail='none'
    )""",
    "INSERT INTO certificate_search (id, org_id, text) SELECT id, org_id, "
    + _text("certificates", "char(10)")
    + " FROM certificates",
    "INSERT INTO certificate_search_fts (certificate_search_fts) VALUES ('rebuild')",
    f"""CREATE TRIGGER certificate_search_fts_insert AFTER INSERT ON certificate_search BEGIN
        {_FTS_ADD}; END""",
    f"""CREATE TRIGGER certificate_search_fts_delete AFTER DELETE ON certificate_search BEGIN
        {_FTS_REMOVE}; END""",
    f"""CREATE TRIGGER certificate_search_fts_update AFTER UPDATE OF id, text
        ON certificate_search BEGIN {_FTS_REMOVE}; {_FTS_ADD}; END""",
    f"""CREATE TRIGGER certificate_search_insert AFTER INSERT ON certificates BEGIN
        INSERT INTO certificate_search (id, org_id, text)
        VALUES (NEW.id, NEW.org_id, {_text("NEW", "char(10)")}); END""",
    """CREATE TRIGGER certificate_search_delete AFTER DELETE ON certificates BEGIN
        DELETE FROM certificate_search WHERE id = OLD.id; END""",
    f"""CREATE TRIGGER certificate_search_update
        AFTER UPDATE OF id, org_id, common_name, san_text ON certificates BEGIN
        UPDATE certificate_search SET id = NEW.id, org_id = NEW.org_id,
            text = {_text("NEW", "char(10)")}
        WHERE id = OLD.id; END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER certificate_search_update",
    "DROP TRIGGER certificate_search_delete",
    "DROP TRIGGER certificate_search_insert",
    "DROP TABLE certificate_search_fts",
]


def upgrade() -> None:
    op.create_table(
        "certificate_search",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_table(
        "search_trigram_stats",
        sa.Column("trigram", sa.String(16), primary_key=True),
        sa.Column("share", sa.Float(), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL if dialect == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL_DOWN if dialect == "postgresql" else SQLITE_DOWN:
        op.execute(statement)
    op.drop_table("search_trigram_stats")
    op.drop_table("certificate_search")
    # migration 0003's indexes over the certificate rows, made as it made them
    inventory = runpy.run_path(str(Path(__file__).with_name("0003_inventory_indexes.py")))
    for statement in inventory["POSTGRESQL_SEARCH" if dialect == "postgresql" else "SQLITE_SEARCH"]:
        op.execute(statement)
