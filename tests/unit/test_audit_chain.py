"""The audit chain's pure logic: MACs, and what the verifier finds for each kind of tampering."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tessera.core import audit_chain
from tessera.core.audit_chain import GENESIS, ChainRow, Checkpoint, Verifier

KEY = b"k" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chain(count: int, key: bytes = KEY, first_id: int = 10) -> list[ChainRow]:
    rows: list[ChainRow] = []
    prev_id, prev_mac = None, audit_chain.GENESIS_MAC
    for n in range(count):
        row_id = first_id + 2 * n  # ids need not be contiguous (several chains share a table)
        values: dict[str, Any] = {
            "org_id": 1,
            "timestamp": T0 + timedelta(seconds=n),
            "username": "admin",
            "actor_type": "user",
            "action": f"thing.{n}",
            "details": {"n": n, "nested": {"b": 1, "a": [1, 2]}},
            "success": True,
        }
        full = {**values, "id": row_id, "seq": n + 1, "prev_id": prev_id, "prev_mac": prev_mac}
        mac = audit_chain.row_mac(key, full)
        rows.append(ChainRow(row_id, n + 1, prev_id, prev_mac, mac, values))
        prev_id, prev_mac = row_id, mac
    return rows


def verify(
    rows: list[ChainRow], start: Checkpoint = GENESIS, head: ChainRow | None = None
) -> list[audit_chain.Finding]:
    verifier = Verifier(KEY, start)
    for row in sorted(rows, key=lambda r: (r.seq or 0, r.id)):
        verifier.feed(row)
    last = head if head is not None else max(rows, key=lambda r: r.seq or 0)
    return verifier.finish(last.seq or 0, last.id, last.mac or "")


def kinds(findings: list[audit_chain.Finding]) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.kind, f.ids) for f in findings]


def test_an_untouched_chain_verifies() -> None:
    rows = chain(6)
    assert verify(rows) == []


def test_the_mac_depends_on_the_key_and_every_field() -> None:
    rows = chain(2)
    values = {**rows[1].values, "id": rows[1].id, "seq": 2, "prev_id": 10, "prev_mac": rows[0].mac}
    assert audit_chain.row_mac(KEY, values) == rows[1].mac
    assert audit_chain.row_mac(b"x" * 32, values) != rows[1].mac
    for name in audit_chain.FIELDS:
        changed = {**values, name: "other"}
        assert audit_chain.row_mac(KEY, changed) != rows[1].mac, name


def test_details_hash_as_they_come_back_from_a_json_column() -> None:
    sent = {"timestamp": T0, "details": {2: "b", 10: "a", "t": (1, 2)}}
    stored = {"timestamp": T0, "details": {"10": "a", "2": "b", "t": [1, 2]}}
    assert audit_chain.row_mac(KEY, sent) == audit_chain.row_mac(KEY, stored)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError):
        audit_chain.row_mac(KEY, {"timestamp": datetime(2026, 1, 1)})


def test_a_modified_row_is_named_once() -> None:
    rows = chain(5)
    rows[2] = replace(rows[2], values={**rows[2].values, "username": "mallory"})
    assert kinds(verify(rows)) == [("modified", (rows[2].id,))]


def test_a_modified_mac_column_is_named_once() -> None:
    rows = chain(5)
    rows[2] = replace(rows[2], mac="0" * 64)
    assert kinds(verify(rows)) == [("modified", (rows[2].id,))]


def test_a_deleted_row_is_named_by_its_successor() -> None:
    rows = chain(5)
    gone = rows.pop(2)
    found = verify(rows)
    assert kinds(found) == [("deleted", (gone.id,))]
    assert (found[0].seq_from, found[0].seq_to) == (3, 3)


def test_several_deleted_rows_give_their_positions() -> None:
    rows = chain(8)
    del rows[2:5]
    found = verify(rows)
    assert [(f.kind, f.seq_from, f.seq_to) for f in found] == [("deleted", 3, 5)]
    assert found[0].ids == (rows[1].id + 6,)  # the last deleted row, named by the next one


def test_deleting_the_newest_rows_is_seen_against_the_head() -> None:
    rows = chain(5)
    head = rows[-1]
    found = verify(rows[:3], head=head)
    assert [(f.kind, f.seq_from, f.seq_to, f.ids) for f in found] == [("deleted", 4, 5, (head.id,))]


def test_deleting_the_first_row_is_seen() -> None:
    rows = chain(4)
    assert [(f.kind, f.seq_from) for f in verify(rows[1:], head=rows[-1])] == [("deleted", 1)]


def test_an_inserted_row_at_a_taken_position_is_named() -> None:
    rows = chain(4)
    forged = ChainRow(999, 3, rows[1].id, rows[1].mac, "f" * 64, {**rows[2].values})
    assert kinds(verify([*rows, forged], head=rows[-1])) == [("inserted", (999,))]


def test_an_inserted_row_replacing_a_deleted_one_reads_as_a_modification() -> None:
    rows = chain(4)
    forged = ChainRow(rows[2].id, 3, rows[1].id, rows[1].mac, "f" * 64, rows[2].values)
    rows[2] = forged
    assert kinds(verify(rows)) == [("modified", (rows[2].id,))]


def test_rows_outside_the_chain_are_described_as_inserted() -> None:
    assert audit_chain.describe_outside(7, None, 1).kind == "inserted"
    assert "precedes" in audit_chain.describe_outside(7, 2, 5).message


def test_a_checkpoint_lets_the_rest_verify_after_cleanup() -> None:
    rows = chain(6)
    kept = rows[3:]
    checkpoint = Checkpoint(1, 4, rows[2].id, rows[2].mac or "", 3, T0)
    assert checkpoint.is_genuine(KEY, checkpoint.mac(KEY))
    assert verify(kept, start=checkpoint) == []
    # Without it, the deleted rows show.
    assert [f.kind for f in verify(kept)] == ["deleted"]


def test_a_forged_checkpoint_does_not_verify() -> None:
    checkpoint = Checkpoint(1, 4, 14, "a" * 64, 3, T0)
    assert not checkpoint.is_genuine(KEY, checkpoint.mac(b"x" * 32))
    assert not checkpoint.is_genuine(KEY, None)
    assert not replace(checkpoint, start_seq=5).is_genuine(KEY, checkpoint.mac(KEY))


def test_an_id_range_checks_only_inside_it() -> None:
    rows = chain(8)
    verifier = Verifier(KEY, GENESIS, whole_chain=False)
    for row in rows[3:6]:
        verifier.feed(row)
    assert verifier.finish(8, rows[-1].id, rows[-1].mac or "") == []
    assert verifier.checked == 3


def test_key_id_is_stable_and_reveals_nothing_obvious() -> None:
    assert audit_chain.key_id(KEY) == audit_chain.key_id(KEY)
    assert audit_chain.key_id(KEY) != audit_chain.key_id(b"x" * 32)
    assert KEY.hex()[:16] != audit_chain.key_id(KEY)


def test_rows_beyond_the_head_are_inserted_unless_genuine_late_appends() -> None:
    rows = chain(5)
    head = rows[2]
    forged = ChainRow(999, 9, rows[4].id, rows[4].mac, "f" * 64, rows[4].values)
    verifier = Verifier(KEY, GENESIS, head_seq=3)
    for row in [*rows, forged]:
        verifier.feed(row)
    found = verifier.finish(3, head.id, head.mac or "")
    # rows 4 and 5 are genuine appends made after the head was read; 999 is forged.
    assert kinds(found) == [("inserted", (999,))]


# --- redaction and RFC 5424 formatting (pure) ----------------------------------------------


def test_redaction_of_keys_and_query_parameters() -> None:
    from tessera.domains.audit.redaction import csv_cell, redact

    given = {
        "Password": "pw",
        "nested": [{"token": "t", "key_size": 2048}],
        "url": "https://x.test/?api_key=k&key=v&monkey=ok&access_token=a b",
    }
    assert redact(given) == {
        "Password": "***",
        "nested": [{"token": "***", "key_size": 2048}],
        "url": "https://x.test/?api_key=***&key=***&monkey=ok&access_token=*** b",
    }
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("-x") == "'-x" and csv_cell("a=1") == "a=1"


def test_rfc5424_message() -> None:
    import re

    from tessera.domains.audit.syslog import SyslogConfig, format_message

    event = {
        "id": 7,
        "seq": 3,
        "timestamp": T0,
        "username": 'we"ird]',
        "action": "certificate.revoke",
        "resource_type": "certificate",
        "resource_id": "5",
        "success": False,
        "details": {"password": "x", "reason": "keyCompromise"},
    }
    message = format_message(event, SyslogConfig(facility=16, app_name="tessera"), "host one")
    header, _, rest = message.partition(b" [")
    assert re.match(
        rb"^<132>1 2026-01-01T00:00:00\.000000Z hostone tessera \d+ certificate\.revoke$", header
    )
    assert b'user="we\\"ird\\]"' in rest and b'resource="certificate:5"' in rest
    assert b"\xef\xbb\xbf{" in rest and b'"password":"***"' in rest


def test_automatic_retention_cleans_once_a_day_and_keeps_the_chain_valid(tmp_path: Any) -> None:
    import os

    from tessera.domains.actor import system_actor
    from tessera.domains.audit import wiring
    from tessera.domains.audit.service import AuditService, run_retention
    from tessera.storage.db import make_engine, migrate, session_factory
    from tessera.storage.repositories import Repositories
    from tessera.storage.repositories.audit import AuditSettingsRepository

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    wiring.install(sessions, os.urandom(32))
    now = datetime.now(UTC)
    with sessions.begin() as session:
        org = Repositories(session, 0).organizations.add("default").id
        repos = Repositories(session, org)
        for n in range(5):
            old = now - timedelta(days=100 - n) if n < 3 else now
            repos.audit.add(timestamp=old, action=f"thing.{n}", username="admin")
        AuditSettingsRepository(session).put(
            "retention", {"retention_days": 30, "auto_cleanup": True}, "test"
        )
    assert run_retention(sessions, now) == 3
    assert run_retention(sessions, now + timedelta(hours=1)) == 0  # once a day
    with sessions.begin() as session:
        service = AuditService(Repositories(session, org), system_actor(org), now)
        verdict = service.verify()
        assert verdict["valid"] is True and verdict["checked"] == 3, verdict
    engine.dispose()
