"""certificate tally

Exact certificate counts without counting rows: `certificate_tally` holds one count per
(organization, CA, stored status, expiry day); row triggers on `certificates` append +1/-1
deltas to `certificate_tally_delta` (insert-only, so concurrent issuances never wait on a
shared counter row), and a background job folds the deltas into the tally. Readers add both.
See docs/inventory-performance.md.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def bucket() -> list[sa.Column[object]]:
    return [
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("ca_key", sa.Integer(), nullable=False),  # ca_id, 0 for none, -1 for all
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expiry_day", sa.Date(), nullable=False),
    ]


POSTGRESQL_TRIGGER = [
    """CREATE FUNCTION certificate_tally_track() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            INSERT INTO certificate_tally_delta (org_id, ca_key, status, expiry_day, n)
            VALUES (OLD.org_id, coalesce(OLD.ca_id, 0), OLD.status, OLD.not_after::date, -1);
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            INSERT INTO certificate_tally_delta (org_id, ca_key, status, expiry_day, n)
            VALUES (NEW.org_id, coalesce(NEW.ca_id, 0), NEW.status, NEW.not_after::date, 1);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER certificate_tally_insert_delete AFTER INSERT OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificate_tally_track()""",
    """CREATE TRIGGER certificate_tally_update AFTER UPDATE ON certificates FOR EACH ROW
    WHEN (OLD.org_id IS DISTINCT FROM NEW.org_id OR OLD.ca_id IS DISTINCT FROM NEW.ca_id
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.not_after IS DISTINCT FROM NEW.not_after)
    EXECUTE FUNCTION certificate_tally_track()""",
]
_SQLITE_ROW = "({row}.org_id, coalesce({row}.ca_id, 0), {row}.status, date({row}.not_after), {n})"
_SQLITE_DELTA = (
    "INSERT INTO certificate_tally_delta (org_id, ca_key, status, expiry_day, n) VALUES "
)
SQLITE_TRIGGER = [
    f"""CREATE TRIGGER certificate_tally_insert AFTER INSERT ON certificates BEGIN
        {_SQLITE_DELTA}{_SQLITE_ROW.format(row="NEW", n=1)}; END""",
    f"""CREATE TRIGGER certificate_tally_delete AFTER DELETE ON certificates BEGIN
        {_SQLITE_DELTA}{_SQLITE_ROW.format(row="OLD", n=-1)}; END""",
    f"""CREATE TRIGGER certificate_tally_update AFTER UPDATE OF org_id, ca_id, status, not_after
        ON certificates
        WHEN OLD.org_id IS NOT NEW.org_id OR OLD.ca_id IS NOT NEW.ca_id
          OR OLD.status IS NOT NEW.status OR OLD.not_after IS NOT NEW.not_after
        BEGIN
        {_SQLITE_DELTA}{_SQLITE_ROW.format(row="OLD", n=-1)};
        {_SQLITE_DELTA}{_SQLITE_ROW.format(row="NEW", n=1)}; END""",
]
BACKFILL = {
    "postgresql": """INSERT INTO certificate_tally (org_id, ca_key, status, expiry_day, n)
        SELECT org_id, coalesce(ca_id, 0), status, not_after::date, count(*) FROM certificates
        GROUP BY org_id, coalesce(ca_id, 0), status, not_after::date
        UNION ALL
        SELECT org_id, -1, status, not_after::date, count(*) FROM certificates
        GROUP BY org_id, status, not_after::date""",
    "sqlite": """INSERT INTO certificate_tally (org_id, ca_key, status, expiry_day, n)
        SELECT org_id, coalesce(ca_id, 0), status, date(not_after), count(*) FROM certificates
        GROUP BY org_id, coalesce(ca_id, 0), status, date(not_after)
        UNION ALL
        SELECT org_id, -1, status, date(not_after), count(*) FROM certificates
        GROUP BY org_id, status, date(not_after)""",
}


def upgrade() -> None:
    op.create_table(
        "certificate_tally",
        *bucket(),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "ca_key", "status", "expiry_day"),
    )
    op.create_table(
        "certificate_tally_delta",
        sa.Column("id", sa.Integer(), primary_key=True),
        *bucket(),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL_TRIGGER if dialect == "postgresql" else SQLITE_TRIGGER:
        op.execute(statement)
    op.execute(BACKFILL[dialect])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER certificate_tally_update ON certificates")
        op.execute("DROP TRIGGER certificate_tally_insert_delete ON certificates")
        op.execute("DROP FUNCTION certificate_tally_track()")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER certificate_tally_{name}")
    op.drop_table("certificate_tally_delta")
    op.drop_table("certificate_tally")
