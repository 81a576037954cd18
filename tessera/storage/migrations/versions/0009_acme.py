"""acme: accounts, orders, authorizations, challenges, nonces, EAB keys, settings

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from tessera.storage.models import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _org(primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(
        "org_id",
        sa.Integer(),
        sa.ForeignKey("organizations.id"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "acme_settings",
        _org(primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("issuing_ca_id", sa.Integer(), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("validity_days", sa.Integer(), nullable=False),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("require_eab", sa.Boolean(), nullable=False),
        sa.Column("caa_check_ca_ids", sa.JSON(), nullable=False),
        sa.Column("caa_identities", sa.JSON(), nullable=False),
        sa.Column("terms_of_service", sa.String(500), nullable=True),
        sa.Column("website", sa.String(500), nullable=True),
        sa.Column("profiles", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "acme_nonces",
        sa.Column("value", sa.String(64), primary_key=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _org(),
        sa.Column("thumbprint", sa.String(64), nullable=False, unique=True),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("contact", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("eab_kid", sa.String(128), nullable=True),
        sa.Column("terms_agreed", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_acme_accounts_org_id", "acme_accounts", ["org_id"])
    op.create_table(
        "acme_eab_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        _org(),
        sa.Column("kid", sa.String(128), nullable=False, unique=True),
        sa.Column("encrypted_hmac_key", sa.Text(), nullable=False),
        sa.Column("comment", sa.String(300), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(150), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_acme_eab_keys_org_id", "acme_eab_keys", ["org_id"])
    op.create_table(
        "acme_orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        _org(),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("acme_accounts.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("identifiers", sa.JSON(), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("not_after", UTCDateTime(), nullable=True),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("replaces", sa.String(300), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("csr_pem", sa.Text(), nullable=True),
        sa.Column("awaiting_approval", sa.Boolean(), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_acme_orders_account_id", "acme_orders", ["account_id"])
    op.create_index("ix_acme_orders_certificate_id", "acme_orders", ["certificate_id"])
    op.create_index("ix_acme_orders_org_status", "acme_orders", ["org_id", "status", "expires_at"])
    op.create_table(
        "acme_authorizations",
        sa.Column("id", sa.Integer(), primary_key=True),
        _org(),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("acme_orders.id"), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("identifier_type", sa.String(8), nullable=False),
        sa.Column("identifier_value", sa.String(255), nullable=False),
        sa.Column("wildcard", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_acme_authorizations_order_id", "acme_authorizations", ["order_id"])
    op.create_index("ix_acme_authorizations_account_id", "acme_authorizations", ["account_id"])
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "authz_id", sa.Integer(), sa.ForeignKey("acme_authorizations.id"), nullable=False
        ),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("validated_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
    )
    op.create_index("ix_acme_challenges_authz_id", "acme_challenges", ["authz_id"])
    op.create_index("ix_acme_challenges_work", "acme_challenges", ["status", "next_attempt_at"])
    op.create_table(
        "acme_renewal_marks",
        sa.Column("certificate_id", sa.Integer(), primary_key=True),
        _org(),
        sa.Column("marked_at", UTCDateTime(), nullable=False),
        sa.Column("marked_by", sa.String(150), nullable=True),
    )


def downgrade() -> None:
    for table in (
        "acme_renewal_marks",
        "acme_challenges",
        "acme_authorizations",
        "acme_orders",
        "acme_eab_keys",
        "acme_accounts",
        "acme_nonces",
        "acme_settings",
    ):
        op.drop_table(table)
