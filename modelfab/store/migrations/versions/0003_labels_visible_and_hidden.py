"""labels: a visible and a hidden value of one field may coexist

An item imported with ``--unlabeled`` keeps its ground truth as a hidden label; an annotator's label
for the same field is a visible one. The unique key becomes (version, item, field, hidden).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = "id, version_id, item_id, field, value, hidden, source"


def _labels_table(name: str, unique: tuple[str, ...]) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=100), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["dataset_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(*unique, name=f"uq_{name}_key"),
    )


def _rebuild(unique: tuple[str, ...]) -> None:
    """Copy labels into a table with the new unique key, then swap it in (portable: SQLite and PostgreSQL)."""
    _labels_table("labels_new", unique)
    op.execute(f"INSERT INTO labels_new ({_COLUMNS}) SELECT {_COLUMNS} FROM labels")
    op.drop_index("ix_labels_version", table_name="labels")
    op.drop_table("labels")
    op.rename_table("labels_new", "labels")
    op.create_index("ix_labels_version", "labels", ["version_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":  # keep the id sequence ahead of the copied ids
        op.execute("SELECT setval(pg_get_serial_sequence('labels', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM labels")


def upgrade() -> None:
    _rebuild(("version_id", "item_id", "field", "hidden"))


def downgrade() -> None:
    op.execute("DELETE FROM labels WHERE hidden AND EXISTS (SELECT 1 FROM labels AS v WHERE NOT v.hidden "
                "AND v.version_id = labels.version_id AND v.item_id = labels.item_id AND v.field = labels.field)")
    _rebuild(("version_id", "item_id", "field"))
