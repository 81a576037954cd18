"""SCEP requests' CSRs at rest: each carries its client's challengePassword in clear, so it
is stored sealed under the key-encryption key (`scep_requests.encrypted_csr`, migration 0017).
Rows written before that migration still hold the PEM itself; the server seals them when it
starts, since the migrations run without the key."""

from sqlalchemy.orm import Session

from tessera.core.keystore import KeyEncryptor
from tessera.storage.repositories.security import FERNET_PREFIX, KeyColumn, SecurityRepository

STORED_CSRS = KeyColumn("scep_requests", "encrypted_csr", True)
BATCH = 500


def seal_stored_csrs(session: Session, keys: KeyEncryptor) -> int:
    """Seal every stored CSR still in the clear, in every organization; how many were."""
    repository, after, sealed = SecurityRepository(session), 0, 0
    while batch := repository.key_batch(STORED_CSRS, after, BATCH):
        for row_id, value in batch:
            if not value.startswith(FERNET_PREFIX):
                sealed += repository.swap_key(STORED_CSRS, row_id, value, keys.seal(value.encode()))
        after = batch[-1][0]
    return sealed
