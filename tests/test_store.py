"""The store's claim of a waiting unit: one worker, never two."""

from conftest import times_claimed


def test_racing_workers_claim_every_waiting_trial_exactly_once_on_sqlite(tmp_path):
    # Optuna's own claim (read WAITING, then write RUNNING) let 11-18 of these 60 trials be
    # claimed twice on SQLite, where a read takes no lock before the write.
    counts = times_claimed(f"sqlite:///{tmp_path / 'race.db'}")
    assert len(counts) == 60
    assert set(counts.values()) == {1}
