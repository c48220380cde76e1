"""The store: the claim of a waiting unit (one worker, never two) and opening a storage."""

import socket
import time

import pytest
from conftest import times_claimed

from benchmark.store import StoreConfig, StoreError, open_storage


def test_racing_workers_claim_every_waiting_trial_exactly_once_on_sqlite(tmp_path):
    # Optuna's own claim (read WAITING, then write RUNNING) let 11-18 of these 60 trials be
    # claimed twice on SQLite, where a read takes no lock before the write.
    counts = times_claimed(f"sqlite:///{tmp_path / 'race.db'}")
    assert len(counts) == 60
    assert set(counts.values()) == {1}


def test_a_database_server_that_never_answers_is_a_clear_error_not_a_hang(monkeypatch):
    pytest.importorskip("psycopg2")
    monkeypatch.setattr("benchmark.store.CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://user:secret@127.0.0.1:{silent.getsockname()[1]}/mtvae"
        started = time.monotonic()
        refused = r"cannot open storage 'postgresql.*://user:\*\*\*@127\.0\.0\.1.*timeout"
        with pytest.raises(StoreError, match=refused) as error:
            open_storage(url, StoreConfig(storage=url))
    assert time.monotonic() - started < 20 and "secret" not in str(error.value)
