"""The audit log's hash chain: HMAC-SHA256 over each row and its predecessor's MAC.

Pure logic, no database: the storage layer hands rows in, this module computes MACs and finds
what was modified, deleted or inserted. The key lives outside the database (DATA_DIR/audit.key),
so whoever can write to the database cannot compute a valid MAC.

Each row stores `seq` (its position in its organization's chain), `prev_id` and `prev_mac` (the
id and MAC of the row before it) and `mac` = HMAC(key, canonical(row fields, seq, prev_id,
prev_mac)). A row thus verifies on its own, and the links between neighbours show deletions:
- modified: the row's MAC does not match its content;
- inserted: a row whose MAC is wrong where a genuine row already holds its position, a row
  outside the chain's range, or one with no chain fields at all;
- deleted: a gap in the positions (the next row still names the last deleted row's id).
A retention cleanup leaves a signed checkpoint: the position, id and MAC the chain now starts
after, so what remains verifies from there.
"""

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_MAC = ""
_DOMAIN_ROW = "tessera-audit-row/1"
_DOMAIN_CHECKPOINT = "tessera-audit-checkpoint/1"
_DOMAIN_KEY_ID = b"tessera-audit-key-id/1"

# Every stored column of an audit row that the MAC covers, in a fixed order.
FIELDS = (
    "id",
    "org_id",
    "seq",
    "prev_id",
    "prev_mac",
    "timestamp",
    "user_id",
    "username",
    "actor_type",
    "action",
    "resource_type",
    "resource_id",
    "details",
    "ip_address",
    "user_agent",
    "success",
    "request_id",
    "status_code",
)


def key_id(key: bytes) -> str:
    """A short public name of the key, stored with the chain so a wrong key is told apart
    from tampering (it reveals nothing about the key)."""
    return hmac.new(key, _DOMAIN_KEY_ID, hashlib.sha256).hexdigest()[:16]


