"""The report: results/<suite>{.csv,_history.csv,_meta.json} → reports/<suite>/.

Writes ``table.csv`` (tidy numbers), ``table.tex`` (booktabs), ``table.md``,
``comparison.{md,tex}`` (each method against its baseline, when a suite has one), ``index.md``,
``missing.txt`` (only when units are missing) and figures under ``figures/``. Everything
is validated before anything is written (``benchmark.results``), so an unknown or empty suite
leaves no files. The table's numbers are built here; ``benchmark.tables`` writes them out as text,
``benchmark.caveats`` says what limits them and ``benchmark.report_index`` writes index.md.
After ``python -m benchmark prior``: a "Prior NLL" column and ``figures/generated_*`` (VQ-VAE).

The sampling figure and the checkpoint figures (reconstruction grids, error vs observed pixels)
are drawn on held-out test images of the run's dataset with each configuration's stored weights;
a caller may pass other images or another model loader::

    write_report(results_dir, suite, out_dir)                       # what `python -m benchmark report` writes
    write_report(results_dir, suite, out_dir, images=my_images[:8])  # other images
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from filelock import FileLock

from benchmark.caveats import caveats
from benchmark.conditioning import PixelSampler
from benchmark.export import load_checkpoint
from benchmark.models import FAMILIES, FAMILY_TITLES, METHODS, weight_count
from benchmark.params_from import load_search_study
from benchmark.prior_stage import prior_figures
from benchmark.processes import signals_deferred
from benchmark.progress import progress_bar
from benchmark.report_index import OPTUNA_FIGURES, count_range, index_text
from benchmark.results import (MissingUnits, SuiteResults, artifacts_beside, checkpoint_file, find_missing, load_suite,
                               run_dataset, safe_name)
from benchmark.stats import (COMPARED, compare_with_baseline, comparison_wide, completed, parameter_text,
                             reference_baseline, summarise)
from benchmark.storage import METRICS_VERSION, changes_to, gone, password_hidden, since_changes
from benchmark.studies import StudyPlace
from benchmark.study_plots import plot_dir, plot_study
from benchmark.tables import (
    comparison_cells,
    comparison_latex,
    comparison_markdown,
    comparison_note,
    latex_table,
    markdown_table,
)

if TYPE_CHECKING:
    import torch
    from tqdm import tqdm

    from benchmark.caveats import Searches
    from benchmark.models import MultitaskVAE


SAMPLING_ORDER = ("", "exact", "uniform", "gaussian")
TEST_IMAGES = 16  # held-out images the figures draw on (the reconstruction grid shows the first 8)
TABLE_FILES = ("table.csv", "table.tex", "table.md", "comparison.md", "comparison.tex", "missing.txt")
LOCK_FILE = ".report.lock"  # held while a report is built and moved in
FIGURE_PATTERNS = ("curves_*", "reconstruction_*", "error_vs_observed_*", "sampling_types.*", "generated_*")


@dataclass
class ReportSummary:
    """What ``write_report`` wrote and what it could not report."""

    suite: str
    out_dir: Path
    files: list[Path]
    configurations: list[str]
    missing: list[MissingUnits]
    warnings: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)   # what limits the numbers (``caveats``)

    @property
    def complete(self) -> bool:
        return not self.missing


def build_table(suite: SuiteResults) -> pd.DataFrame:
    """One row per configuration in the results, in thesis order (model → config → method →
    parameters): parameters, ``<metric>_{mean,var,std,n}``, ``<metric>_<field>`` of the comparison
    with the baseline (``stats.compare_with_baseline``), ``prior_*`` (``merge_prior``)."""
    summary = summarise(suite.results)
    repeats = int(suite.meta.get("repeats", 1) or 1)
    comparison = comparison_wide(compare_with_baseline(suite.results, k=int(suite.meta["folds"]), repeats=repeats))
    table = summary.merge(comparison, on="config_id", how="left")
    for metric in COMPARED:  # no baseline, or no fold paired: no test, so no claim either way
        untested = table[f"{metric}_n_pairs"].fillna(0) == 0
        table[f"{metric}_n_pairs"] = table[f"{metric}_n_pairs"].astype("Int64").mask(untested)
        table[f"{metric}_significant"] = table[f"{metric}_significant"].astype("boolean").mask(untested)
    table.insert(table.columns.get_loc("n") + 1, "complete", table["n"] == suite.expected_folds)
    table.insert(1, "model", table["family"].map(lambda f: FAMILY_TITLES.get(f, f)))
    table.insert(table.columns.get_loc("params_from"), "parameters", table.apply(parameter_text, axis=1))
    table.insert(table.columns.get_loc("count") + 1, "observed", observed_pixels(table, suite.meta.get("image_size")))
    table.insert(table.columns.get_loc("seconds_mean"), "weights",
                 model_weights(table, suite.meta.get("image_channels"), suite.meta.get("image_size")))
    # Rows must be told apart in the LaTeX/Markdown tables even when the label does not show
    # the difference (e.g. only the SoftAdapt β differs): then the label names the config id.
    same = table.duplicated(["family", "config", "method", "parameters"], keep=False)
    table.loc[same, "parameters"] += " (" + table.loc[same, "config_id"] + ")"
    references = [reference_baseline(family, config, rows) for (family, config), rows in
                  table.groupby(["family", "config"])]
    keys = pd.DataFrame({
        "family": table["family"].map(lambda f: FAMILIES.index(f) if f in FAMILIES else len(FAMILIES)),
        "config": table["config"],
        "method": table["method"].map(lambda m: METHODS.index(m) if m in METHODS else len(METHODS)),
        "other": ~table["config_id"].isin(references),  # the baseline that the rest are compared with leads
        "sampling": table["sampling"].map(lambda s: SAMPLING_ORDER.index(s) if s in SAMPLING_ORDER else 9),
        "softadapt": table["softadapt"].astype(bool),
        "exponent": table["exponent"], "count": table["count"], "parameters": table["parameters"]})
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="first").index
    return merge_prior(table.loc[order].reset_index(drop=True), suite.prior)


def merge_prior(table: pd.DataFrame, prior: pd.DataFrame | None) -> pd.DataFrame:
    """The report table plus ``prior_{nll_nats,bits_per_code,uniform_nats,code_perplexity,fold,epochs}``
    columns (NaN for rows without a prior, and the perplexity of a prior stage older than it);
    unchanged when the prior stage has not run."""
    if prior is None:
        return table
    names = {"val_nll_nats": "prior_nll_nats", "val_bits_per_code": "prior_bits_per_code",
             "uniform_nats": "prior_uniform_nats", "code_perplexity": "prior_code_perplexity", "fold": "prior_fold",
             "epochs": "prior_epochs"}
    columns = prior.reindex(columns=["config_id", *names]).rename(columns=names)
    merged = table.merge(columns.drop_duplicates("config_id", keep="last"), on="config_id", how="left")
    return merged.astype({"prior_fold": "Int64", "prior_epochs": "Int64"})


def observed_pixels(table: pd.DataFrame, image_size: int | None) -> pd.Series:
    """The constant number of pixels k a Multidecoder's conditioned decoder observes: the
    count given, else the exact grid's for ``image_size`` (unknown without it); NaN for other methods."""
    default = PixelSampler("exact", int(image_size)).fixed_count if image_size else math.nan
    constant = table["method"] == "multidecoder"
    return table["count"].where(constant).mask(constant & table["count"].isna(), default).astype("Int64")


