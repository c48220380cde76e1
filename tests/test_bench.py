"""The throughput benchmark: a tiny run end to end, FLOP counts against a hand count, naive masks."""

import csv
import errno
import math
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import stopped, text_table, worker_pids, write_mnist
from scipy import stats
from torch import nn

from benchmark.bench import (
    BenchRow,
    EnsembleRow,
    MatmulPeak,
    bench_configuration,
    bench_one,
    format_ensemble_table,
    format_table,
    naive_masks,
    plain_process,
    run_bench,
    training_flops,
    write_csv,
    write_throughput,
)
from benchmark.bench.folds import ensemble_one
from benchmark.bench.throughput import BenchResult, BenchWorkerError, ours_parallel, parse_models, setting_notes
from benchmark.cli import main
from benchmark.conditioning import PixelSampler
from benchmark.config import Configuration
from benchmark.models import build_model
from benchmark.processes import busy_note, usable_cores
from benchmark.train import device_name, native_bf16


@pytest.fixture(scope="module")
def tiny_result():
    return run_bench(families=["vq-vae:1"], methods=["baseline", "single"], steps=2, warmup=1, batch=16,
                     device="cpu", peak_size=128)


def test_run_bench_writes_csv_with_positive_numbers(tiny_result, tmp_path):
    path = write_csv(tiny_result.rows, tmp_path / "bench" / "throughput.csv")
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [f.name for f in fields(BenchRow)]
        rows = list(reader)
    assert [(r["family"], r["config"], r["method"]) for r in rows] == [("vq-vae", "1", "baseline"),
                                                                        ("vq-vae", "1", "single")]
    for row in rows:
        for column in ("params", "flops_per_image", "ours_img_s", "naive_img_s", "speedup", "gflop_s",
                       "pct_peak_fp32", "naive_pct_peak_fp32", "ours_seconds", "naive_seconds", "peak_gflop_s_fp32"):
            value = float(row[column])
            assert math.isfinite(value) and value > 0, (column, row[column])
        assert int(row["steps"]) == 2 and int(row["batch"]) == 16
        # the precision that ran (auto on a CPU: fp32), and the load it was timed under, for a reader of the CSV
        assert row["precision"] == "fp32" and float(row["load_avg"]) >= 0
    # the one that ran, as the rows say, and the CPU's model
    assert f"device {device_name(torch.device('cpu'))}, precision fp32," in format_table(tiny_result)
    peak = tiny_result.peak
    # no bf16 peak on a CPU without bf16 kernels: it would take minutes and mean nothing
    dtypes = ("float32", "bfloat16") if native_bf16(torch.device("cpu")) else ("float32",)
    assert set(peak.rates) == {f"{route} {dtype}" for route in ("torch.mm", "1x1 conv", "3x3 conv") for dtype in dtypes}
    assert (peak.bf16 is None) == (len(dtypes) == 1)
    assert peak.fp32 == max(peak.rates[f"{route} float32"] for route in ("torch.mm", "1x1 conv", "3x3 conv")) > 0
    # the conditioned model has more parameters and more FLOPs than the baseline
    base, single = tiny_result.rows
    assert single.params > base.params and single.flops_per_image > base.flops_per_image
    assert base.gflop_s == pytest.approx(base.flops_per_image * base.ours_img_s / 1e9)
    peak = tiny_result.peak.fp32
    assert base.naive_pct_peak_fp32 == pytest.approx(100 * base.flops_per_image * base.naive_img_s / 1e9 / peak)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts this process's threads in Linux's /proc")
def test_sending_images_to_the_naive_process_starts_no_thread_team_here():
    """A tensor pickled for the naive process is copied in parallel on the pool's task thread,
    which starts a second OpenMP team in this process: with more OpenMP threads than cores libgomp
    stops spinning, and our timed loop ran at half speed (seen on 2 cores)."""
    def native_threads() -> int:  # OS threads that are not Python threads: OpenMP's, among others
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    images = torch.rand(64, 1, 32, 32)  # 65,536 values: a parallel copy
    configuration = bench_configuration("vq-vae", 1, "baseline")
    torch.mm(torch.rand(256, 256), torch.rand(256, 256))  # this thread's own team exists before counting
    with plain_process() as naive:
        naive.apply(os.getpid)  # the pool's own threads exist before counting
        before = native_threads()
        row = bench_one(configuration, images, 1, 0, 64, torch.device("cpu"), MatmulPeak("cpu", 1, 1.0, None), naive)
        assert native_threads() == before
    assert math.isfinite(row.naive_img_s)


