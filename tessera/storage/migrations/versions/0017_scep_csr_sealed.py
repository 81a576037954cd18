"""scep csr sealed

`scep_requests.csr_pem` becomes `encrypted_csr`: the CSR as received, sealed under the
key-encryption key like every other secret, since it carries the client's challengePassword
in clear (and with a static challenge, the CA's own password). The rows stored before this
revision are sealed when the server starts (`bootstrap.initialize`, which holds the key;
migrations do not), and from then on the KEK rotation rewraps the column with the rest.

A downgrade renames the column back, and refuses while any request holds a sealed CSR: the
older code would read the token as PEM and fail on every poll and approval of it, and a
migration cannot unseal it (it runs without the key).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE scep_requests RENAME COLUMN csr_pem TO encrypted_csr")


def downgrade() -> None:
    sealed = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM scep_requests WHERE encrypted_csr LIKE 'gAAAAA%'")
    )
    if sealed:
        raise RuntimeError(
            f"{sealed} SCEP requests hold a CSR sealed under the KEK, which the code before "
            "revision 0017 cannot read: delete those requests, or stay at 0017 or later"
        )
    op.execute("ALTER TABLE scep_requests RENAME COLUMN encrypted_csr TO csr_pem")