def model_weights(table: pd.DataFrame, channels: int | None, image_size: int | None) -> pd.Series:
    """Each row's trainable weights (``models.weight_count``) for images of ``channels`` ×
    ``image_size``²; unknown (NA) without them (an export from before they were recorded)."""
    if not channels or not image_size:
        return pd.Series(pd.NA, index=table.index, dtype="Int64")
    keys = list(zip(table["family"], table["config"].astype(int), table["method"]))
    counts = {key: weight_count(*key, int(channels), int(image_size)) for key in set(keys)}
    return pd.Series([counts[key] for key in keys], index=table.index, dtype="Int64")


def _training_text(suite: SuiteResults) -> str:
    """``1,000 training images per fold, 3 epochs, batch 32``: a smoke run must not read as a full one."""
    meta, done = suite.meta, completed(suite.results)
    parts = [f"{count_range(done['n_train'])} training images per fold" if done["n_train"].notna().any() else "",
             f"{meta['epochs']} epoch{'s' * (meta['epochs'] != 1)}" if meta.get("epochs") else "",
             f"batch {meta['batch_size']}" if meta.get("batch_size") else ""]
    return ", ".join(p for p in parts if p)


def _caption(suite: SuiteResults) -> str:
    meta = suite.meta
    repeats = int(meta.get("repeats", 1) or 1)
    folds = f"{meta['folds']} folds" + (f" × {repeats} repeats" if repeats > 1 else "")
    dataset = f" on {meta['dataset']}" if meta.get("dataset") else ""
    training = _training_text(suite)
    return (f"Cross-validation results of suite {suite.suite}{dataset} ({folds}"
            f"{'; ' + training if training else ''}): mean ± variance over folds.")