@pytest.mark.parametrize("umask", [None, 0o022, 0o027, 0o002])
def test_csv_files_get_the_permissions_of_a_plain_open(tiny_result, tmp_path, umask):
    """Written through a temporary file and a rename, yet 0666 less the umask like every other output
    (``tempfile.mkstemp`` made them 0600); None = the umask the tests run under."""
    old = os.umask(0o022 if umask is None else umask)
    if umask is None:
        os.umask(old)
    try:
        path = write_csv(tiny_result.rows, tmp_path / "throughput.csv")
        plain = tmp_path / "plain.csv"
        with plain.open("w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.csv", "throughput.csv"]  # no temporary file left


def test_a_new_throughput_csv_removes_the_ensemble_csv_of_an_earlier_run(tiny_result, tmp_path):
    assert write_throughput(tiny_result.rows, tmp_path) == (tmp_path / "throughput.csv", None)
    (tmp_path / "ensemble.csv").write_text("family,folds\nvae,5\n")
    assert write_throughput(tiny_result.rows, tmp_path) == (tmp_path / "throughput.csv", tmp_path / "ensemble.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["throughput.csv"]


def test_ctrl_c_before_the_csv_says_nothing_was_written(tmp_path, capsys, monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("benchmark.bench.run_bench", interrupted)
    out = tmp_path / "out"
    assert main(["bench", "--quiet", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interrupted: nothing was written to {out}; bench keeps no partial timings, "
                   f"so a rerun measures everything again"]
    assert not out.exists()


def test_ctrl_c_in_the_ensemble_says_only_throughput_csv_was_written(tiny_result, tmp_path, capsys, monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("benchmark.bench.run_bench", lambda **kwargs: tiny_result)
    monkeypatch.setattr("benchmark.bench.run_ensemble_bench", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ensemble.csv").write_text("family,folds\nvae,5\n")  # an earlier run's: it must not stay
    assert main(["bench", "--quiet", "--ensemble", "3", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interrupted: {out / 'throughput.csv'} was written; the ensemble timing was not, so there is "
                   f"no ensemble.csv; bench keeps no partial timings, so a rerun measures everything again"]
    assert sorted(p.name for p in out.iterdir()) == ["throughput.csv"]
    assert len(list(csv.DictReader((out / "throughput.csv").open()))) == len(tiny_result.rows)


def test_a_rate_above_the_peak_is_explained(tiny_result):
    within = replace(tiny_result, rows=[replace(tiny_result.rows[0], pct_peak_fp32=46.6)])
    assert "above the float32 peak" not in format_table(within)
    fast = replace(tiny_result, rows=[replace(tiny_result.rows[0], pct_peak_fp32=146.6)])
    assert "note: a rate above the float32 peak means bf16, or a peak measured low on a busy machine; rerun with " \
           "--repeats 2" in format_table(fast)


def test_percent_of_peak_is_of_the_precision_ours_trained_in(tiny_result):
    # Under bf16 (auto's choice on an Ampere GPU) the column compared a bf16 rate with the float32 peak.
    row = replace(tiny_result.rows[0], precision="bf16", pct_peak_fp32=604.2, pct_peak_bf16=83.2)
    table = format_table(replace(tiny_result, rows=[row], settings={**tiny_result.settings, "precision": "bf16"}))
    header, _, rows = text_table(table.split("\n\n")[0].splitlines())
    assert rows[0][header.index("% peak")] == "83.2"
    assert ("% peak is of the bfloat16 peak (ours trained in bf16), naive % peak of the float32 peak (naive trains in "
            "float32, so the speed-up includes bf16's gain)") in table
    assert "above" not in table  # 604 % of the float32 peak is no reason to rerun


def test_the_csv_rows_say_how_they_were_measured(tiny_result, tmp_path):
    path = write_csv(tiny_result.rows, tmp_path / "throughput.csv", tiny_result.settings)
    frame = pd.read_csv(path)
    assert list(frame.columns) == [f.name for f in fields(BenchRow)] + [
        "dataset", "warmup", "repeats", "threads", "cpus", "torch", "device_name", "naive_precision"]
    assert (frame["dataset"] == "mnist5k").all() and (frame["warmup"] == 1).all()
    assert (frame["device_name"] == device_name(torch.device("cpu"))).all()
    assert (frame["naive_precision"] == "fp32").all()
    assert (frame["cpus"] == usable_cores()).all() and (frame["torch"] == torch.__version__).all()
    ensemble = write_csv([EnsembleRow("vae", 1, "baseline", "", "cpu", "fp32", 3, 2, 8, 1.0, 0.5, 2.0, 0.5)],
                         tmp_path / "ensemble.csv", {**tiny_result.settings, "naive_precision": None})
    assert "naive_precision" not in pd.read_csv(ensemble) and "dataset" in pd.read_csv(ensemble)


def test_a_negative_seed_is_refused_before_any_timing(monkeypatch):
    monkeypatch.setattr("benchmark.bench.throughput.measure_matmul_peak", lambda *a: pytest.fail("timed first"))
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        run_bench(families=["vq-vae:1"], methods=["baseline"], steps=1, warmup=0, batch=8, device="cpu", seed=-1)


def test_without_warm_up_on_a_gpu_the_naive_loops_set_up_is_noted():
    cuda = torch.device("cuda")
    assert any("--warmup 0" in note for note in setting_notes(20, True, None, cuda, warmup=0))
    # worker processes, each fresh, time their first step's set-up too (a quarter of the img/s, measured)
    cpu = torch.device("cpu")
    assert any("each of the 2 worker processes" in note for note in setting_notes(20, False, None, cpu, 0, workers=2))
    assert not any("worker" in note for note in setting_notes(20, False, None, cpu, 1, workers=2)
                   + setting_notes(20, False, None, cpu, 0, workers=1))
    assert not any("--warmup" in note for note in setting_notes(20, True, None, cuda, warmup=1)
                   + setting_notes(20, False, None, cuda, warmup=0) + setting_notes(20, True, None, torch.device("cpu"),
                                                                                    warmup=0))


def test_the_tables_keep_the_formatted_cells_labels_left_and_numbers_right():
    peak = MatmulPeak("cpu", 1024, 123.4, None, {"torch.mm float32": 123.4})
    ours = BenchRow("vq-vae", 1, "single", "uniform", "cpu", "fp32", 1, 1234567, 20, 128, 2.5e8, 5432.1, 4000.0, 1.358,
                    1357.9, 46.6, math.nan, 30.1, 1.0, 1.2, 123.4, math.nan, 1024, 0.5)
    alone = replace(ours, family="vae", config=2, method="baseline", sampling="", params=12345, naive_img_s=math.nan,
                    speedup=math.nan, naive_pct_peak_fp32=math.nan)
    settings = {"dataset": "mnist5k", "steps": 20, "warmup": 3, "batch": 128, "repeats": 1, "device": "cpu",
                "precision": "fp32", "workers": 1, "threads": 2, "torch": "2.x"}
    table, notes = format_table(BenchResult([ours, alone], peak, settings)).split("\n\n")
    assert notes.startswith("matmul peak on cpu: float32 123 GFLOP/s")
    header, alignment, rows = text_table(table.splitlines())
    assert header == ["family", "config", "method", "params", "MFLOP/img", "ours img/s", "naive img/s", "speed-up",
                      "GFLOP/s", "% peak", "naive % peak"]
    assert alignment == ["left"] * 3 + ["right"] * 8
    assert rows == [["vq-vae", "1", "single (uniform)", "1,234,567", "250.0", "5,432", "4,000", "1.36x", "1,357.9",
                     "46.6", "30.1"],
                    ["vae", "2", "baseline", "12,345", "250.0", "5,432", "–", "–", "1,357.9", "46.6", "–"]]
    header, alignment, rows = text_table(format_ensemble_table(
        [EnsembleRow("vae", 1, "single", "uniform", "cpu", "fp32", 3, 20, 8, 1.23456, 0.61, 2.0238, 0.5)]).splitlines())
    assert header == ["family", "config", "method", "folds", "one by one s", "stacked s", "speed-up"]
    assert alignment == ["left"] * 3 + ["right"] * 4
    assert rows == [["vae", "1", "single (uniform)", "3", "1.23", "0.61", "2.02x"]]


def test_cli_bench_prints_table_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ensemble.csv").write_text("family,folds\nvae,5\n")  # an earlier --ensemble run's
    code = main(["bench", "--families", "vq-vae:1", "--methods", "baseline", "--steps", "1", "--warmup", "0",
                 "--batch", "8", "--device", "cpu", "--peak-size", "64", "--no-naive", "--quiet",
                 "--out", str(out), "--data-root", "nowhere"])
    assert code == 0
    printed, err = capsys.readouterr()
    assert ("note: --data-root not used: mnist5k ships with the package (mnist, cifar10, celeba come from "
            "--data-root)") in err
    assert "ours img/s" in printed and "matmul peak" in printed
    assert ("note: at --steps 1, a fold's fixed costs (building the model, a validation pass) weigh on our loop's "
            "figures: its img/s, % of peak read low; time 10 steps or more") in err  # no naive to speak of
    assert ("note: --peak-size 64 is below the default on cpu (2048): small products run below the machine's peak, "
            "so % of peak reads high") in err
    assert "--peak-size 4096 is below the default on cuda (8192)" in " ".join(
        setting_notes(20, True, 4096, torch.device("cuda")))
    assert not setting_notes(20, True, 4096, torch.device("cpu"))
    assert f"removed {out / 'ensemble.csv'} of an earlier run" in printed
    rows = list(csv.DictReader((out / "throughput.csv").open()))
    assert len(rows) == 1 and float(rows[0]["ours_img_s"]) > 0 and rows[0]["naive_img_s"] == "nan"
    assert sorted(p.name for p in out.iterdir()) == ["throughput.csv"]  # the folder holds one run


def test_a_few_steps_note_comes_before_the_timings_and_names_naive_when_it_runs(tmp_path, capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    # Stopped as the timings start, once the settings are checked: a bad one is an error without notes.
    monkeypatch.setattr("benchmark.bench.throughput.measure_matmul_peak", interrupted)
    assert main(["bench", "--steps", "5", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.splitlines()[0] == (
        "note: at --steps 5, a fold's fixed costs (building the model, a validation pass) weigh on our loop's figures, "
        "while naive's clock starts after its warm-up: its img/s, % of peak and speed-up read low; time 10 steps or "
        "more (more on a GPU, whose steps are quicker)")
    assert main(["bench", "--peak-size", "2048", "--out", str(tmp_path / "out")]) == 130
    assert "note:" not in capsys.readouterr().err  # the default 20 steps, the CPU's default peak size


def test_cli_bench_reads_a_torchvision_dataset_from_data_root(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_mnist(tmp_path / "data", rng.integers(0, 256, (16, 28, 28), dtype=np.uint8), np.arange(16) % 10,
                rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4))
    # --download, as the missing-files message advises; with the files there torchvision fetches nothing
    code = main(["bench", "--dataset", "mnist", "--data-root", str(tmp_path / "data"), "--download",
                 "--families", "vq-vae:1", "--methods", "baseline", "--steps", "1", "--warmup", "0", "--batch", "8", "--device", "cpu",
                 "--peak-size", "64", "--no-naive", "--quiet", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert len(list(csv.DictReader((tmp_path / "out" / "throughput.csv").open()))) == 1


def test_cli_bench_times_the_fold_ensemble_against_folds_one_by_one(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "--families", "vae:1", "--methods", "single", "--steps", "2", "--warmup", "1",
                 "--batch", "8", "--device", "cpu", "--peak-size", "64", "--no-naive", "--quiet",
                 "--ensemble", "3", "--out", str(out)])
    assert code == 0
    assert "stacked s" in capsys.readouterr().out
    reader = csv.DictReader((out / "ensemble.csv").open())
    assert reader.fieldnames == [f.name for f in fields(EnsembleRow)] + [
        "dataset", "warmup", "repeats", "threads", "cpus", "torch", "device_name"]  # no naive loop, no naive_precision
    rows = list(reader)
    assert [(r["family"], r["method"], r["folds"], r["steps"]) for r in rows] == [("vae", "single", "3", "2")]
    row = rows[0]
    assert row["precision"] == "fp32" and float(row["load_avg"]) >= 0  # auto, as it ran on a CPU
    assert float(row["sequential_seconds"]) > 0 and float(row["together_seconds"]) > 0
    assert float(row["speedup"]) == pytest.approx(float(row["sequential_seconds"]) / float(row["together_seconds"]))


def test_the_ensemble_keeps_the_best_of_its_repeats_and_a_speedup_above_the_folds_is_called_noise(
        tmp_path, capsys, monkeypatch):
    pauses = iter([0.2, 0.02, 0.02, 0.2])  # one by one, stacked; then the other way round: best of each
    monkeypatch.setattr("benchmark.bench.folds.train_fold", lambda *args: time.sleep(next(pauses)))
    monkeypatch.setattr("benchmark.ensemble.train_folds_together", lambda *args: time.sleep(next(pauses)) or [])
    row = ensemble_one(bench_configuration("vae", 1, "baseline"), torch.rand(16, 1, 32, 32), 1, 2, 0, 8,
                       torch.device("cpu"), repeats=2)
    assert row.sequential_seconds == pytest.approx(0.02, abs=0.015)
    assert row.together_seconds == pytest.approx(0.02, abs=0.015)
    noisy = replace(row, folds=3, sequential_seconds=4.0, together_seconds=1.0, speedup=4.0)
    monkeypatch.setattr("benchmark.bench.folds.ensemble_one", lambda *args: noisy)
    assert main(["bench", "--families", "vae:1", "--methods", "baseline", "--steps", "2", "--warmup", "0",
                 "--batch", "8", "--device", "cpu", "--peak-size", "64", "--no-naive", "--quiet",
                 "--ensemble", "3", "--out", str(tmp_path / "out")]) == 0
    assert ("warning: a speed-up above the number of folds is timing noise, not stacking: rerun with --repeats 3 on "
            "an idle machine") in capsys.readouterr().err


def test_cli_bench_times_worker_processes_training_at_once(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "--families", "vq-vae:1", "--methods", "baseline", "--steps", "2", "--warmup", "1",
                 "--batch", "8", "--device", "cpu", "--peak-size", "64", "--no-naive", "--quiet",
                 "--workers", "2", "--precision", "fp32", "--out", str(out)])
    assert code == 0
    assert "2 worker processes for ours" in capsys.readouterr().out
    row = next(csv.DictReader((out / "throughput.csv").open()))
    assert (row["workers"], row["precision"]) == ("2", "fp32")
    # two processes each trained 2 steps of 8 images within the measured span
    assert float(row["ours_img_s"]) == pytest.approx(2 * 2 * 8 / float(row["ours_seconds"]))


def test_a_failing_bench_worker_is_one_error_line():
    images = torch.full((24, 1, 32, 32), 2.0)  # outside [0, 1]: each worker's training refuses them
    failed = r"^a benchmark worker process failed: ValueError: training images must lie in \[0, 1\]"
    with pytest.raises(BenchWorkerError, match=failed):
        ours_parallel(Configuration("vq-vae", 1), images, steps=2, warmup=0, batch=8, workers=2, precision="fp32")
    assert not multiprocessing.active_children()


def test_a_killed_bench_worker_is_named_and_its_sibling_waiting_for_it_is_stopped():
    def kill_the_first_worker() -> None:  # while it starts: its sibling then waits for it at the barrier
        deadline = time.monotonic() + 60
        while not (workers := worker_pids(os.getpid())) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(workers[0], signal.SIGKILL)

    threading.Thread(target=kill_the_first_worker, daemon=True).start()
    killed = r"^a benchmark worker process was ended by SIGKILL \(out of memory\?\)$"
    with pytest.raises(BenchWorkerError, match=killed):
        ours_parallel(Configuration("vq-vae", 1), torch.rand(16, 1, 32, 32), steps=2, warmup=0, batch=8, workers=2,
                      precision="fp32")
    assert not multiprocessing.active_children()


# Run as a script: spawned workers import it again (as __mp_main__), so they train with its _timed_fold.
DELIVERS_THEN_CRASHES = """
import atexit, os, signal, time
import torch
import benchmark.bench.throughput as throughput
from benchmark.config import Configuration

def timed_fold(configuration, images, steps, warmup, batch, config, seed, ready):
    ready()
    if seed == 0:  # gives its timing, then crashes as its interpreter exits, while its sibling still trains
        atexit.register(os.kill, os.getpid(), signal.SIGSEGV)
        return time.monotonic(), time.monotonic() + 0.1
    time.sleep(3)
    return time.monotonic() - 3, time.monotonic()

throughput._timed_fold = timed_fold
if __name__ == "__main__":
    print(round(throughput.ours_parallel(Configuration("vq-vae", 1), torch.rand(16, 1, 32, 32), 2, 0, 8, 2)))
"""


def test_a_bench_worker_that_crashes_after_giving_its_timing_does_not_fail_the_timing(tmp_path):
    (tmp_path / "delivers_then_crashes.py").write_text(DELIVERS_THEN_CRASHES)
    done = subprocess.run([sys.executable, "delivers_then_crashes.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr


def test_cli_bench_refuses_bf16_on_a_cpu_without_bf16_kernels(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: False)
    assert main(["bench", "--device", "cpu", "--precision", "bf16", "--out", str(tmp_path / "out")]) == 2
    assert "has no bfloat16 kernels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, said", [
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["--steps", "0"], "--steps must be an integer >= 1, got 0"),  # named as run names its flags, not "steps"
    (["--warmup", "-1"], "--warmup must be an integer >= 0, got -1"),
    (["--peak-size", "0"], "--peak-size must be >= 1, got 0"),
])
def test_cli_bench_names_the_flag_of_a_number_out_of_range(tmp_path, capsys, args, said):
    assert main(["bench", *args, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {said}\n"


def test_cli_bench_says_an_error_of_the_timings_as_it_is_not_of_a_flag(tmp_path, capsys, monkeypatch):
    def fails(*args):  # an error met while timing, not a refused argument, though it begins with "batch"
        raise ValueError("batch norm needs more than one value per channel")

    monkeypatch.setattr("benchmark.bench.throughput.measure_matmul_peak", fails)
    assert main(["bench", "--steps", "1", "--warmup", "0", "--families", "vae:1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: batch norm needs more than one value per channel"


@pytest.mark.parametrize("folds", ["1", "0"])  # 0 was taken as no --ensemble, and removed an earlier ensemble.csv
def test_cli_bench_rejects_an_ensemble_of_under_two_folds_before_benchmarking(tmp_path, capsys, folds):
    assert main(["bench", "--ensemble", folds, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --ensemble needs at least 2 folds, got {folds}\n"
    assert not (tmp_path / "throughput.csv").exists()


def test_flops_of_a_single_linear_layer_match_hand_count():
    batch, fan_in, fan_out = 8, 32, 10
    model = nn.Linear(fan_in, fan_out)
    # forward 2·in·out per image; backward only the weight gradient (the input needs none): 2·in·out
    assert training_flops(model, torch.randn(batch, fan_in), None) == 4 * fan_in * fan_out * batch


def _forward_hand_count(model, x):
    """2·MACs of every Conv2d / ConvTranspose2d / Linear in one forward pass, from the layer shapes."""
    counts = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            flops = 2 * module.in_features * module.out_features * inputs[0].shape[0]
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            flops = 2 * module.in_channels * module.out_channels * k * output[0, 0].numel() * output.shape[0]
        elif isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a k×k patch
            k = module.kernel_size[0] * module.kernel_size[1]
            flops = 2 * module.in_channels * module.out_channels * k * inputs[0][0, 0].numel() * inputs[0].shape[0]
        else:
            return
        counts.append(flops)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return counts


def test_flops_of_the_gaussian_vae_match_hand_count():
    torch.manual_seed(0)
    model = build_model("vae", 1, "baseline")
    x = torch.rand(4, 1, 32, 32)
    layers = _forward_hand_count(model, x)
    forward = sum(layers)
    # SPEC widths 32, 64, 128, 256 on 32x32: conv 1·32·9·16² + 32·64·9·8² + 64·128·9·4² + 128·256·9·2²,
    # μ and log σ² 2·(1024·16), z → 1024, transposed convs 256·128·16·2² + 128·64·16·4² + 64·32·16·8² + 32·1·16·16²
    per_image = 2 * (32 * 9 * 256 + 3 * 32 * 64 * 9 * 64 + 2 * 1024 * 16 + 16 * 1024 + 3 * 256 * 128 * 16 * 4
                     + 32 * 16 * 256)
    assert forward == per_image * len(x)
    # backward = grad-input + grad-weight (2× forward), except the first conv, whose input needs no gradient
    assert training_flops(model, x, None) == 3 * forward - layers[0]


def test_naive_uniform_masks_have_exactly_k_pixels_like_the_sampler():
    sampler = PixelSampler("uniform", 32)  # k = the exact grid's count
    k = sampler.fixed_count
    naive = naive_masks(sampler, 64, np.random.default_rng(0))
    ours = sampler.sample(64, torch.Generator().manual_seed(0), "cpu")
    assert naive.shape == ours.shape == (64, 1, 32, 32)
    assert set(naive.unique().tolist()) == {0.0, 1.0}
    assert (naive.flatten(1).sum(1) == k).all() and (ours.flatten(1).sum(1) == k).all()


def test_naive_exact_masks_are_the_grid():
    sampler = PixelSampler("exact", 32)
    naive = naive_masks(sampler, 3, np.random.default_rng(0))
    assert torch.equal(naive, sampler.sample(3, torch.Generator(), "cpu"))


@pytest.mark.parametrize("sampling", ["uniform", "gaussian"])
def test_naive_power_law_counts_follow_the_samplers_distribution(sampling):
    sampler = PixelSampler(sampling, 32, exponent=20.0)
    n = 2000
    naive = naive_masks(sampler, n, np.random.default_rng(1)).flatten(1).sum(1).numpy()
    ours = sampler.sample(n, torch.Generator().manual_seed(1), "cpu").flatten(1).sum(1).numpy()
    assert stats.ks_2samp(naive, ours).pvalue > 1e-3
    if sampling == "uniform":  # E[k] = D / (a + 1)
        assert abs(naive.mean() - 1024 / 21) < 4 and abs(ours.mean() - 1024 / 21) < 4


def test_bench_configuration_conditions_every_method():
    assert bench_configuration("vae", 1, "baseline").method.sampler(32) is None
    assert bench_configuration("vae", 1, "multidecoder").method.sampler(32).sampling == "uniform"
    assert bench_configuration("vq-vae", 2, "single").method.exponent == 40.0


def test_models_are_named_by_family_and_config():
    assert parse_models(["vae", "vq-vae:02", "vae:1"]) == [("vae", 1), ("vae", 2), ("vq-vae", 2)]


@pytest.mark.parametrize("kwargs, message", [
    ({"families": ["gan"]}, "unknown model family 'gan'; choose one of: vae, vq-vae"),
    ({"families": ["vae:3"]}, "unknown vae config 3; choose one of: 1, 2"),
    ({"families": ["vae:x"]}, "unknown vae config 'x'; choose one of: 1, 2"),
    ({"methods": ["triple"]}, "unknown method"),
    ({"steps": 0}, "steps"),
    ({"warmup": -1}, "warmup"),
    ({"batch": 0}, "batch"),
    ({"device": "tpu"}, "unknown device"),
    ({"batch": 4001}, "batch 4001 is more than the 4,000 training images of mnist5k; give at most 4000"),
])
def test_bad_input_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_bench(**kwargs)


@pytest.mark.parametrize("args", [["--families", "gan"], ["--methods", "triple"], ["--steps", "0"]])
def test_cli_bad_input_exits_2_and_writes_nothing(args, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_refuses_an_output_folder_it_cannot_make_before_timing_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("benchmark.bench.run_bench", lambda **kwargs: pytest.fail("timed before checking --out"))
    (tmp_path / "file").write_text("")
    assert main(["bench", "--out", str(tmp_path / "file" / "out")]) == 2
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'file' / 'out'}: the folder cannot be made "
                                       f"({tmp_path / 'file'} is not a folder)\n")


def test_a_file_error_without_a_path_is_its_message(capsys, monkeypatch):
    def missing(args):  # as torchvision's folder datasets raise it
        raise FileNotFoundError("Couldn't find any class folder in /data")

    monkeypatch.setattr("benchmark.cli.run.cmd_suites", missing)
    assert main(["suites"]) == 2
    assert capsys.readouterr().err == "error: Couldn't find any class folder in /data\n"


def test_a_full_disk_is_one_line_and_other_os_errors_without_a_path_keep_their_traceback(capsys, monkeypatch):
    def raises(error):
        def handler(args):
            raise error
        return handler

    monkeypatch.setattr("benchmark.cli.run.cmd_suites", raises(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    assert main(["suites"]) == 2
    assert capsys.readouterr().err == f"error: {os.strerror(errno.ENOSPC)}\n"
    monkeypatch.setattr("benchmark.cli.run.cmd_suites", raises(TimeoutError("timed out")))  # not the user's to fix
    with pytest.raises(TimeoutError):
        main(["suites"])


def test_bench_warns_when_other_work_shared_the_cores_while_it_timed():
    why = ("bench timed", "its figures are low and its speed-ups unsteady; rerun it on an idle machine")
    assert busy_note(*why, load=2.9, cpus=2) is None  # bench itself keeps about one per core busy
    assert busy_note(*why, load=4.9, cpus=2, ours=4) is None  # workers beyond the cores keep up one each
    assert busy_note(*why, load=4.6, cpus=2) == (
        "warning: the machine was busy while bench timed (load average 4.6 on 2 cores): other work took cores from "
        "it, so its figures are low and its speed-ups unsteady; rerun it on an idle machine")


SLOW_NAIVE = """
import os
import time


def naive_train(*args):  # a naive timing that takes long, as VQ-VAE 3's does on a CPU
    os.write(1, b"naive\\n")
    time.sleep(60)
"""

BENCH = """
import sys

import slow_naive
import benchmark.bench.throughput
from benchmark.cli import main

if __name__ == "__main__":  # not in the naive process, which imports this module again
    benchmark.bench.throughput.naive_train = slow_naive.naive_train
    sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_the_naive_timing_stops_the_bench_at_once(tmp_path):
    # SIGTERM to the bench alone (`timeout`, Slurm) left the naive process timing: the bench waited for it
    (tmp_path / "slow_naive.py").write_text(textwrap.dedent(SLOW_NAIVE))
    (tmp_path / "bench.py").write_text(textwrap.dedent(BENCH))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    process = subprocess.Popen([sys.executable, "bench.py", "bench", "--families", "vq-vae:1", "--methods", "baseline",
                                "--steps", "1", "--warmup", "0", "--batch", "8", "--peak-size", "64", "--device", "cpu",
                                "--out", str(tmp_path / "out"), "--quiet"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.stdout.readline() != "naive\n":
        assert process.poll() is None, process.stderr.read()
    stopped = time.monotonic()
    process.terminate()
    _, err = process.communicate(timeout=90)
    assert process.returncode == 130 and "interrupted: nothing was written" in err, err
    assert time.monotonic() - stopped < 20  # not the naive timing's 60 s


SLOW_OURS = """
import os
import time


def timed_fold(*args):  # a worker's timing that takes long
    os.write(1, b"ours\\n")
    time.sleep(60)
"""

BENCH_SLOW_OURS = """
import sys

import slow_ours
import benchmark.bench.throughput
from benchmark.cli import main

benchmark.bench.throughput._timed_fold = slow_ours.timed_fold  # in the workers too, which import this module

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("timing", ["naive", "ours"])
def test_a_bench_killed_by_kill_9_leaves_no_timing_running(tmp_path, timing):
    # its naive process or its workers went on training for minutes, a core each, for nobody
    (tmp_path / "slow_naive.py").write_text(textwrap.dedent(SLOW_NAIVE))
    (tmp_path / "slow_ours.py").write_text(textwrap.dedent(SLOW_OURS))
    (tmp_path / "bench.py").write_text(textwrap.dedent(BENCH if timing == "naive" else BENCH_SLOW_OURS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    args = ["--workers", "2", "--no-naive"] if timing == "ours" else []
    process = subprocess.Popen([sys.executable, "bench.py", "bench", "--families", "vq-vae:1", "--methods", "baseline",
                                "--steps", "1", "--warmup", "0", "--batch", "8", "--peak-size", "64", "--device", "cpu",
                                "--out", str(tmp_path / "out"), "--quiet", *args], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.stdout.readline() != f"{timing}\n":
        assert process.poll() is None, process.stderr.read()
    children = worker_pids(process.pid)
    process.kill()
    process.wait()
    assert children and stopped(children, timeout=20)  # not the timing's 60 s