def _normal(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("audit timestamps must be timezone-aware")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def normal_details(details: Mapping[str, Any] | None) -> Any:
    """The details as they come back from a JSON column (string keys, lists for tuples)."""
    return json.loads(json.dumps(details)) if details is not None else None


def canonical(values: Mapping[str, Any]) -> bytes:
    items = [_normal(values.get(name)) for name in FIELDS]
    items[FIELDS.index("details")] = normal_details(values.get("details"))
    text = json.dumps([_DOMAIN_ROW, *items], separators=(",", ":"), sort_keys=True)
    return text.encode()


def row_mac(key: bytes, values: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical(values), hashlib.sha256).hexdigest()


def row_is_genuine(key: bytes, values: Mapping[str, Any], mac: str | None) -> bool:
    return mac is not None and hmac.compare_digest(row_mac(key, values), mac)


@dataclass(frozen=True)
class Checkpoint:
    """Where a chain starts after rows before it were deleted by retention."""

    chain_id: int
    start_seq: int
    prev_id: int | None
    prev_mac: str
    deleted: int
    created_at: datetime

    def payload(self) -> bytes:
        items = [
            _DOMAIN_CHECKPOINT,
            self.chain_id,
            self.start_seq,
            self.prev_id,
            self.prev_mac,
            self.deleted,
            _normal(self.created_at),
        ]
        return json.dumps(items, separators=(",", ":")).encode()

    def mac(self, key: bytes) -> str:
        return hmac.new(key, self.payload(), hashlib.sha256).hexdigest()

    def is_genuine(self, key: bytes, mac: str | None) -> bool:
        return mac is not None and hmac.compare_digest(self.mac(key), mac)


GENESIS = Checkpoint(0, 1, None, GENESIS_MAC, 0, datetime(1970, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class ChainRow:
    """One stored row: its id, chain fields and every covered value (`values`)."""

    id: int
    seq: int | None
    prev_id: int | None
    prev_mac: str | None
    mac: str | None
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    kind: str  # modified | inserted | deleted | broken_link | checkpoint | key
    message: str
    ids: tuple[int, ...] = ()
    seq_from: int | None = None
    seq_to: int | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": self.kind, "message": self.message, "ids": list(self.ids)}
        if self.seq_from is not None:
            found["seq_from"], found["seq_to"] = self.seq_from, self.seq_to
        return found


@dataclass
class Verifier:
    """Walks one chain's rows in (seq, id) order, starting at `start`.

    `link_mac`/`link_id` are what the next row must name as its predecessor. A row whose own
    MAC fails is reported but still taken as the link (its stored MAC is the original one
    unless that was overwritten too), so one edit is reported once, not twice."""

    key: bytes
    start: Checkpoint
    whole_chain: bool = True  # False: an id range, whose edges are not checked
    head_seq: int | None = None  # the head as read before the walk began
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0
    _expected: int = 0
    _link_mac: str | None = None
    _link_id: int | None = None
    _group: list[ChainRow] = field(default_factory=list)
    _last_bad: bool = False

    def __post_init__(self) -> None:
        self._expected = self.start.start_seq
        self._link_mac, self._link_id = self.start.prev_mac, self.start.prev_id

    def feed(self, row: ChainRow) -> None:
        if self._group and self._group[0].seq != row.seq:
            self._settle()
        self._group.append(row)

    def flush(self) -> None:
        """Settle the rows fed so far (the last position is otherwise held back)."""
        if self._group:
            self._settle()

    def finish(self, head_seq: int, head_id: int | None, head_mac: str) -> list[Finding]:
        """Close the walk against the chain head (where the newest row must be)."""
        self.flush()
        if not self.whole_chain:
            return self.findings
        if self._expected <= head_seq:
            self._deleted(self._expected, head_seq, head_id, after_id=self._link_id, tail=True)
        elif self._expected - 1 == head_seq and self._link_mac != head_mac:
            message = "the newest row is not the one the chain head names"
            self.findings.append(Finding("broken_link", message))
        return self.findings

    def _settle(self) -> None:
        group, self._group = self._group, []
        seq = group[0].seq
        assert seq is not None
        self.checked += len(group)
        if self.head_seq is not None and seq > self.head_seq:
            # Beyond the head: a genuine row was appended while we walked; others are forged.
            forged = [r for r in group if not row_is_genuine(self.key, _with_chain(r), r.mac)]
            self._inserted(forged, f"its position {seq} is beyond the chain's newest row")
            return
        if seq < self._expected:
            # Only reachable for rows sharing a position already settled: never for sorted input.
            self._inserted(group, "a second row at an already verified position")
            return
        if not self.whole_chain and self.checked == len(group):
            # The first row of an id range: its predecessor is outside the range.
            self._expected, self._link_mac, self._link_id = seq, group[0].prev_mac, group[0].prev_id
        if seq > self._expected:
            self._deleted(self._expected, seq - 1, group[0].prev_id, after_id=self._link_id)
        genuine = [r for r in group if row_is_genuine(self.key, _with_chain(r), r.mac)]
        others = [r for r in group if r not in genuine]
        if genuine:
            keep = genuine[0]
            self._inserted(others, "its MAC is wrong and a genuine row holds its position")
            bad = False
        else:
            keep, bad = others[0], True
            self.findings.append(
                Finding(
                    "modified",
                    f"row {keep.id} was modified: its MAC does not match its content",
                    (keep.id,),
                    seq,
                    seq,
                )
            )
            self._inserted(others[1:], "a second unverifiable row at one position")
        links = keep.prev_mac == self._link_mac and keep.prev_id == self._link_id
        gap_reported = seq > self._expected
        if not links and not bad and not self._last_bad and not gap_reported:
            self.findings.append(
                Finding(
                    "broken_link",
                    f"row {keep.id} does not follow row {self._link_id} in the chain",
                    (keep.id,),
                    seq,
                    seq,
                )
            )
        self._last_bad = bad
        self._link_mac, self._link_id, self._expected = keep.mac, keep.id, seq + 1

    def _inserted(self, rows: list[ChainRow], why: str) -> None:
        for row in rows:
            self.findings.append(
                Finding(
                    "inserted", f"row {row.id} was inserted: {why}", (row.id,), row.seq, row.seq
                )
            )

    def _deleted(
        self, first: int, last: int, last_id: int | None, after_id: int | None, tail: bool = False
    ) -> None:
        count = last - first + 1
        named = f"; the last of them had id {last_id}" if last_id is not None else ""
        where = "at the end of the chain" if tail else f"after row {after_id}"
        self.findings.append(
            Finding(
                "deleted",
                f"{count} row(s) deleted {where} (chain positions {first}-{last}){named}",
                (last_id,) if last_id is not None else (),
                first,
                last,
            )
        )


def _with_chain(row: ChainRow) -> dict[str, Any]:
    return {
        **row.values,
        "id": row.id,
        "seq": row.seq,
        "prev_id": row.prev_id,
        "prev_mac": row.prev_mac,
    }


def describe_outside(row_id: int, seq: int | None, start_seq: int) -> Finding:
    """A row the walk does not reach: no chain fields, or before the chain's start."""
    if seq is None:
        why = "it carries no chain fields"
    else:
        why = f"its position {seq} precedes the chain's start at {start_seq}"
    return Finding("inserted", f"row {row_id} was inserted: {why}", (row_id,), seq, seq)