class InterruptedOnceWritten(KeyboardInterrupt):
    """Ctrl-C or SIGTERM that came while a report was put in place, raised once it was whole."""


def _install(staging: Path, out_dir: Path) -> None:
    """Move the report built in ``staging`` into ``out_dir``: each file is first put beside its place
    under a hidden name (a copy where figures/ links to another file system), then all are renamed
    into place, index.md last, and only then go the earlier report's files this one lacks (no table,
    figure or missing.txt of a removed configuration lingers; other files stay). A file that cannot
    be put in place (a read-only folder, a full disk) leaves the earlier report as it was."""
    placed: list[tuple[Path, Path]] = []
    try:
        for path in [path for path in sorted(staging.rglob("*")) if path.is_file()]:
            target = out_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            beside = target.with_name(f".{target.name}.partial")
            shutil.move(path, beside)
            placed.append((beside, target))
    except BaseException:
        for beside, _ in placed:
            beside.unlink(missing_ok=True)
        raise
    try:
        with signals_deferred():  # a Ctrl-C here would leave a mix of the earlier report's files and these
            _replace(placed, out_dir)
    except KeyboardInterrupt as interrupt:
        raise InterruptedOnceWritten(f"interrupted once the report in {out_dir} was written") from interrupt


def _replace(placed: list[tuple[Path, Path]], out_dir: Path) -> None:
    """Rename each (hidden file, its place) of ``placed`` into place, index.md last, then remove the
    earlier report's files that this one lacks."""
    for beside, target in sorted(placed, key=lambda pair: pair[1].name == "index.md"):
        os.replace(beside, target)
    new = {target for _, target in placed}
    figures, optuna = out_dir / "figures", out_dir / "figures" / OPTUNA_FIGURES
    earlier = ([out_dir / name for name in TABLE_FILES] + [path for pattern in FIGURE_PATTERNS
                                                           for path in figures.glob(pattern)]
               + [path for path in optuna.rglob("*")])
    for path in earlier:
        if path not in new and path.is_file():
            path.unlink()
    for folder in [*sorted(optuna.rglob("*"), reverse=True), optuna, figures]:  # inner folders first
        if folder.is_dir() and not any(folder.iterdir()):
            with suppress(OSError):  # best effort: one a report elsewhere is filling stays
                folder.rmdir()


