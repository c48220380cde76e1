"""`python -m benchmark report` on a real smoke run."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import assert_figure, cli, one_line_error

from benchmark.data import load_dataset, pixel_digest
from benchmark.export import load_checkpoint
from benchmark.report import write_report
from benchmark.train import device_name, resolve_device


def report(cwd, *args):
    return cli(cwd, "report", *args)


def test_report_on_a_smoke_run_matches_the_per_fold_results(smoke_run):
    assert report(smoke_run, "--suite", "smoke") == 0
    out = smoke_run / "reports" / "smoke"
    table = pd.read_csv(out / "table.csv")
    folds = pd.read_csv(smoke_run / "results" / "smoke.csv")
    assert len(table) == 6 and (table["recon_n"] == 5).all()
    for _, row in table.iterrows():
        values = folds.loc[folds["config_id"] == row["config_id"], "recon"].to_numpy()
        assert row["recon_mean"] == pytest.approx(values.mean(), rel=1e-12)  # both read back from CSV text
        assert np.isclose(row["recon_var"], values.var(ddof=0), rtol=1e-12)
    # how the units trained, for a reader to reproduce the table
    precision = json.loads((smoke_run / "results" / "smoke_meta.json").read_text())["precision"]  # bf16 on a GPU
    assert (f"\n\nTrained with AdamW (lr 0.001, weight decay 0.01) in {precision} on "
            f"`{device_name(resolve_device('auto'))}` (torch {torch.__version__}); 80 validation images per fold; "
            "run by `python -m benchmark run --suite smoke") in (out / "index.md").read_text()
    markdown = (out / "table.md").read_text()
    first = table.iloc[0]
    assert f"{first['recon_mean']:.4f} ± {first['recon_var']:.1e}" in markdown
    tex = (out / "table.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    figures = list((out / "figures").glob("*.png"))
    kinds = {p.name.split("_")[0] for p in figures}
    assert {"curves", "reconstruction", "error", "sampling"} <= kinds
    for path in figures:
        assert_figure(path, min_width=100)
        assert_figure(path.with_suffix(".pdf"))


def test_report_counts_the_figures_it_draws_on_stderr_unless_quiet(smoke_run, tmp_path, capsys):
    assert report(smoke_run, "--suite", "smoke", "--reports-dir", str(tmp_path)) == 0
    lines = capsys.readouterr().err.splitlines()  # a log's lines: stderr is no terminal here
    # the curves, the sampling types, each of the 6 configurations' checkpoints, and the prior's samples where
    # `prior` ran on this run (its tests share the smoke run)
    steps = 2 + 6 + (smoke_run / "results" / "smoke_prior.csv").is_file()
    assert lines[0].startswith("report smoke:   0%|") and lines[0].endswith(f"| 0/{steps} [00:00]")
    assert re.fullmatch(rf"report smoke: 100%\|#+\| {steps}/{steps} \[\d\d:\d\d\]", lines[-1])
    assert report(smoke_run, "--suite", "smoke", "--reports-dir", str(tmp_path), "--quiet") == 0
    assert capsys.readouterr().err == ""
    assert report(smoke_run, "--suite", "smoke", "--reports-dir", str(tmp_path), "--no-checkpoints") == 0
    without_checkpoints = steps - 6  # the curves, the sampling types and the prior's samples
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"report smoke: 100%|##########| {without_checkpoints}/{without_checkpoints} [")


def test_report_of_an_unknown_suite_is_one_line_and_exit_2(tmp_path, capsys):
    assert report(tmp_path, "--suite", "nothing") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no results for suite 'nothing' in results/ (suites with "
                                               "results: none yet; a run exports them once it has finished a unit); "
                                               "run it first: ")
    assert err[0].endswith("a suite file, or with `--name nothing` for a variant of a built-in suite")
    assert not (tmp_path / "reports" / "nothing").exists()
    assert report(tmp_path, "--suite", "../etc") == 2  # not a name a run can give
    assert capsys.readouterr().err.endswith("run it first: `python -m benchmark run --suite FILE.toml` for a suite "
                                            "file\n")
    assert report(tmp_path, "--suite", "smoke,smoke-bf") == 2  # a list, as --objectives takes one
    assert capsys.readouterr().err == ("error: --suite names one suite: give each its own, --suite smoke "
                                       "--suite smoke-bf\n")


def test_a_report_of_every_suite_without_results_says_whether_their_folder_is_there(tmp_path, capsys):
    assert report(tmp_path) == 2  # it said "no results in results/; run ... first"
    assert one_line_error(capsys) == ("error: no folder results/: run `python -m benchmark run --suite smoke` first, "
                                      "or give --results-dir the folder a run exported its results to (results/ where "
                                      "it ran)")
    for suite in ((), ("--suite", "smoke")):  # a folder given, and not there: mistyped, not one to "run it first" into
        assert report(tmp_path, *suite, "--results-dir", "nowhere") == 2
        assert one_line_error(capsys) == ("error: no folder nowhere/ (--results-dir): give the folder a run exported "
                                          "its results to (results/ where it ran)")
    (tmp_path / "results").mkdir()
    assert report(tmp_path) == 2
    assert one_line_error(capsys) == "error: no results in results/; run `python -m benchmark run --suite smoke` first"
    (tmp_path / "out" / "empty").mkdir(parents=True)  # the run it gives exports there, where this report looks
    assert report(tmp_path, "--results-dir", "out/empty") == 2
    assert one_line_error(capsys) == ("error: no results in out/empty/; run `python -m benchmark run --suite smoke "
                                      "--results-dir out/empty` first")


def test_report_from_another_folder_finds_the_checkpoints(smoke_run, tmp_path, capsys):
    # results/smoke.csv records checkpoint paths relative to where `run` ran
    out = tmp_path / "elsewhere"
    assert report(tmp_path, "--suite", "smoke", "--results-dir", str(smoke_run / "results"),
                  "--reports-dir", str(out)) == 0
    captured = capsys.readouterr()
    assert "no checkpoint figures" not in captured.out + captured.err
    assert list((out / "smoke" / "figures").glob("reconstruction_*.png"))


def test_write_report_from_a_notebook_draws_what_the_command_draws(smoke_run, tmp_path):
    # Without images or a model loader: the run's test images and the stored weights, as `report` does
    summary = write_report(smoke_run / "results", "smoke", tmp_path / "nb")
    names = {path.name for path in summary.files}
    assert "sampling_types.png" in names
    assert sum(name.startswith("reconstruction_") and name.endswith(".png") for name in names) == 6
    assert sum(name.startswith("error_vs_observed_") and name.endswith(".png") for name in names) == 4  # conditioned
    assert not summary.warnings
    tables_only = write_report(smoke_run / "results", "smoke", tmp_path / "tables", checkpoints=False)
    assert not any(path.name.startswith(("reconstruction_", "error_vs")) for path in tables_only.files)


def test_a_suite_file_grown_since_its_run_is_reported_with_the_run_that_trains_the_rest_in_its_folders(
        smoke_run, tmp_path, capsys):
    # the command given left out --results-dir and the study's folder: copied, it trained the whole file anew
    # in results/ and studies/
    results = tmp_path / "out" / "res"
    results.mkdir(parents=True)
    shutil.copy(smoke_run / "results" / "smoke.csv", results)
    meta = json.loads((smoke_run / "results" / "smoke_meta.json").read_text())
    recorded = "python -m benchmark run --suite sub/my.toml --results-dir out/res --studies-dir out/st --quiet"
    (results / "smoke_meta.json").write_text(json.dumps({**meta, "command": recorded}))
    (tmp_path / "sub").mkdir()
    grown = 'name = "smoke"\n[[configurations]]\nfamily = "vae"\nconfig = 2\n'
    for path in ("sub/my.toml", "sub/other.toml"):
        (tmp_path / path).write_text(grown)
    for path, command in (("sub/my.toml", recorded),  # the file that run ran: its command, as recorded
                          ("sub/other.toml", "python -m benchmark run --suite sub/other.toml --results-dir out/res")):
        assert report(tmp_path, "--suite", path, "--results-dir", "out/res", "--no-figures") == 0
        warning = next(line for line in capsys.readouterr().out.splitlines() if "the results do not have" in line)
        assert warning.startswith(f"  warning: {path} lists ")
        assert warning.endswith(f"the last run to export them listed others; `{command}` trains what is missing and "
                                "exports them")


def test_weights_gone_since_the_run_are_one_warning_that_says_how_to_report_without_them(smoke_run, tmp_path):
    shutil.copytree(smoke_run / "results", tmp_path / "results")
    shutil.rmtree(tmp_path / "results" / "smoke" / "artifacts")
    summary = write_report(tmp_path / "results", "smoke", tmp_path / "out")
    gone = [w for w in summary.warnings if "checkpoint" in w]
    assert gone == [f"no checkpoint figures of 6 configurations ({', '.join(summary.configurations)}): their "
                    "best-epoch weights are neither where smoke.csv records them nor in "
                    f"{tmp_path / 'results' / 'smoke' / 'artifacts'} (moved or deleted since the run, or saved on "
                    "another machine: machines running one suite share a folder as --artifacts-dir); "
                    "--no-checkpoints makes the report without them"]


def test_report_takes_a_suite_file_for_its_name(smoke_run, tmp_path, capsys):
    (tmp_path / "mine.toml").write_text('name = "smoke"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n')
    assert report(tmp_path, "--suite", "mine.toml", "--results-dir", str(smoke_run / "results"),
                  "--reports-dir", str(tmp_path / "out"), "--no-figures") == 0
    assert (tmp_path / "out" / "smoke" / "table.csv").exists()
    # as `run` and `suites` take it, and told of what it lists that the results lack, as a .toml is
    (tmp_path / "Mine.TOML").write_text((tmp_path / "mine.toml").read_text())
    capsys.readouterr()
    assert report(tmp_path, "--suite", "Mine.TOML", "--results-dir", str(smoke_run / "results"),
                  "--reports-dir", str(tmp_path / "out2"), "--no-figures") == 0
    assert (tmp_path / "out2" / "smoke" / "table.csv").exists()
    assert "warning: Mine.TOML lists 6 configuration(s) the results do not have" in capsys.readouterr().out
    # named by its file and by its name: one report, not the same one written twice
    assert report(tmp_path, "--suite", "mine.toml", "--suite", "smoke", "--results-dir", str(smoke_run / "results"),
                  "--reports-dir", str(tmp_path / "out3"), "--no-figures") == 0
    assert capsys.readouterr().out.count("smoke: ") == 1


def test_a_suite_file_s_results_beside_it_not_here_are_pointed_to(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "results").mkdir(parents=True)
    (project / "mine.toml").write_text('name = "mine"\n[[configurations]]\nfamily = "vae"\nconfig = 1\n')
    (project / "results" / "mine.csv").write_text("config_id\n")  # its run was in project/
    (project / "sub").mkdir()
    assert report(project / "sub", "--suite", "../mine.toml") == 2
    # it said that there were no results and to run the suite first, though a run had exported them
    assert one_line_error(capsys) == (
        "error: no results for suite 'mine' in results/, but ../results/ beside ../mine.toml has them: give "
        "`--results-dir ../results` (a run exports to results/ in the folder it ran in)")
    assert report(project, "--suite", "mine.toml") == 2  # there, they are found (and, here, found empty)
    assert "suite 'mine' has no results yet" in one_line_error(capsys)


def test_report_shows_a_few_missing_configurations_and_points_to_the_full_list(smoke_run, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("smoke_meta.json", "smoke_history.csv"):
        shutil.copy(smoke_run / "results" / name, results / name)
    folds = pd.read_csv(smoke_run / "results" / "smoke.csv")
    folds[folds["fold"] != 4].to_csv(results / "smoke.csv", index=False)  # every configuration short of a fold
    assert report(tmp_path, "--suite", "smoke", "--results-dir", str(results), "--no-figures") == 0
    out = capsys.readouterr().out
    assert out.count("  missing: ") == 5 and "and 1 more configuration short of folds" in out
    assert len((tmp_path / "reports" / "smoke" / "missing.txt").read_text().splitlines()) == 1 + 6


def test_weights_go_to_the_artifacts_dir_and_the_report_finds_them(tmp_path, capsys):
    (tmp_path / "one.toml").write_text('name = "one"\ndataset = "mnist5k"\nlimit = 100\nfolds = 2\n[train]\n'
                                       'epochs = 1\nbatch_size = 32\n[[configurations]]\nfamily = "vq-vae"\n'
                                       'config = 1\nmethod = "baseline"\n')
    shared = tmp_path / "shared" / "weights"
    assert cli(tmp_path, "run", "--suite", "one.toml", "--artifacts-dir", str(shared), "--quiet") == 0
    folds = pd.read_csv(tmp_path / "results" / "one.csv")
    stored = [p for p in shared.iterdir() if p.is_file()]
    assert len(stored) == 2 and not (tmp_path / "results" / "one" / "artifacts").exists()
    assert sorted(folds["checkpoint"]) == sorted(str(p) for p in stored)
    meta = json.loads((tmp_path / "results" / "one_meta.json").read_text())
    assert (meta["image_channels"], meta["image_size"]) == (1, 32)  # MNIST padded to 32 × 32
    # the study's digest of the pixels its folds split, which `prior` compares with the images it rebuilds them from
    study = optuna.load_study(study_name="suite-one", storage=f"sqlite:///{tmp_path / 'studies' / 'one.db'}")
    assert meta["images_digest"] == study.user_attrs["images_digest"] == pixel_digest(
        load_dataset("mnist5k", limit=100).train)
    assert report(tmp_path, "--suite", "one") == 0
    assert pd.read_csv(tmp_path / "reports" / "one" / "table.csv")["weights"].tolist() == [
        sum(p.numel() for p in load_checkpoint(stored[0])[0].parameters())]
    captured = capsys.readouterr()
    assert "no checkpoint figures" not in captured.out + captured.err
    assert list((tmp_path / "reports" / "one" / "figures").glob("reconstruction_*.png"))


def test_report_of_every_suite_skips_one_with_nothing_done_yet(smoke_run, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("smoke.csv", "smoke_meta.json", "smoke_history.csv"):
        shutil.copy(smoke_run / "results" / name, results / name)
    waiting = pd.read_csv(smoke_run / "results" / "smoke.csv").assign(state="WAITING")
    waiting.to_csv(results / "started.csv", index=False)  # e.g. `run --suite full` stopped in its first unit
    assert report(tmp_path, "--results-dir", str(results), "--no-figures") == 0
    captured = capsys.readouterr()
    assert "started: skipped: suite 'started' has no completed units yet (30 WAITING)\n" in captured.err
    assert (tmp_path / "reports" / "smoke" / "table.csv").exists()
    # where its run recorded its command, the report says how to go on with it
    (results / "started_meta.json").write_text(json.dumps({"command": "python -m benchmark run --suite full"}))
    assert report(tmp_path, "--suite", "started", "--results-dir", str(results), "--no-figures") == 2
    assert capsys.readouterr().err == ("error: suite 'started' has no completed units yet (30 WAITING); to go on with "
                                       "it, run the command it recorded: `python -m benchmark run --suite full`\n")
    # one whose results cannot be read is skipped too, but the exit status says so, for a script to see
    (results / "cut.csv").write_text("config_id,fold,state\nvae/1/baseline,0,COMP")
    assert report(tmp_path, "--results-dir", str(results), "--no-figures") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"cut: skipped: {results / 'cut.csv'} does not end with a newline")
    assert err[-1] == "not reported: cut (why: above)" and "started: skipped: " in "".join(err)
    (results / "cut.csv").unlink()
    # Named, it is an error; alone, there is nothing to report.
    assert report(tmp_path, "--results-dir", str(results), "--suite", "started", "--no-figures") == 2
    (results / "smoke.csv").unlink()
    assert report(tmp_path, "--results-dir", str(results), "--no-figures") == 2
    assert "nothing to report" in capsys.readouterr().err


def test_broken_result_files_are_named_for_what_is_wrong_with_them(smoke_run, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(smoke_run / "results", results, ignore=shutil.ignore_patterns("smoke", "*.pt"))
    history = results / "smoke_history.csv"
    whole = history.read_text()
    broken = {'config_id,fold,epoch\n"unclosed,0,1\n': " is not a validation history CSV",
              whole[:-3]: " does not end with a newline",  # cut short
              "config_id,fold,epoch\nvae/1/baseline,0,1\n": " lacks the columns latent, recon; is it a `run` export?",
              "config_id,fold,epoch,latent\nvae/1/baseline,0,1,0.5\n": " lacks the column recon; is it a `run` export?",
              whole.replace(",1,", ",one,", 1): ": column 'epoch' holds values that are not numbers (line 2: 'one')",
              # a column only some panels draw on is checked too
              "config_id,fold,epoch,latent,recon,total\nvae/1/baseline,0,1,0.5,0.1,x\n":
                  ": column 'total' holds values that are not numbers (line 2: 'x')",
              "\n   \n": None}
    for text, why in broken.items():
        history.write_text(text)
        assert report(tmp_path, "--results-dir", str(results), "--suite", "smoke", "--no-checkpoints") == 0
        shown = ("warning: no validation history in smoke_history.csv: validation curves skipped" if why is None
                 else f"warning: validation curves skipped: {history}{why}")
        assert shown in capsys.readouterr().out
    (results / "smoke.csv").write_text("config_id,family\n")  # a header alone
    assert report(tmp_path, "--results-dir", str(results), "--suite", "smoke", "--no-figures") == 2
    assert one_line_error(capsys).endswith("smoke.csv holds no rows)")
    (results / "smoke.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert report(tmp_path, "--results-dir", str(results), "--suite", "smoke", "--no-figures") == 2
    assert "smoke.csv is not a results CSV" in one_line_error(capsys)
    # every suite skipped, for a reason of its own: the last line does not claim there was no unit done
    assert report(tmp_path, "--results-dir", str(results), "--no-figures") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: nothing to report: every suite in {results}/ was skipped (why: above)")


def test_an_output_folder_that_is_a_file_is_one_line_and_exit_2(smoke_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    assert report(tmp_path, "--results-dir", str(smoke_run / "results"), "--reports-dir",
                  str(tmp_path / "notes.txt"), "--no-figures") == 2
    assert one_line_error(capsys) == (f"error: --reports-dir {tmp_path / 'notes.txt'}: the folder "
                                      f"{tmp_path / 'notes.txt' / 'smoke'} cannot be made ({tmp_path / 'notes.txt'} "
                                      "is not a folder)")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_mistyped_suite_named_after_another_writes_neither_report(smoke_run, tmp_path, capsys):
    # `--suite smoke --suite smok` wrote smoke's report, then refused smok
    assert report(tmp_path, "--suite", "smoke", "--suite", "smok", "--results-dir", str(smoke_run / "results"),
                  "--no-figures") == 2
    assert one_line_error(capsys).startswith("error: no results for suite 'smok' (did you mean 'smoke'?)")
    assert not (tmp_path / "reports").exists()
    # nor one whose results cannot be read (a crashed run's empty export, say)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "empty.csv").write_text("")
    shutil.copy(smoke_run / "results" / "smoke.csv", tmp_path / "results")
    assert report(tmp_path, "--suite", "smoke", "--suite", "empty", "--no-figures") == 2
    assert one_line_error(capsys) == "error: suite 'empty' has no results yet (results/empty.csv is empty)"
    assert not (tmp_path / "reports").exists()


def test_ctrl_c_during_a_report_says_it_was_dropped(smoke_run, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("benchmark.report.write_report", interrupted)
    assert report(smoke_run, "--suite", "smoke", "--reports-dir", str(tmp_path)) == 130
    assert capsys.readouterr().err == ("interrupted: the report being written was dropped (an earlier one stays "
                                       "as it was); run the same command again to write it\n")


def test_sigterm_while_a_report_is_put_in_place_comes_once_it_is_whole_and_says_so(smoke_run, tmp_path):
    code = textwrap.dedent("""
        import os, signal, sys

        replace = os.replace
        def terminated(source, target):  # as `timeout` ends a report while its files are renamed into place
            os.kill(os.getpid(), signal.SIGTERM)
            replace(source, target)

        os.replace = terminated
        from benchmark.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, "report", "--suite", "smoke", "--reports-dir", str(tmp_path),
                           "--no-figures"], cwd=smoke_run, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 130, done.stderr
    assert done.stderr == f"interrupted once the report in {tmp_path / 'smoke'} was written\n"
    assert sorted(path.name for path in (tmp_path / "smoke").iterdir()) == sorted(
        [".report.lock", "comparison.md", "comparison.tex", "index.md", "table.csv", "table.md", "table.tex"])


def test_sigterm_during_a_report_drops_it_like_ctrl_c_leaving_the_earlier_one(smoke_run, tmp_path):
    assert report(smoke_run, "--suite", "smoke", "--reports-dir", str(tmp_path), "--no-checkpoints") == 0
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    code = textwrap.dedent("""
        import os, signal, sys, time
        import benchmark.figures

        def terminated(*args, **kwargs):  # as `timeout` or Slurm ends a report while it draws
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        benchmark.figures.validation_curves = terminated
        from benchmark.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, "report", "--suite", "smoke", "--reports-dir", str(tmp_path),
                           "--no-checkpoints"], cwd=smoke_run, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 130, done.stderr
    assert done.stderr.endswith("interrupted: the report being written was dropped (an earlier one stays as it was); "
                                "run the same command again to write it\n")
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before  # no staging left
    assert not list(tmp_path.rglob(".partial-*"))
