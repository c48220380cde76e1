"""Many machines, for real: two search processes share one study on a real PostgreSQL server.

The server runs on loopback from a temporary data directory. PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` user (or ``nobody`` when there is
none) through ``subprocess``'s ``user=``/``group=``. The binaries are looked for on PATH and
in ``/usr/lib/postgresql/*/bin`` (Debian's ``apt-get install postgresql``). Without them the
test is skipped, except in CI (``CI`` set), where it fails.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import TUNED_SUITE, cli, one_line_error, searched, times_claimed

from benchmark.search_space import SearchSettings
from benchmark.storage import storage_driver_url, trial_status

TRIALS = 4
NAME = "shared"


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then the newest Debian install."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
                         reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    binaries = server_binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                        "/usr/lib/postgresql/*/bin; CI must install them (apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
    import psycopg2

    root = Path(tempfile.mkdtemp(prefix="mtvae-pg-"))  # under /tmp: pytest's tmp_path is private to root
    as_user: dict = {}
    if os.geteuid() == 0:  # postgres will not run as root: hand the folder to an unprivileged user
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data, log, port = root / "data", root / "server.log", free_port()
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(root)}

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(binaries / args[0]), *args[1:]], env=env, cwd=root, capture_output=True,
                              text=True, timeout=120, **as_user)

    try:
        done = pg("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "--no-locale", "-E", "UTF8")
        assert done.returncode == 0, f"initdb failed: {done.stderr}"
        done = pg("pg_ctl", "-D", str(data), "-o", f"-k {root} -p {port} -h 127.0.0.1", "-l", str(log),
                  "start", "-w", "-t", "60")
        assert done.returncode == 0, f"pg_ctl start failed: {done.stderr} {log.read_text() if log.exists() else ''}"
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE search")
        connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/search"
    finally:
        if data.exists():
            pg("pg_ctl", "-D", str(data), "stop", "-m", "immediate", "-w")  # a throwaway server
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(postgres_url, tmp_path):
    command = [sys.executable, "-m", "benchmark", "search", "--family", "vae", "--config", "1", "--method", "single",
               "--sampling", "gaussian", "--limit", "200", "--epochs", "1", "--folds", "5", "--device", "cpu",
               "--trials", str(TRIALS), "--storage", postgres_url, "--study-name", NAME, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on shared cores: one thread each
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    assert not (tmp_path / "studies").exists()  # everything went to PostgreSQL

    study = optuna.load_study(study_name=NAME, storage=storage_driver_url(postgres_url))
    trials = study.get_trials()
    # The budget rule: a worker starts a trial only while fewer than TRIALS are running or finished
    # (nothing diverges or is interrupted here); of two workers racing for the last slot, the one
    # whose trial is numbered second stops it untrained.
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # every trial stored once
    surplus = [t for t in trials if trial_status(t) == "surplus"]
    assert len(surplus) <= 1 and all(not t.params for t in surplus)
    trials = [t for t in trials if trial_status(t) != "surplus"]
    assert len(trials) == TRIALS
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)  # all finished
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)  # no two workers evaluated the same point
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(len(t.user_attrs["fold_recon"]) == 5 for t in complete)
    assert all(t.value == pytest.approx(sum(t.user_attrs["fold_recon"]) / 5) for t in complete)  # the CV mean
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes trained trials
    assert study.user_attrs["settings"]["method"] == "single"


def test_racing_workers_claim_every_waiting_trial_exactly_once_on_postgresql(postgres_url):
    counts = times_claimed(postgres_url)
    assert len(counts) == 60
    assert set(counts.values()) == {1}


def test_a_tuned_run_takes_the_suites_own_units_whole_on_postgresql(postgres_url, tmp_path, capsys):
    # one transaction writes the trial's state, value (an enum column here) and attributes
    searched(tmp_path / "studies", "a", SearchSettings("vae", 1, "single", "gaussian"))
    (tmp_path / "tuned.toml").write_text(TUNED_SUITE)
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--storage", postgres_url, "--quiet") == 0
    capsys.readouterr()
    assert cli(tmp_path, "run", "--suite", "tuned.toml", "--params-from", "a", "--storage", postgres_url,
               "--quiet") == 0
    assert "taking 2 units of 1 configuration from run 'tuned'" in capsys.readouterr().err
    storage = storage_driver_url(postgres_url)
    theirs, ours = (optuna.load_study(study_name=name, storage=storage)
                    for name in ("suite-tuned", "suite-tuned-tuned"))
    taken = [t for t in ours.trials if t.user_attrs.get("taken_from") == "tuned"]
    assert len(taken) == 2 and all(t.state == TrialState.COMPLETE for t in taken)
    source = {t.user_attrs["fold"]: t for t in theirs.trials if t.user_attrs["config_id"] == "vae/1/baseline"}
    for trial in taken:
        assert trial.value == source[trial.user_attrs["fold"]].value
        assert trial.user_attrs["metrics"] == source[trial.user_attrs["fold"]].user_attrs["metrics"]


def test_a_database_the_server_lacks_is_one_line_that_says_how_to_make_it(postgres_url, tmp_path, capsys):
    url = postgres_url.removesuffix("/search") + "/nodb"
    assert cli(tmp_path, "studies", "list", "--storage", url) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"error: cannot open storage {url!r}: (psycopg2.OperationalError) ")
    port = url.split(":")[2].split("/")[0]
    assert line.endswith(f'database "nodb" does not exist; create it on the server first (`createdb -h 127.0.0.1 '
                         f"-p {port} -U postgres nodb`), or name one that exists")
