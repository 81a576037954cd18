"""The OCSP responder of one server process: which CAs it answers for, the pre-signed
responses it holds, and the background work that keeps them fresh and true.

Hot path (`answer_cached`, on the event loop): parse, one dict lookup, done: no database, no
signature. Everything else (`answer`, in a worker thread) reads statuses from the database,
signs, and stores nonce-less single-certificate answers as pre-signed responses.

Coherence across processes: every revocation writes a `status_changes` row in its own
transaction; `follow_changes` polls that log (every 200 ms, an indexed range read) and
re-signs the affected pre-signed responses, so a revocation shows within a second in every
process. `refresh` re-signs responses before nextUpdate and forgets those nobody asks for.

An issuer is an issuer group (domains/issuer_groups.py): the CA rows of an organization with
one subject and one key, which a CertID cannot tell apart. Statuses are read under all its
rows, any row holding the key may sign, and the caches are keyed by the group's oldest row
id (`ServedIssuer.key`), whichever row a certificate or a status change names.
"""

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy.orm import Session, sessionmaker

from tessera.core.formats import load_certificate
from tessera.core.inspect import serial_hex
from tessera.domains.issuer_groups import groups, signing_order
from tessera.domains.ocsp import wire
from tessera.domains.ocsp.signers import LoadedSigner, SignerFactory, rollover_due
from tessera.domains.ocsp.wire import CertID, Request, Status
from tessera.storage.models import CertificateAuthority
from tessera.storage.repositories.ocsp import OCSPRepository, StoredStatus
from tessera.storage.repositories.status_changes import StatusChangeRepository

FOLLOW_SECONDS = 0.2
COUNTER_FLUSH_SECONDS = 5.0
INDEX_RELOAD_MIN_SECONDS = 0.05  # unknown issuers reload the CA list at most this often
NOT_OURS_SECONDS = 1.0  # and each unknown issuer at most once in this time
# Requests for an unknown issuer that may wait for a read at once (one reading, one for the
# next): the slow path's threads are the event loop's few default ones (asyncio.to_thread),
# shared with the follower jobs, and a flood of requests naming made-up CAs must not hold
# them all asleep. A request past these is answered from the index as it is.
RELOAD_WAITERS = 2
UNKNOWN_CACHE_SECONDS = 60.0  # "unknown" may become "good" when a serial is issued later
MEMO_MAX_BYTES = 256  # typical requests are 70-120 bytes; bigger ones are parsed each time
GAP_SECONDS = 10.0  # how long a missing status_changes id may still commit (PostgreSQL)

# A CA revoked for one of these has a compromised key: whatever it issued, or what someone
# holding its key issued in its name, is revoked from then on (RFC 6960 2.7).
KEY_COMPROMISE_REASONS = frozenset({"keyCompromise", "cACompromise"})
CA_COMPROMISE = x509.ReasonFlags.ca_compromise
HOLD = x509.ReasonFlags.certificate_hold

MALFORMED = wire.unsuccessful("malformed_request")
UNAUTHORIZED = wire.unsuccessful("unauthorized")
INTERNAL_ERROR = wire.unsuccessful("internal_error")
TRY_LATER = wire.unsuccessful("try_later")


@dataclass(frozen=True)
class ServedIssuer:
    """One issuer as relying parties see it: the rows of its issuer group, named in the
    caches by the oldest one's id."""

    key: int
    org_id: int
    ca_ids: tuple[int, ...]
    signing_ids: tuple[int, ...]  # the rows holding the key, the preferred signer first
    # When a row of the group was revoked for a compromise of its (the group's one) key:
    # every certificate of the issuer is then answered revoked (RFC 6960 2.7).
    compromised_at: datetime | None = None


@dataclass(slots=True)
class Entry:
    """A pre-signed response for one CertID, and what GET caching headers need."""

    der: bytes
    etag: str
    status: Status
    issuer: int  # ServedIssuer.key
    serial: str
    this_update: datetime
    next_update: datetime
    expires_ts: float  # serve until (epoch seconds); refresh well before
    refresh_ts: float
    hit_ts: float
    answer: "Answer" = field(init=False)  # prebuilt: a hit allocates nothing

    def __post_init__(self) -> None:
        self.answer = Answer(self.der, self)


