"""scep: profiles, challenge passwords, enrollment requests

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from tessera.storage.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scep_profiles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "ca_id",
            sa.Integer(),
            sa.ForeignKey("certificate_authorities.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("ca_ident", sa.String(200), nullable=True),
        sa.Column(
            "next_ca_id",
            sa.Integer(),
            sa.ForeignKey("certificate_authorities.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "template_id",
            sa.Integer(),
            sa.ForeignKey("templates.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("auto_approve", sa.Boolean(), nullable=False),
        sa.Column("challenge_type", sa.String(16), nullable=False),
        sa.Column("challenge_validity", sa.Integer(), nullable=False),
        sa.Column("queue_without_challenge", sa.Boolean(), nullable=False),
        sa.Column("use_ra", sa.Boolean(), nullable=False),
        sa.Column(
            "ra_certificate_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "next_ra_certificate_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("org_id", "slug"),
    )
    op.create_index("ix_scep_profiles_org_id", "scep_profiles", ["org_id"])
    op.create_table(
        "scep_challenges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column(
            "ca_id",
            sa.Integer(),
            sa.ForeignKey("certificate_authorities.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("encrypted_value", sa.Text(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.String(150), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_scep_challenges_ca_kind", "scep_challenges", ["org_id", "ca_id", "kind"])
    op.create_table(
        "scep_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column(
            "profile_id",
            sa.Integer(),
            sa.ForeignKey("scep_profiles.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("message_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("common_name", sa.String(200), nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=False),
        sa.Column("challenge", sa.String(16), nullable=False),
        sa.Column(
            "certificate_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(150), nullable=True),
    )
    op.create_index("ix_scep_requests_org_status", "scep_requests", ["org_id", "status", "id"])
    op.create_index(
        "ix_scep_requests_transaction",
        "scep_requests",
        ["org_id", "profile_id", "transaction_id"],
    )


def downgrade() -> None:
    op.drop_table("scep_requests")
    op.drop_table("scep_challenges")
    op.drop_table("scep_profiles")