@contextmanager
def _one_at_a_time(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s report lock (``LOCK_FILE``): a second report of the folder waits for the
    first, so their files never interleave, and a staging folder found under the lock is a report's
    killed outright (``kill -9``), removed then."""
    # filelock: flock on POSIX (the file stays, so waiters share it), msvcrt on Windows, and a lock
    # file of its own where flock is missing (some network file systems).
    with FileLock(out_dir / LOCK_FILE):
        for folder in out_dir.glob(".partial-*"):
            shutil.rmtree(folder, ignore_errors=True)
        yield


def _load_searches(meta: dict, place: StudyPlace | None) -> Searches:
    """Each search the run took parameters from (``run --params-from``), read from ``place`` (None:
    the storage the run read it from, else studies/), or why it cannot be read."""
    searches: Searches = {}
    recorded = meta.get("search_storages") or {}  # absent from the exports of earlier versions: studies/
    for name in dict.fromkeys((meta.get("params_from") or {}).values()):
        url = recorded.get(name)
        if place is None and url is not None and (password_hidden(url) or gone(url)):
            # Not another study of that name under studies/, which need not be the one the run read.
            why = "whose password is not kept" if password_hidden(url) else "a file not there now"
            searches[name] = ValueError(f"the run read it from {url}, {why}")
            continue
        try:
            searches[name] = load_search_study(place or StudyPlace(url), name)
        except ValueError as error:  # e.g. a search kept in a database this machine does not reach
            searches[name] = error
    return searches


def _search_plots(searches: Searches, directory: Path, place: StudyPlace | None) -> tuple[list[Path], list[str]]:
    """Optuna's plots of each search under ``directory/optuna/<study>/``; and why a search's are missing."""
    paths: list[Path] = []
    problems: list[str] = []
    for name, search in searches.items():
        if isinstance(search, ValueError):
            advice = "give its storage with --search-storage" if place is None else \
                "is --search-storage the storage it was run in?"
            problems.append(f"no Optuna plots of search {name!r}: {str(search).split(': ', 1)[-1]}; {advice}")
            continue
        # Its notes (a plot a search of one parameter cannot have, importances from few trials) are
        # for `studies plot`: here they would be warnings in every report of such a run.
        paths += plot_study(search[0], plot_dir(directory / OPTUNA_FIGURES, name))[0]
    return paths, problems


def _stored_model(path: str) -> MultitaskVAE:
    return load_checkpoint(path)[0]


def _checkpoint_figures(suite: SuiteResults, order: list[str], directory: Path, images: torch.Tensor,
                        load_model: Callable[[str], MultitaskVAE], results_dir: Path,
                        bar: tqdm) -> tuple[list[Path], list[str]]:
    """Reconstruction grid (and error vs observed pixels for conditioned models) of the first
    COMPLETE fold with a checkpoint of every configuration, each a step of ``bar``; failures become
    warnings."""
    from benchmark.figures import configuration_title, error_vs_observed, reconstruction_grid

    paths, warnings, missing = [], [], []
    done = completed(suite.results)
    done = done[done["checkpoint"] != ""].sort_values("fold")
    first = done.drop_duplicates("config_id").set_index("config_id")
    size = images.shape[-1]
    for config_id in [c for c in order if c in first.index]:  # the table's order
        bar.set_postfix_str(config_id)
        row = first.loc[config_id]
        name = safe_name(config_id)
        path = checkpoint_file(row["checkpoint"], results_dir, suite.suite)
        try:
            try:
                model = load_model(str(path))
            except FileNotFoundError:  # the weights alone, not a figure's file: one warning for them all
                missing.append(config_id)
                continue
            sampler = None
            if row["method"] != "baseline":
                count = None if math.isnan(row["count"]) else int(row["count"])
                exponent = None if math.isnan(row["exponent"]) else float(row["exponent"])
                sampler = PixelSampler(row["sampling"], size, count=count, exponent=exponent)
            named = {"title": configuration_title(row), "fold": int(row["fold"])}
            paths += reconstruction_grid(model, images[:8], sampler, directory / f"reconstruction_{name}", **named)
            if model.conditioned:
                sampling = row["sampling"] if row["sampling"] in ("uniform", "gaussian") else "uniform"
                paths += error_vs_observed(model, images, sampling, directory / f"error_vs_observed_{name}",
                                           trained=sampler, **named)
        except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as error:
            warnings.append(f"{config_id}: no checkpoint figures from {path} ({type(error).__name__}: {error})")
        finally:
            bar.update()
    if missing:
        place = artifacts_beside(results_dir, suite.suite)
        warnings.append(f"no checkpoint figures of {len(missing)} configuration{'s' * (len(missing) > 1)} "
                        f"({', '.join(missing)}): their best-epoch weights are neither where {suite.suite}.csv "
                        f"records them nor in {place} (moved or deleted since the run, or saved on another machine: "
                        "machines running one suite share a folder as --artifacts-dir); --no-checkpoints makes "
                        "the report without them")
    return paths, warnings


def write_report(results_dir: Path, suite: str, out_dir: Path, *, figures: bool = True, checkpoints: bool = True,
                 images: torch.Tensor | None = None, load_model: Callable[[str], MultitaskVAE] | None = None,
                 searches_in: StudyPlace | None = None, progress: bool = False,
                 results: SuiteResults | None = None) -> ReportSummary:
    """Read ``results_dir/<suite>{.csv,_history.csv,_meta.json}`` and write the report to ``out_dir``.

    figures: draw the validation curves and, on ``images`` (N, C, H, W) in [0, 1] (default: the
    first ``TEST_IMAGES`` test images of the run's dataset, when it can be loaded here), the
    sampling types; with ``checkpoints`` also the reconstruction grid and error-vs-observed plot of
    each configuration, from the model ``load_model(checkpoint_path)`` returns (default: the stored
    weights, ``export.load_checkpoint``); and Optuna's plots of the searches that tuned
    configurations (``run --params-from``), read from ``searches_in`` (None: each from the
    storage the run read it from, where that is at hand, else from studies/). Raises
    ``ReportError`` before writing anything when the suite is unknown or empty. The report is
    built in a hidden folder in ``out_dir`` and moved in when whole, so an interrupted one leaves
    an earlier report as it was. ``progress``: a bar of the figures drawn, on stderr. ``results``: the
    suite's files as ``load_suite`` read them, where the caller has (read here otherwise). Returns what
    was written and what is missing.
    """
    data = load_suite(results_dir, suite) if results is None else results
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Built in a hidden folder of out_dir (its file system, whatever links lead there) and moved in
    # whole: an interrupted report leaves the earlier one as it was.
    with _one_at_a_time(out_dir):
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
        try:
            summary = _build(data, Path(results_dir), staging, figures=figures, checkpoints=checkpoints,
                             images=images, load_model=load_model, searches_in=searches_in, progress=progress)
            _install(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    summary.files = [out_dir / path.relative_to(staging) for path in summary.files]
    summary.out_dir = out_dir
    return summary


def _other_version(data: SuiteResults) -> str | None:
    """A warning when the results were exported by a later version of mtvae-bench, or by an earlier
    one whose later changes touched folds they hold: numbers not comparable with a run of this
    version's. A meta file that records no version (written by hand) has nothing to tell."""
    version, ids = data.meta.get("metrics_version"), set(completed(data.results)["config_id"])
    if not isinstance(version, int):
        return None
    if version > METRICS_VERSION:
        return (f"{data.suite}.csv was exported by a later version of mtvae-bench, whose metrics this version may "
                "read otherwise: report it with that version")
    changes = changes_to(ids, version)
    if not changes:
        return None
    return (f"{data.suite}.csv was exported by an earlier version of mtvae-bench, {since_changes(changes)}: its "
            "numbers are not comparable with a run of this version's")


def _build(data: SuiteResults, results_dir: Path, out_dir: Path, *, figures: bool, checkpoints: bool,
           images: torch.Tensor | None, load_model: Callable[[str], MultitaskVAE] | None,
           searches_in: StudyPlace | None, progress: bool = False) -> ReportSummary:
    """The report of ``data``, written into the empty folder ``out_dir`` (``write_report``'s arguments)."""
    suite = data.suite
    table = build_table(data)
    missing = find_missing(data)
    files, warnings = [], []
    if "dataset" not in data.meta:
        warnings.append(f"no {suite}_meta.json: expected folds and configurations guessed from the results")
    elif other := _other_version(data):
        warnings.append(other)
    warnings += data.prior_problems

    # Tidy: a configuration without parameters has an empty cell, the display tables' "–" elsewhere.
    table.assign(parameters=table["parameters"].replace("–", "")).to_csv(out_dir / "table.csv", index=False)
    label = f"tab:{safe_name(suite)}"  # a suite's own labels: two suites' tables can go into one document
    (out_dir / "table.tex").write_text(latex_table(table, _caption(data), f"{label}-cross-validation"))
    table_md = markdown_table(table)
    (out_dir / "table.md").write_text(table_md)
    files += [out_dir / "table.csv", out_dir / "table.tex", out_dir / "table.md"]
    comparison = comparison_cells(table)
    note = comparison_note(table)
    texts = {out_dir / "comparison.tex": comparison_latex(comparison, f"Each method against its baseline, suite {suite}.",
                                                          note, f"{label}-comparison"),
             out_dir / "comparison.md": comparison_markdown(comparison, note)}
    if not comparison.empty:  # baselines only: no comparison
        for path, text in texts.items():
            path.write_text(text)
            files.append(path)
    missing_path = out_dir / "missing.txt"
    if missing:
        header = (f"# suite {suite}: {len(missing)} of {len(data.meta['configurations'])} configurations "
                  f"short of {data.expected_folds} COMPLETE folds")
        missing_path.write_text("\n".join([header, *(m.describe() for m in missing)]) + "\n")
        files.append(missing_path)

    directory = out_dir / "figures"
    searches = _load_searches(data.meta, searches_in)
    if figures:
        from benchmark.figures import configuration_title, sampling_types, validation_curves

        directory.mkdir(exist_ok=True)
        # a step each: the curves, the sampling types, each configuration's checkpoint, the prior's, the searches'
        steps = 2 + len(table) * checkpoints + (data.prior is not None) + bool(searches)
        with progress_bar(steps, f"report {suite}", "figure", show=progress) as bar:
            bar.set_postfix_str("validation curves")
            if data.history is not None and not data.history.empty:
                files += validation_curves(data.history, data.results, directory)
            elif data.history_problem:
                warnings.append(f"validation curves skipped: {data.history_problem}")
            else:
                history = results_dir / f"{suite}_history.csv"
                warnings.append(f"{'no validation history in' if history.is_file() else 'no'} {history.name}: "
                                "validation curves skipped")
            bar.update()
            bar.set_postfix_str("sampling types")
            if images is None and "dataset" in data.meta:
                try:
                    images = run_dataset(data.meta).test[:TEST_IMAGES]
                except ValueError as error:  # e.g. a GPU machine's dataset that is not on this one
                    warnings.append(f"no sampling or checkpoint figures: {error}")
            if checkpoints and load_model is None:
                load_model = _stored_model
            if images is not None:
                files += sampling_types(images, images.shape[-1], directory / "sampling_types")
            bar.update()
            if checkpoints:
                if images is not None:
                    paths, problems = _checkpoint_figures(data, list(table["config_id"]), directory, images,
                                                            load_model, results_dir, bar)
                    files += paths
                    warnings += problems
                bar.update(2 + len(table) - bar.n)  # the configurations without weights to draw from
            if data.prior is not None:  # images decoded from the prior samples that `prior` stored
                bar.set_postfix_str("prior samples")
                rows = data.results.drop_duplicates("config_id").set_index("config_id")
                titles = {config_id: configuration_title(rows.loc[config_id]) for config_id in table["config_id"]}
                paths, problems = prior_figures(results_dir, suite, data.prior, titles, directory)
                files, warnings = files + paths, warnings + problems
                bar.update()
            if searches:
                bar.set_postfix_str("Optuna plots")
                paths, problems = _search_plots(searches, directory, searches_in)
                files, warnings = files + paths, warnings + problems
                bar.update()
            bar.set_postfix_str("", refresh=False)  # its last line: all drawn, not the last one drawn

    unreachable = [name for name, search in searches.items() if isinstance(search, ValueError)]
    if unreachable and not figures:  # with figures, the missing Optuna plots name them and the way to them
        warnings.append(f"search{'es' * (len(unreachable) > 1)} {', '.join(map(repr, unreachable))} out of reach: "
                        "not compared with this run's training; give the storage with --search-storage")
    limits = caveats(data, searches)
    numbers = (table_md, None if comparison.empty else texts[out_dir / "comparison.md"])
    (out_dir / "index.md").write_text(index_text(data, files, out_dir, missing, warnings, limits,
                                                     _training_text(data), numbers))
    files.append(out_dir / "index.md")
    return ReportSummary(suite, out_dir, files, table["config_id"].tolist(), missing, warnings, limits)


__all__ = ["ReportSummary", "build_table", "merge_prior", "model_weights", "observed_pixels", "write_report"]
