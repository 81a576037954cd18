"""The SQLite deployment's ACME nonce file (storage/nonce_file.py): each nonce is spent
exactly once across threads and processes, expired ones are refused and purged."""

import multiprocessing
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tessera.storage.nonce_file import NonceFile

LATER = time.time() + 3600


def _spend_all(path: str, values: list[str]) -> int:
    store = NonceFile(path)
    return sum(store.consume(value, time.time()) for value in values)


def test_a_nonce_is_spent_once(tmp_path: Path) -> None:
    store = NonceFile(str(tmp_path / "n.acme-nonces"))
    store.add(["a", "b"], LATER)
    assert store.consume("a", time.time())
    assert not store.consume("a", time.time())
    assert not store.consume("never-issued", time.time())
    assert store.consume("b", time.time())


def test_expired_nonces_are_refused_and_purged(tmp_path: Path) -> None:
    store = NonceFile(str(tmp_path / "n.acme-nonces"))
    now = time.time()
    store.add(["old"], now - 1)
    store.add(["new"], now + 60)
    assert not store.consume("old", now)
    assert store.purge(now) == 1
    assert store.consume("new", now)


def test_a_failed_batch_stores_nothing(tmp_path: Path) -> None:
    store = NonceFile(str(tmp_path / "n.acme-nonces"))
    store.add(["taken"], LATER)
    with pytest.raises(sqlite3.IntegrityError):
        store.add(["fresh", "taken"], LATER)  # a duplicate: the batch is rolled back
    assert not store.consume("fresh", time.time())


def test_threads_and_processes_racing_spend_each_nonce_once(tmp_path: Path) -> None:
    path = str(tmp_path / "n.acme-nonces")
    values = [f"nonce-{i}" for i in range(400)]
    NonceFile(path).add(values, LATER)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as processes, ThreadPoolExecutor(4) as threads:
        remote = [processes.apply_async(_spend_all, (path, values)) for _ in range(2)]
        local = [threads.submit(_spend_all, path, values) for _ in range(4)]
        spent = sum(r.get(timeout=60) for r in remote) + sum(f.result() for f in local)
    assert spent == len(values)