@dataclass(frozen=True, slots=True)
class Answer:
    der: bytes
    entry: Entry | None = None  # set for pre-signed responses (cacheable over GET)


@dataclass
class Responder:
    sessions: sessionmaker[Session]
    signers: SignerFactory
    clock: Callable[[], datetime]
    validity: timedelta
    max_entries: int
    counts: Counter[str] = field(default_factory=Counter)
    _cache: dict[CertID, Entry] = field(default_factory=dict)
    _by_serial: dict[tuple[int, str], set[CertID]] = field(default_factory=dict)
    _seen: dict[bytes, CertID] = field(default_factory=dict)  # request DER -> its CertID
    _issuers: dict[tuple[str, bytes, bytes], ServedIssuer] = field(default_factory=dict)
    _served: dict[int, ServedIssuer] = field(default_factory=dict)  # by ServedIssuer.key
    _issuer_keys: dict[int, int] = field(default_factory=dict)  # every CA id -> its group's key
    _ca_serials: frozenset[str] = frozenset()  # of every CA: a change to one may regroup
    _certificates: dict[int, x509.Certificate] = field(default_factory=dict)  # parsed once
    _signers: dict[int, LoadedSigner] = field(default_factory=dict)  # by ServedIssuer.key
    _index_loaded: float = 0.0
    _not_ours: dict[tuple[str, bytes, bytes], float] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _reload_waiters: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(RELOAD_WAITERS)
    )
    _last_change: int | None = None
    _gaps: dict[int, float] = field(default_factory=dict)
    _change_seq: int = 0
    _changed: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)

    # --- the hot path ------------------------------------------------------------------

    def answer_cached(self, der: bytes) -> Answer | Request:
        """A pre-signed answer, a malformed-request answer, or the parsed request for
        `answer` to handle off the event loop."""
        self.counts["requests"] += 1
        cert_id = self._seen.get(der)
        if cert_id is not None:
            # The same bytes asked before (a client's nonce-less request never varies): no
            # parsing at all. The response itself still comes from the coherent cache.
            entry = self._cache.get(cert_id)
            if entry is not None and time.time() < entry.expires_ts:
                return self._hit(entry)
        try:
            request = wire.parse_request(der)
        except wire.MalformedRequest:
            self.counts["malformed"] += 1
            return Answer(MALFORMED)
        if request.nonce is None and len(request.cert_ids) == 1:
            if len(der) <= MEMO_MAX_BYTES:
                if len(self._seen) >= self.max_entries:
                    self._seen.clear()
                self._seen[der] = request.cert_ids[0]
            entry = self._cache.get(request.cert_ids[0])
            if entry is not None and time.time() < entry.expires_ts:
                return self._hit(entry)
        else:
            self.counts["nonce"] += request.nonce is not None
        return request

    def _hit(self, entry: Entry) -> Answer:
        entry.hit_ts = time.time()
        counts = self.counts
        counts["cache_hits"] += 1
        counts[entry.status.kind] += 1
        return entry.answer

    # --- the slow path (worker thread) ---------------------------------------------------

    def answer(self, request: Request) -> Answer:
        """Errors propagate: the protocol adapter turns any of them into an OCSP
        internalError (tessera/protocols/ocsp.py), for this path and the fast one alike."""
        asked_at = time.monotonic()
        issuers = {self._issuer_of(cert_id, asked_at) for cert_id in request.cert_ids}
        if None in issuers or len(issuers) != 1:
            # Not ours, an unsupported hash, or several CAs (one response has one signer).
            self.counts["unauthorized"] += 1
            return Answer(UNAUTHORIZED)
        issuer = issuers.pop()
        assert issuer is not None
        loaded = self._signer(issuer)
        if loaded is None:
            self.counts["unauthorized"] += 1
            return Answer(UNAUTHORIZED)
        seq = self._change_seq
        statuses = self._read_statuses(issuer, [serial_hex(c.serial) for c in request.cert_ids])
        answers = [(c, statuses.get(serial_hex(c.serial), wire.UNKNOWN)) for c in request.cert_ids]
        for _, status in answers:
            self.counts[status.kind] += 1
        if len(answers) == 1:
            # Held even when this request has a nonce: the next nonce request for the
            # certificate is then signed from the held status, without a database read.
            entry = self._sign_entry(issuer.key, loaded, *answers[0])
            self._store(answers[0][0], entry, seq, issuer)
            if request.nonce is None:
                return Answer(entry.der, entry)
        kinds = {status.kind for _, status in answers}
        this_update, next_update = self._window(loaded, "unknown" in kinds)
        self.counts["signed"] += 1
        der = wire.build_response(loaded.signer, answers, this_update, next_update, request.nonce)
        return Answer(der)

    def sign_with_nonce(self, request: Request) -> Answer | None:
        """A nonce request for a certificate whose status is already held: signed right away,
        without a database read (its pre-signed response is kept true by follow_changes)."""
        if len(request.cert_ids) != 1:
            return None
        entry = self._cache.get(request.cert_ids[0])
        loaded = self._signers.get(entry.issuer) if entry else None
        if entry is None or loaded is None or entry.expires_ts <= time.time():
            return None
        this_update, next_update = self._window(loaded, entry.status.kind == "unknown")
        self.counts["signed"] += 1
        self.counts[entry.status.kind] += 1
        answers = [(request.cert_ids[0], entry.status)]
        return Answer(
            wire.build_response(loaded.signer, answers, this_update, next_update, request.nonce)
        )

    def _window(self, loaded: LoadedSigner, unknown: bool = False) -> tuple[datetime, datetime]:
        """thisUpdate and nextUpdate. An answer with an "unknown" status is good for a minute
        only, in its nextUpdate and so in the cache headers that follow it (RFC 5019 6.2):
        a serial unknown now may be issued, and an hour-long "unknown" makes hard-failing
        clients refuse the certificate all that time."""
        now = self.clock().replace(microsecond=0)
        validity = timedelta(seconds=UNKNOWN_CACHE_SECONDS) if unknown else self.validity
        return now, min(now + validity, loaded.not_after)

    def _sign_entry(
        self, issuer: int, loaded: LoadedSigner, cert_id: CertID, status: Status
    ) -> Entry:
        this_update, next_update = self._window(loaded, status.kind == "unknown")
        der = wire.build_response(loaded.signer, [(cert_id, status)], this_update, next_update)
        self.counts["signed"] += 1
        lifetime = (next_update - this_update).total_seconds()
        now = time.time()
        return Entry(
            der=der,
            etag='"' + hashlib.sha256(der).hexdigest()[:32] + '"',
            status=status,
            issuer=issuer,
            serial=serial_hex(cert_id.serial),
            this_update=this_update,
            next_update=next_update,
            expires_ts=now + lifetime - 1,
            # Re-signed when half its life is gone: clients caching it until nextUpdate
            # always find a fresher one here long before.
            refresh_ts=now + lifetime / 2,
            hit_ts=now,
        )

    def _store(self, cert_id: CertID, entry: Entry, seq: int, read_for: ServedIssuer) -> None:
        with self._lock:
            changed = self._changed.get((entry.issuer, entry.serial))
            if changed is not None and changed[0] > seq:
                return  # the status changed while we read it: do not keep what we read
            now_served = self._served.get(entry.issuer)
            if now_served is not None and now_served.compromised_at != read_for.compromised_at:
                return  # the issuer's key was found compromised meanwhile: likewise
            if cert_id not in self._cache and len(self._cache) >= self.max_entries:
                self._evict()
            self._cache[cert_id] = entry
            self._by_serial.setdefault((entry.issuer, entry.serial), set()).add(cert_id)

    def _evict(self) -> None:
        """Drop the oldest tenth (dicts keep insertion order): cheap, and a dropped response
        is only a signature away."""
        for cert_id in list(self._cache)[: max(1, self.max_entries // 10)]:
            self._forget(cert_id)

    def _forget(self, cert_id: CertID) -> None:
        entry = self._cache.pop(cert_id, None)
        if entry is None:
            return
        key = (entry.issuer, entry.serial)
        ids = self._by_serial.get(key)
        if ids is not None:
            ids.discard(cert_id)
            if not ids:
                del self._by_serial[key]

    def _issuer_of(self, cert_id: CertID, asked_at: float) -> ServedIssuer | None:
        if cert_id.hash_oid not in wire.HASHES:
            return None
        key = (cert_id.hash_oid, cert_id.name_hash, cert_id.key_hash)
        found = self._issuers.get(key)
        if found is not None:
            return found
        # Perhaps a CA made a moment ago: look again, unless this issuer was just looked for
        # (a flood of requests for a foreign CA must not become a flood of CA reloads).
        if time.monotonic() - self._not_ours.get(key, -NOT_OURS_SECONDS) < NOT_OURS_SECONDS:
            return None
        if not self._index_read_since(asked_at):
            return None  # too many waiting: not ours for now, but not remembered as such
        found = self._issuers.get(key)
        if found is None:
            if len(self._not_ours) > 10_000:
                self._not_ours.clear()
            self._not_ours[key] = time.monotonic()
        return found

    def _index_read_since(self, asked_at: float) -> bool:
        """The CA index read after `asked_at`, so that it holds every CA made before the
        request came. Reads begin at most every INDEX_RELOAD_MIN_SECONDS, one at a time:
        a request that finds the last read too recent waits out the rest, rather than being
        told a CA made a moment before it is not ours (and, for a second, every request
        after it). False, without a read, when RELOAD_WAITERS requests already wait."""
        if not self._reload_waiters.acquire(blocking=False):
            return False
        try:
            with self._reload_lock:
                if self._index_loaded >= asked_at:
                    return True
                wait = self._index_loaded + INDEX_RELOAD_MIN_SECONDS - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._read_issuers()
            return True
        finally:
            self._reload_waiters.release()

    def _signer(self, issuer: ServedIssuer) -> LoadedSigner | None:
        """The signer of the preferred row that can sign. Any row's will do: a delegated
        signer is issued under the group's one name and key, so relying parties accept it
        for the certificates of every row."""
        loaded = self._signers.get(issuer.key)
        if loaded is not None and loaded.rollover_at > self.clock():
            return loaded
        with self._lock:
            for ca_id in issuer.signing_ids:
                loaded = self.signers.load(ca_id, self.clock())
                if loaded is not None:
                    self._signers[issuer.key] = loaded
                    return loaded
            self._signers.pop(issuer.key, None)
            return None

    def _read_statuses(self, issuer: ServedIssuer, serials: Iterable[str]) -> dict[str, Status]:
        """The status of each serial (absent: unknown); every serial is revoked once the
        issuer's key is compromised, keeping an earlier revocation's own date and reason."""
        wanted = set(serials)
        with self.sessions() as session:
            stored = OCSPRepository(session).statuses(issuer.org_id, issuer.ca_ids, wanted)
        statuses = {serial: _status(row) for serial, row in stored.items()}
        compromised_at = issuer.compromised_at
        if compromised_at is None:
            return statuses
        since = Status("revoked", compromised_at.replace(microsecond=0), CA_COMPROMISE)
        for serial in wanted:
            if not _revoked_for_good_before(statuses.get(serial), compromised_at):
                statuses[serial] = since
        return statuses

    # --- background work ------------------------------------------------------------------

    def reload_issuers(self) -> None:
        """The issuers answered for (groups with a row holding the key), keyed by their
        CertID hashes under every supported hash. Held answers and the signer of a group
        whose rows changed are dropped: what they were read or chosen from is gone. One read
        at a time: one that began earlier and ended later would put back what the other
        found changed (a CA made, or revoked for a key compromise)."""
        with self._reload_lock:
            self._read_issuers()

    def _read_issuers(self) -> None:
        """`reload_issuers`, under `_reload_lock`."""
        now, started = self.clock(), time.monotonic()
        with self.sessions() as session:
            rows = OCSPRepository(session).all_cas()
            grouped = [
                (group, signing_order(group, now), group[0].certificate_pem, _compromised_at(group))
                for group in groups(rows)
            ]
            ca_serials = frozenset(row.serial_number for row in rows)
        issuers: dict[tuple[str, bytes, bytes], ServedIssuer] = {}
        served: dict[int, ServedIssuer] = {}
        keys: dict[int, int] = {}
        certificates: dict[int, x509.Certificate] = {}
        for group, signing, pem, compromised_at in grouped:
            first = group[0]
            keys.update((ca.id, first.id) for ca in group)
            if not signing:
                continue  # no key here: nothing to sign with
            ca_ids, signing_ids = tuple(ca.id for ca in group), tuple(ca.id for ca in signing)
            issuer = ServedIssuer(first.id, first.org_id, ca_ids, signing_ids, compromised_at)
            served[issuer.key] = issuer
            known = self._certificates.get(first.id)
            certificates[first.id] = known or load_certificate(pem.encode())
            for oid, (name_hash, key_hash) in wire.issuer_hashes(certificates[first.id]).items():
                # One name and key held by two organizations: the older keeps the CertID.
                issuers.setdefault((oid, name_hash, key_hash), issuer)
        self._drop_changed(served)
        self._issuers, self._served, self._issuer_keys = issuers, served, keys
        self._certificates, self._ca_serials = certificates, ca_serials
        # When the read began: a CA committed while it ran may be missing from it.
        self._index_loaded = max(self._index_loaded, started)

    def _drop_changed(self, served: dict[int, ServedIssuer]) -> None:
        changed = {
            key
            for key, old in self._served.items()
            if key not in served or served[key].ca_ids != old.ca_ids
        }
        # Held answers read before the issuer's key was found compromised are not true now.
        compromised = {
            key
            for key, old in self._served.items()
            if key in served and served[key].compromised_at != old.compromised_at
        }
        gone = [c for c, e in list(self._cache.items()) if e.issuer in changed | compromised]
        with self._lock:
            for cert_id in gone:
                self._forget(cert_id)
            for key in changed & set(self._signers):
                del self._signers[key]

    def refresh(self) -> None:
        """Re-sign responses past half their life, forget those nobody asked for in a whole
        validity period, and roll delegated signers over before they expire."""
        self.reload_issuers()
        now = time.time()
        idle = self.validity.total_seconds()
        due: dict[int, list[tuple[CertID, Entry]]] = {}
        for cert_id, entry in list(self._cache.items()):
            if now - entry.hit_ts > idle:
                with self._lock:
                    self._forget(cert_id)
            elif now >= entry.refresh_ts:
                due.setdefault(entry.issuer, []).append((cert_id, entry))
        for key, loaded in list(self._signers.items()):
            if rollover_due(loaded, self.clock(), timedelta(0)):
                self._signers.pop(key, None)
                if (issuer := self._served.get(key)) is not None:
                    self._signer(issuer)
        for key, entries in due.items():
            self._resign(key, entries)

    def _resign(self, key: int, entries: list[tuple[CertID, Entry]]) -> None:
        issuer = self._served.get(key)
        loaded = self._signer(issuer) if issuer else None
        if issuer is None or loaded is None:
            with self._lock:
                for cert_id, _ in entries:
                    self._forget(cert_id)
            return
        seq = self._change_seq
        statuses = self._read_statuses(issuer, {entry.serial for _, entry in entries})
        for cert_id, entry in entries:
            status = statuses.get(entry.serial, wire.UNKNOWN)
            fresh = self._sign_entry(key, loaded, cert_id, status)
            fresh.hit_ts = entry.hit_ts
            self._store(cert_id, fresh, seq, issuer)

    def start_following(self) -> None:
        with self.sessions() as session:
            self._last_change = StatusChangeRepository(session).latest_id()

    def follow_changes(self) -> None:
        """Apply new status_changes rows: re-sign the pre-signed responses they touch.

        Ids come from a sequence, but on PostgreSQL a transaction may commit after one that
        took a later id; such missing ids are re-read for GAP_SECONDS before giving up."""
        if self._last_change is None:
            self.start_following()
            return
        last = self._last_change
        now = time.monotonic()
        self._gaps = {i: t for i, t in self._gaps.items() if now - t < GAP_SECONDS}
        floor = min([last, *(i - 1 for i in self._gaps)])
        with self.sessions() as session:
            rows = StatusChangeRepository(session).after(floor)
            changes = [(r.id, r.ca_id, r.serial_number) for r in rows]
        touched: dict[int, set[str]] = {}
        for change_id, ca_id, serial in changes:
            if change_id <= last and change_id not in self._gaps:
                continue
            self._gaps.pop(change_id, None)
            for missing in range(last + 1, change_id):
                self._gaps.setdefault(missing, now)
            last = max(last, change_id)
            if ca_id is not None:
                touched.setdefault(ca_id, set()).add(serial)
        self._last_change = last
        if any(serial in self._ca_serials for serials in touched.values() for serial in serials):
            # A CA revoked (by its issuer): if for a key compromise, what it issued is
            # revoked from now on, in every answer held for it.
            self.reload_issuers()
        if touched:
            self._apply_changes(self._by_issuer(touched))

    def _by_issuer(self, touched: dict[int, set[str]]) -> dict[int, set[str]]:
        """The changed serials under the key of their CA's group, whichever row the change
        names: answers are held under the group."""
        if any(ca_id not in self._issuer_keys for ca_id in touched):
            self.reload_issuers()  # a CA made since: perhaps a new row of a held group
        by_issuer: dict[int, set[str]] = {}
        for ca_id, serials in touched.items():
            by_issuer.setdefault(self._issuer_keys.get(ca_id, ca_id), set()).update(serials)
        return by_issuer

    def _apply_changes(self, touched: dict[int, set[str]]) -> None:
        now = time.monotonic()
        with self._lock:
            self._change_seq += 1
            for key, serials in touched.items():
                for serial in serials:
                    self._changed[(key, serial)] = (self._change_seq, now)
            self._changed = {k: v for k, v in self._changed.items() if now - v[1] < GAP_SECONDS}
        for key, serials in touched.items():
            loaded = self._signers.get(key)
            if (
                loaded is not None
                and serial_hex(loaded.signer.certificate.serial_number) in serials
            ):
                # Its own signer was revoked (by hand): a new one signs from now on.
                with self._lock:
                    self._signers.pop(key, None)
                serials = serials | {
                    e.serial for e in list(self._cache.values()) if e.issuer == key
                }
            held = [
                (cert_id, self._cache[cert_id])
                for serial in serials
                for cert_id in list(self._by_serial.get((key, serial), ()))
                if cert_id in self._cache
            ]
            if held:
                self._resign(key, held)

    def flush_counts(self) -> None:
        counts, self.counts = self.counts, Counter()
        if not counts:
            return
        try:
            with self.sessions() as session, session.begin():
                OCSPRepository(session).add_counts(counts)
        except Exception:
            self.counts.update(counts)  # try again next time
            raise

    # --- management ---------------------------------------------------------------------

    def cached_responses(self) -> int:
        return len(self._cache)

    def loaded_signer(self, ca_id: int) -> LoadedSigner | None:
        return self._signers.get(self._issuer_keys.get(ca_id, ca_id))


def _compromised_at(group: Sequence[CertificateAuthority]) -> datetime | None:
    """When the group's key was first declared compromised (a row revoked for it), if ever."""
    moments = [
        row.revoked_at
        for row in group
        if row.revoked_at is not None and row.revocation_reason in KEY_COMPROMISE_REASONS
    ]
    return min(moments, default=None)


def _revoked_for_good_before(status: Status | None, moment: datetime) -> bool:
    """Revoked (not merely held) no later than `moment`: that revocation stands as it was."""
    if status is None or status.kind != "revoked" or status.revoked_at is None:
        return False
    return status.reason != HOLD and status.revoked_at <= moment


def _status(row: StoredStatus) -> Status:
    if row.status == "revoked":
        revoked_at = row.revoked_at.replace(microsecond=0) if row.revoked_at else None
        return Status("revoked", revoked_at, wire.reason_flag(row.reason))
    return wire.GOOD
