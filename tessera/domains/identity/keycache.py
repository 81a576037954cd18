"""API keys this process has already checked, so a busy key costs one tiny query (the
credential generation) instead of loading the key, its owner and the owner's groups.

An entry is trusted only while the generation it was loaded under is still current: any
change to users, keys, groups or memberships moves the generation (database triggers,
migration 0012), so revocation and permission changes apply on the next request in every
process. Expiry is checked on every use. Unknown or refused keys are never cached."""

import threading
from dataclasses import dataclass
from datetime import datetime

MAX_ENTRIES = 4096


@dataclass
class KnownKey:
    generation: int
    key_id: int
    expires_at: datetime | None
    last_used_at: datetime | None
    user_id: int
    username: str
    org_id: int
    role: str
    permissions: frozenset[str]


class ApiKeyCache:
    def __init__(self) -> None:
        self._entries: dict[str, KnownKey] = {}
        self._lock = threading.Lock()

    def get(self, digest: str, generation: int) -> KnownKey | None:
        known = self._entries.get(digest)
        return known if known is not None and known.generation == generation else None

    def put(self, digest: str, known: KnownKey) -> None:
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()  # bounded; the next requests reload what they use
            self._entries[digest] = known
