"""The organization's row (`OrganizationRepository.hold`) and the audit chain's head are
taken in one order by every import on PostgreSQL: the organization first. A smart import
that appended an audit row (a key added to a CA that was here already) before it held the
organization for its next object would deadlock with a certificate import that held the
organization and then appended its own audit row: PostgreSQL aborts one of them."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import API, data, foreign_root, foreign_signed, unique
from tests.support import Server, module_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """PostgreSQL (row locks; SQLite serialises writers on one lock), two processes."""
    with module_server(
        "postgresql", tmp_path_factory.mktemp("lockorder") / "data", workers=2
    ) as up:
        yield up


def _waiting_on_locks(conn: object) -> int:
    """Requests waiting for the organization's row (`hold`) behind the blocker."""
    row = conn.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE 'UPDATE organizations SET created_at=organizations.created_at%'"
    ).fetchone()
    return int(row[0])


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_smart_import_adding_a_key_and_a_certificate_import_do_not_deadlock(
    server: Server, workdir: Path
) -> None:
    import psycopg

    root = foreign_root(workdir, f"/CN={unique('Lock Order Root')}")
    with server.client() as api:
        upload = {"file": ("ca.pem", root.pem.encode(), "application/octet-stream")}
        data(api.post(f"{API}/cas/import", files=upload), 201)  # here without its key
    leaf = foreign_signed(workdir, root, f"/CN={unique('lock-a')}.example", "v3_leaf")
    other = foreign_signed(workdir, root, f"/CN={unique('lock-b')}.example", "v3_leaf")
    answers: dict[str, httpx.Response] = {}

    def smart_import() -> None:  # the CA's key (audited), then a new certificate (held)
        with server.client() as client:
            content = root.pem + root.key_pem + leaf.pem
            answers["smart"] = client.post(f"{API}/import/execute", json={"content": content})

    def certificate_import() -> None:  # held, then audited
        with server.client() as client:
            upload = {"file": ("leaf.pem", other.pem.encode(), "application/octet-stream")}
            answers["plain"] = client.post(f"{API}/certificates/import", files=upload)

    with (
        psycopg.connect(server.database_url) as watcher,
        psycopg.connect(server.database_url) as blocker,
    ):
        watcher.autocommit = True
        # Hold the organizations' rows, so that both requests queue behind us in this order.
        blocker.execute("UPDATE organizations SET created_at = created_at")
        plain = threading.Thread(target=certificate_import)
        plain.start()
        _until(lambda: _waiting_on_locks(watcher) >= 1, "the certificate import never waited")
        smart = threading.Thread(target=smart_import)
        smart.start()
        _until(lambda: _waiting_on_locks(watcher) >= 2, "the smart import never waited")
        blocker.commit()
        plain.join(60)
        smart.join(60)
    assert answers["plain"].status_code == 201, answers["plain"].text
    assert answers["smart"].status_code == 200, answers["smart"].text
    report = data(answers["smart"])
    assert report["errors"] == [] and report["certificates_imported"] == 1, report
