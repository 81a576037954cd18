"""acme replaces unique

At most one order that is not invalid replaces a given certificate (RFC 9773 section 5, the
`replaces` of new-order): a partial unique index on `acme_orders (org_id, replaces)`. The
service checks first and answers `alreadyReplaced`; the index parts two new-orders that ran
that check at the same time, which both used to be created.

Should two such orders exist already (that race, before this revision), the newer ones keep
their certificate and state but no longer say what they replace, so that the index can be
built; renewal information is unaffected, as it reads certificates, not orders.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

REPLACING = "replaces IS NOT NULL AND status <> 'invalid'"


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE acme_orders SET replaces = NULL WHERE " + REPLACING + " AND id NOT IN ("
            " SELECT min(id) FROM acme_orders WHERE " + REPLACING + " GROUP BY org_id, replaces)"
        )
    )
    op.create_index(
        "uq_acme_orders_replaces",
        "acme_orders",
        ["org_id", "replaces"],
        unique=True,
        sqlite_where=sa.text(REPLACING),
        postgresql_where=sa.text(REPLACING),
    )


def downgrade() -> None:
    op.drop_index("uq_acme_orders_replaces", table_name="acme_orders")
