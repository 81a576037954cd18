from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.orm import Session

from tessera.storage.models import CertificateRequestRow
from tessera.storage.repositories.rows import update_if

PENDING, SIGNED = "pending", "signed"


class CSRRepository:
    def __init__(self, session: Session, org_id: int) -> None:
        self._session = session
        self._org_id = org_id

    def _scoped(self) -> Select[CertificateRequestRow]:
        return select(CertificateRequestRow).where(CertificateRequestRow.org_id == self._org_id)

    def add(self, row: CertificateRequestRow) -> CertificateRequestRow:
        row.org_id = self._org_id
        self._session.add(row)
        self._session.flush()
        return row

    def get(self, csr_id: int) -> CertificateRequestRow | None:
        return self._session.scalar(self._scoped().where(CertificateRequestRow.id == csr_id))

    def same_request(
        self, common_name: str, csr_pem: str, status: str | None = None
    ) -> CertificateRequestRow | None:
        """The request stored with exactly this PEM (looked up by its indexed common name),
        in `status` when one is given."""
        query = self._scoped().where(
            CertificateRequestRow.common_name == common_name,
            CertificateRequestRow.csr_pem == csr_pem,
        )
        if status is not None:
            query = query.where(CertificateRequestRow.status == status)
        return self._session.scalar(query.order_by(CertificateRequestRow.id).limit(1))

    def page(
        self, status: str | None, page: int, per_page: int
    ) -> tuple[Sequence[CertificateRequestRow], int]:
        query = self._scoped()
        if status is not None:
            query = query.where(CertificateRequestRow.status == status)
        order = (CertificateRequestRow.id.desc(),)
        return self._paged(query, order, page, per_page)

    def history(self, page: int, per_page: int) -> tuple[Sequence[CertificateRequestRow], int]:
        """Signed requests, the most recently signed first."""
        query = self._scoped().where(CertificateRequestRow.status == SIGNED)
        order = (CertificateRequestRow.signed_at.desc(), CertificateRequestRow.id.desc())
        return self._paged(query, order, page, per_page)

    def _paged(
        self,
        query: Select[CertificateRequestRow],
        order: tuple[ColumnElement[Any], ...],
        page: int,
        per_page: int,
    ) -> tuple[Sequence[CertificateRequestRow], int]:
        counted = query.with_only_columns(CertificateRequestRow.id).subquery()
        total = self._session.scalar(select(func.count()).select_from(counted)) or 0
        rows = self._session.scalars(
            query.order_by(*order).offset((page - 1) * per_page).limit(per_page)
        ).all()
        return rows, total

    def claim_for_signing(self, row: CertificateRequestRow) -> bool:
        """Move a pending request to signed, atomically: of two requests signing the same CSR
        at once, the second waits for the first and then finds nothing left to claim."""
        result = self._session.execute(
            update(CertificateRequestRow)
            .where(
                CertificateRequestRow.id == row.id,
                CertificateRequestRow.org_id == self._org_id,
                CertificateRequestRow.status == PENDING,
            )
            .values(status=SIGNED)
            .execution_options(synchronize_session=False)
        )
        claimed = bool(getattr(result, "rowcount", 0))
        if claimed:
            row.status = SIGNED
        return claimed

    def attach_key(self, row: CertificateRequestRow, encrypted_key: str) -> bool:
        """Store the key only if the request is still pending and has none (a compare-and-
        set: a signing that claimed it meanwhile wins). False when it did not."""
        return update_if(
            self._session,
            row,
            [
                CertificateRequestRow.org_id == self._org_id,
                CertificateRequestRow.status == PENDING,
                CertificateRequestRow.encrypted_private_key.is_(None),
            ],
            encrypted_private_key=encrypted_key,
        )

    def reread(self, row: CertificateRequestRow) -> None:
        """The row as committed now (after this transaction's write to it, which holds it)."""
        self._session.refresh(row)

    def delete(self, row: CertificateRequestRow) -> None:
        self._session.execute(
            delete(CertificateRequestRow).where(
                CertificateRequestRow.id == row.id, CertificateRequestRow.org_id == self._org_id
            )
        )
