"""The report: results/<suite>{.csv,_history.csv,_meta.json} → reports/<suite>/.

Writes ``table.csv`` (tidy numbers), ``table.tex`` (booktabs), ``table.md``,
``comparison.{md,tex}`` (each method against its baseline, when a suite has one), ``index.md``,
``missing.txt`` (only when units are missing) and figures under ``figures/``. Everything
is validated before anything is written, so an unknown or empty suite leaves no files.
After ``python -m benchmark prior``: a "Prior NLL" column and ``figures/generated_*`` (VQ-VAE).

Checkpoint figures (reconstruction grids, error vs observed pixels) need a model loader
and some images, which the caller supplies::

    from benchmark.store import load_checkpoint
    write_report(results_dir, suite, out_dir, images=val_images[:8],
                 load_model=lambda path: load_checkpoint(path)[0])
"""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from benchmark.conditioning import PixelSampler
from benchmark.models import FAMILIES, FAMILY_TITLES, METHODS, VQConfig
from benchmark.prior_stage import checkpoint_file, merge_prior, prior_cells, prior_figures, read_prior
from benchmark.stats import (
    COMPARED,
    METHOD_TITLES,
    METRICS,
    compare_with_baseline,
    comparison_wide,
    completed,
    format_mean_var,
    parameter_text,
    summarise,
)

if TYPE_CHECKING:
    import torch

    from benchmark.models import MultitaskVAE

REQUIRED = ("config_id", "family", "config", "method", "fold", "state", "recon", "latent")
TEXT_COLUMNS = ("sampling", "error", "checkpoint", "params_from")
NUMERIC_COLUMNS = ("exponent", "count", "w1", "w2", "beta", "softadapt_beta", "best_epoch", "recon", "latent",
                   "recon_cond", "total", "recon_train", "recon_cond_train", "seconds", "n_train", "n_val")
METRIC_TITLES = {"recon": "Reconstruction loss", "latent": "KL / VQ loss", "recon_cond": "Conditioned reconstruction"}
# Two-line LaTeX headers keep the eight columns within a page.
TEX_TITLES = {"Reconstruction loss": r"\shortstack{Reconstruction\\loss}", "KL / VQ loss": r"\shortstack{KL / VQ\\loss}",
              "Conditioned reconstruction": r"\shortstack{Conditioned\\reconstruction}",
              "Prior NLL (nats/code)": r"\shortstack{Prior NLL\\(nats/code)}"}
INDEX_TITLES = ("Model", "Config", "Method", "Parameters")
SAMPLING_ORDER = ("", "exact", "uniform", "gaussian")
FIGURE_PATTERNS = ("curves_*", "reconstruction_*", "error_vs_observed_*", "sampling_types.*", "generated_*")
FIGURE_KINDS = {  # index.md's one line on each kind of figure, in FIGURE_PATTERNS order
    "curves_": "Validation curves of each method's configurations against the baseline (mean over folds, "
               "band: min–max over folds).",
    "reconstruction_": "Held-out test images: input | unconditioned | conditioned output | mask, from the "
                       "first fold's best-epoch weights.",
    "error_vs_observed_": "The conditioned output's error against the number of distinct observed pixels, the "
                          "training condition marked (the numbers in the CSV).",
    "sampling_types": "The three mask samplers (exact, uniform, gaussian) on one image.",
    "generated_": "Images decoded from samples of each VQ-VAE's prior.",
}
FOOTNOTE = ("† differs from the baseline of the same model and config (p < 0.05): corrected resampled "
            "t-test (Nadeau & Bengio, 2003) on the paired per-fold differences, Holm-adjusted over the "
            "methods of one model config, per metric; tested only where both have every fold done. "
            "Bold: lowest mean within a model config, among two or more "
            "configurations with every fold done; for the "
            "conditioned reconstruction, among the rows that observe the same number of pixels (one "
            "method with the same count k or power-law exponent); KL and VQ loss are not ranked "
            "(the lowest is not the best model: a collapsed posterior, or codes bought with worse reconstruction). "
            "Cells: mean ± population variance over folds, each fold at its epoch of lowest validation "
            "total loss, (n=…) where fewer folds have a value; "
            "reconstruction as per-pixel MSE; "
            "KL summed over latent dimensions (Gaussian VAE); VQ loss (VQ-VAE): codebook + "
            f"{VQConfig.commitment:g} × commitment, squared distances averaged over the code map's elements "
            f"(the thesis table's scale), at {VQConfig.commitment:g} whatever β trained.")
COMPARISON_TITLES = ("Difference", "95% interval", "Change", "p (Holm)", "Folds")
COMPARISON_NOTE = ("Difference: mean over folds of the method minus the baseline of the same model and config, paired "
                   "on fold; negative is a lower loss. 95% interval and p: corrected resampled t-test "
                   "(Nadeau & Bengio, 2003), the interval per comparison (not adjusted: one that excludes 0 "
                   "beside a p (Holm) of 0.05 or more is not significant), p Holm-adjusted over the methods "
                   "of one model config per metric, and only where both have every fold done (– otherwise). "
                   "Change: the difference relative to the baseline's mean. † p (Holm) < 0.05.")
PRIOR_NOTE = (" Prior NLL: validation negative log-likelihood of a VQ-VAE's code maps under a Gated "
              "PixelCNN prior fitted to the training codes of one fold, the same fold for every row "
              "(nats per code, lower is better; a uniform prior scores ln K).")
TUNED_NOTE = (" Tuned: parameters chosen by a search on these images, so the row's scores and its "
              "test against the baseline are optimistic (selection bias).")


class ReportError(ValueError):
    """A suite that cannot be reported (unknown, empty, malformed); the message is one line."""


@dataclass(frozen=True)
class MissingUnits:
    """A configuration with fewer COMPLETE folds than the suite expects."""

    config_id: str
    complete: int
    expected: int
    failed: tuple[tuple[int, str], ...] = ()     # (fold, error) of FAIL units
    pending: tuple[tuple[int, str], ...] = ()    # (fold, state) of RUNNING / WAITING units

    def describe(self) -> str:
        parts = [f"{self.config_id}: {self.complete}/{self.expected} folds complete"]
        if self.complete == 0 and not self.failed and not self.pending:
            parts.append("not in the results")
        parts += [f"fold {fold} FAIL: {error or 'no error recorded'}" for fold, error in self.failed]
        parts += [f"fold {fold} {state}" for fold, state in self.pending]
        return "; ".join(parts)


@dataclass
class ReportSummary:
    """What ``write_report`` wrote and what it could not report."""

    suite: str
    out_dir: Path
    files: list[Path]
    configurations: list[str]
    missing: list[MissingUnits]
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class SuiteResults:
    suite: str
    results: pd.DataFrame
    history: pd.DataFrame | None
    meta: dict
    prior: pd.DataFrame | None = None   # <suite>_prior.csv, once the VQ-VAE prior stage has run

    @property
    def expected_folds(self) -> int:
        return int(self.meta["folds"]) * int(self.meta.get("repeats", 1) or 1)


def available_suites(results_dir: Path) -> list[str]:
    """Suites with a results CSV in ``results_dir``."""
    return sorted(p.stem for p in Path(results_dir).glob("*.csv") if not p.stem.endswith(("_history", "_prior")))


def load_suite(results_dir: Path, suite: str) -> SuiteResults:
    """Read the runner's three files for ``suite``; raises ``ReportError`` when the suite is
    unknown, empty, has no COMPLETE unit or lacks required columns."""
    results_dir = Path(results_dir)
    path = results_dir / f"{suite}.csv"
    if not path.is_file():
        from benchmark.suites import builtin_suites

        available = available_suites(results_dir)
        known = f"suites with results: {', '.join(available) or 'none yet'}"
        builtin = suite in builtin_suites()
        close = difflib.get_close_matches(suite, available, n=1)
        if close and not builtin:  # a typo, most likely
            raise ReportError(f"no results for suite {suite!r} in {results_dir}; did you mean {close[0]!r}? ({known})")
        where = "" if results_dir == Path("results") else f" --results-dir {shlex.quote(str(results_dir))}"
        how = (f"`python -m benchmark run --suite {suite}{where}`" if builtin else
               f"`python -m benchmark run --suite FILE.toml{where}` for a suite file, or with `--name {suite}` "
               "for a variant of a built-in suite")
        raise ReportError(f"no results for suite {suite!r} in {results_dir} ({known}); run it first: {how}")
    try:
        results = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        results = pd.DataFrame()
    if results.empty:
        raise ReportError(f"suite {suite!r} has no results yet ({path} is empty)")
    absent = [c for c in REQUIRED if c not in results.columns]
    if absent:
        raise ReportError(f"{path} lacks the columns {', '.join(absent)}; is it a results export?")
    for column in TEXT_COLUMNS:
        results[column] = results[column].astype(object).fillna("").astype(str) if column in results else ""
    for column in NUMERIC_COLUMNS:
        if column not in results:
            results[column] = math.nan
            continue
        numbers = pd.to_numeric(results[column], errors="coerce")
        # Empty cells are missing values; anything else that is not a number would silently
        # drop a fold from the means, so it is an error.
        bad = numbers.isna() & results[column].notna()
        if bad.any():
            rows = ", ".join(f"line {i + 2}: {results[column][i]!r}" for i in results.index[bad][:3])
            raise ReportError(f"{path}: column {column!r} holds values that are not numbers ({rows})")
        results[column] = numbers
    results["softadapt"] = (results["softadapt"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))
                            if "softadapt" in results else False)
    results["config"] = results["config"].astype(int)
    results["fold"] = results["fold"].astype(int)
    if not (results["state"] == "COMPLETE").any():
        states = ", ".join(f"{n} {state}" for state, n in results["state"].value_counts().items())
        first = next((e for e in results.get("error", []) if e), "")
        raise ReportError(f"suite {suite!r} has no completed units yet ({states})"
                          + (f"; first error: {first}" if first else ""))

    meta_path = results_dir / f"{suite}_meta.json"
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise ReportError(f"{meta_path} is not valid JSON: {error}") from None
    meta.setdefault("suite", suite)
    meta.setdefault("folds", int(results["fold"].max()) + 1)
    meta.setdefault("repeats", 1)
    meta.setdefault("configurations", list(pd.unique(results["config_id"])))
    history_path = results_dir / f"{suite}_history.csv"
    history = pd.read_csv(history_path) if history_path.is_file() and history_path.stat().st_size else None
    return SuiteResults(suite, results, history, meta, read_prior(results_dir, suite))


def find_missing(suite: SuiteResults) -> list[MissingUnits]:
    """Configurations (from the meta list, then any extra in the results) short of COMPLETE folds."""
    results, expected = suite.results, suite.expected_folds
    done = completed(results).groupby("config_id")["fold"].nunique()
    ids = list(dict.fromkeys([*suite.meta["configurations"], *results["config_id"]]))
    missing = []
    for config_id in ids:
        count = int(done.get(config_id, 0))
        if count >= expected:
            continue
        rows = results[results["config_id"] == config_id]
        finished = set(rows.loc[rows["state"] == "COMPLETE", "fold"])
        open_rows = rows[~rows["fold"].isin(finished)].drop_duplicates("fold", keep="last").sort_values("fold")
        failed = tuple((int(r.fold), str(r.error)) for r in open_rows.itertuples() if r.state == "FAIL")
        pending = tuple((int(r.fold), str(r.state)) for r in open_rows.itertuples() if r.state != "FAIL")
        missing.append(MissingUnits(config_id, count, expected, failed, pending))
    return missing


def build_table(suite: SuiteResults) -> pd.DataFrame:
    """One row per configuration in the results, in thesis order (model → config → method →
    parameters): parameters, ``<metric>_{mean,var,std,n}``, ``<metric>_<field>`` of the comparison
    with the baseline (``stats.compare_with_baseline``), ``prior_*`` (``prior_stage.merge_prior``)."""
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
    # Rows must be told apart in the LaTeX/Markdown tables even when the label does not show
    # the difference (e.g. only the SoftAdapt β differs): then the label names the config id.
    same = table.duplicated(["family", "config", "method", "parameters"], keep=False)
    table.loc[same, "parameters"] += " (" + table.loc[same, "config_id"] + ")"
    keys = pd.DataFrame({
        "family": table["family"].map(lambda f: FAMILIES.index(f) if f in FAMILIES else len(FAMILIES)),
        "config": table["config"],
        "method": table["method"].map(lambda m: METHODS.index(m) if m in METHODS else len(METHODS)),
        "sampling": table["sampling"].map(lambda s: SAMPLING_ORDER.index(s) if s in SAMPLING_ORDER else 9),
        "softadapt": table["softadapt"].astype(bool),
        "exponent": table["exponent"], "count": table["count"], "parameters": table["parameters"]})
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="first").index
    return merge_prior(table.loc[order].reset_index(drop=True), suite.prior)


def observed_pixels(table: pd.DataFrame, image_size: int | None) -> pd.Series:
    """The constant number of pixels k a Multidecoder's conditioned decoder observes: the
    count given, else the exact grid's for ``image_size`` (unknown without it); NaN for other methods."""
    default = PixelSampler("exact", int(image_size)).fixed_count if image_size else math.nan
    constant = table["method"] == "multidecoder"
    return table["count"].where(constant).mask(constant & table["count"].isna(), default).astype("Int64")


def _best_rows(table: pd.DataFrame, metric: str) -> pd.Series:
    """True where the row has the lowest ``metric`` mean of its (family, config).

    The conditioned reconstruction depends on how many pixels a decoder observes, so it is
    ranked only among rows that observe the same number: one method with the same constant k
    (Multidecoder) or power-law exponent (Single decoder). A row is bold only beside another
    ranked one. Only configurations with every fold done, each with a value, are ranked: means over other
    folds do not compare. The latent term is not ranked: the lowest KL is a collapsed posterior,
    and the lowest VQ loss can come with a far worse reconstruction (the thesis's SoftAdapt rows).
    """
    means = table[f"{metric}_mean"].where(table["complete"] & (table[f"{metric}_n"] == table["n"]))
    groups = [table["family"], table["config"]]
    if metric == "recon_cond":
        groups += [table["method"], table["observed"].fillna(-1), table["exponent"].fillna(-1)]
    grouped = means.groupby(groups)
    comparable = grouped.transform("count") > 1  # the best of one is no finding
    return means.notna() & (means == grouped.transform("min")) & comparable & (metric != "latent")


def display_table(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Formatted cells (``mean ± var`` + ``†``) indexed by (Model, Config, Method, Parameters),
    and a same-shaped boolean frame marking the bold (best) cells."""
    index = pd.MultiIndex.from_arrays([table["model"], table["config"].astype(str),
                                       table["method"].map(lambda m: METHOD_TITLES.get(m, m)),
                                       table["parameters"]], names=list(INDEX_TITLES))
    cells, bold = {}, {}
    for metric in METRICS:
        text = [format_mean_var(m, v if k > 1 else math.nan) + (f" (n={k})" if 0 < k < n else "")
                for m, v, k, n in zip(table[f"{metric}_mean"], table[f"{metric}_var"], table[f"{metric}_n"],
                                      table["n"])]
        flag = table.get(f"{metric}_significant", pd.Series(False, index=table.index)).fillna(False).astype(bool)
        cells[METRIC_TITLES[metric]] = [t + ("†" if f else "") for t, f in zip(text, flag)]
        bold[METRIC_TITLES[metric]] = _best_rows(table, metric).to_list()
    if "prior_nll_nats" in table:  # VQ-VAE rows once `prior` has run; NLLs of other folds are not ranked
        cells["Prior NLL (nats/code)"], bold["Prior NLL (nats/code)"] = prior_cells(table), [False] * len(table)
    cells["n"] = table["n"].astype(str).to_list()
    bold["n"] = [False] * len(table)
    return pd.DataFrame(cells, index=index), pd.DataFrame(bold, index=index)


# Characters LaTeX treats specially, and the few symbols the report's plain text uses.
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$", ">": "$>$",
        "±": r"$\pm$", "†": r"$^\dagger$", "β": r"$\beta$", "W₁": r"$W_1$", "W₂": r"$W_2$", "–": "--",
        "×": r"$\times$", "…": r"\ldots{}"}
_TEX_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(_TEX, key=len, reverse=True)))


def tex(text: str) -> str:
    """Plain report text (ASCII plus ± † β W₁ W₂ – × …) as LaTeX, in one pass."""
    return _TEX_PATTERN.sub(lambda match: _TEX[match.group()], text)


def _tuned(table: pd.DataFrame) -> bool:
    return bool(table["params_from"].fillna("").astype(str).str.len().gt(0).any())


def footnote(table: pd.DataFrame) -> str:
    """The tables' footnote; with the prior's column explained when it is there, and the
    selection-bias caveat when a row's parameters were tuned."""
    return FOOTNOTE + (PRIOR_NOTE if "prior_nll_nats" in table else "") + (TUNED_NOTE if _tuned(table) else "")


def comparison_note(table: pd.DataFrame) -> str:
    """The comparison tables' note; with the selection-bias caveat when a row's parameters were tuned."""
    return COMPARISON_NOTE + (TUNED_NOTE if _tuned(table) else "")


def latex_table(table: pd.DataFrame, caption: str) -> str:
    """A booktabs ``table`` float with \\multirow groups, bold best cells and a † footnote."""
    cells, bold = display_table(table)
    cells = cells.map(tex)
    cells.index = cells.index.set_levels([level.map(tex) for level in cells.index.levels])
    styler = cells.style.apply(lambda _: bold.map(lambda b: "font-weight: bold" if b else "").to_numpy(), axis=None)
    styler.hide(names=True, axis="index")
    styler.set_table_styles([{"selector": "small", "props": ":;"},
                             {"selector": "setlength", "props": ":{\\tabcolsep}{4pt};"}], overwrite=False)
    spec = "llll" + "r" * cells.shape[1]
    latex = styler.to_latex(column_format=spec, hrules=True, multirow_align="t",
                            convert_css=True, position="htbp", position_float="centering",
                            caption=tex(caption), label="tab:cross-validation")
    lines = latex.splitlines()
    top = lines.index(r"\toprule")
    # One header row naming the index columns (pandas leaves them blank when names are hidden).
    lines[top + 1] = " & ".join([*INDEX_TITLES, *(TEX_TITLES.get(c, tex(c)) for c in cells.columns)]) + r" \\"
    start, end = lines.index(r"\midrule", top) + 1, lines.index(r"\bottomrule")
    if end - start == len(table):  # one line per row: mark where a model / a config begins
        rules = []
        for i in range(len(table)):
            if i and table["family"].iat[i] != table["family"].iat[i - 1]:
                rules.append((start + i, r"\midrule"))
            elif i and table["config"].iat[i] != table["config"].iat[i - 1]:
                rules.append((start + i, rf"\cmidrule(l){{2-{4 + cells.shape[1]}}}"))
        for position, rule in reversed(rules):
            lines.insert(position, rule)
    # The full grid is wider than an article's text: centre it over the margins instead of
    # letting it run into the right one (plain LaTeX, no extra package).
    lines.insert(lines.index(r"\begin{tabular}" + f"{{{spec}}}"), r"\makebox[\linewidth][c]{%")
    close = lines.index(r"\end{tabular}")
    lines[close] += "}"
    lines.insert(close + 1, r"\par\smallskip\parbox{\linewidth}{\footnotesize " + tex(footnote(table)) + "}")
    return "\n".join(lines) + "\n"


def _markdown(cells: pd.DataFrame, bold: pd.DataFrame, grouped: int) -> list[str]:
    """Markdown lines of ``cells`` (text indexed by labels), **bold** where ``bold``; the first
    ``grouped`` index levels are shown only where their group starts."""
    names = list(cells.index.names)
    lines = ["| " + " | ".join([*names, *cells.columns]) + " |",
             "|" + "|".join([" --- "] * len(names) + [" ---: "] * cells.shape[1]) + "|"]
    previous: tuple = ()
    for (labels, row), (_, marks) in zip(cells.iterrows(), bold.iterrows()):
        shown = [label if labels[:i + 1] != previous[:i + 1] else "" for i, label in enumerate(labels[:grouped])]
        previous = labels
        values = [f"**{v}**" if b else v for v, b in zip(row, marks)]
        lines.append("| " + " | ".join([*shown, *labels[grouped:], *values]).replace("\n", " ") + " |")
    return lines


def markdown_table(table: pd.DataFrame) -> str:
    """GitHub Markdown with blank repeated group cells (model, config, method), **bold** best
    cells and † marks."""
    cells, bold = display_table(table)
    return "\n".join(_markdown(cells, bold, 3)) + "\n\n" + footnote(table) + "\n"


def _signed(value: float) -> str:
    """3 significant digits with the sign, trailing zeros kept (``-0.00290``), no bare point (``+100``)."""
    return f"{value:+#.3g}".rstrip(".")


def comparison_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Each method against its baseline, one row per (configuration, compared metric) with a
    test: the mean difference, its 95% interval, the relative change, Holm's p and the pairs."""
    rows, index = [], []
    for _, row in table.iterrows():
        for metric in COMPARED:
            pairs = row[f"{metric}_n_pairs"]
            if pd.isna(pairs):
                continue
            p_holm, significant = row[f"{metric}_p_holm"], row[f"{metric}_significant"]
            index.append((row["model"], str(row["config"]), METHOD_TITLES.get(row["method"], row["method"]),
                          row["parameters"], METRIC_TITLES[metric]))
            mark = "†" if pd.notna(significant) and significant else ""
            rows.append({"Difference": f"{_signed(row[f'{metric}_mean_diff'])}{mark}",
                         "95% interval": "–" if pd.isna(row[f"{metric}_ci_low"])  # one pair: no spread
                                         else f"[{_signed(row[f'{metric}_ci_low'])}, {_signed(row[f'{metric}_ci_high'])}]",
                         "Change": "–" if pd.isna(row[f"{metric}_rel_change"])
                                   else f"{100 * row[f'{metric}_rel_change']:+.1f}%",
                         "p (Holm)": "–" if pd.isna(p_holm) else f"{p_holm:.3g}",
                         "Folds": str(int(pairs))})
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=[*INDEX_TITLES, "Metric"])
                        if index else pd.MultiIndex.from_tuples([], names=[*INDEX_TITLES, "Metric"]),
                        columns=list(COMPARISON_TITLES))


def comparison_markdown(cells: pd.DataFrame, note: str = COMPARISON_NOTE) -> str:
    """``comparison_cells`` as GitHub Markdown, with its note."""
    bold = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    return "\n".join(_markdown(cells, bold, 4)) + "\n\n" + note + "\n"


def comparison_latex(cells: pd.DataFrame, caption: str, note: str = COMPARISON_NOTE) -> str:
    """``comparison_cells`` as a booktabs ``table`` float, with its note."""
    cells = cells.map(tex)
    cells.index = pd.MultiIndex.from_tuples([tuple(tex(str(v)) for v in labels) for labels in cells.index],
                                            names=cells.index.names)
    styler = cells.style.hide(names=True, axis="index")
    latex = styler.to_latex(column_format="lllll" + "r" * cells.shape[1], hrules=True, multirow_align="t",
                            position="htbp", position_float="centering", caption=tex(caption),
                            label="tab:comparison")
    lines = latex.splitlines()
    top = lines.index(r"\toprule")
    lines[top + 1] = " & ".join([*cells.index.names, *(tex(c) for c in cells.columns)]) + r" \\"
    close = lines.index(r"\end{tabular}")
    lines.insert(close + 1, r"\par\smallskip\parbox{\linewidth}{\footnotesize " + tex(note) + "}")
    return "\n".join(lines) + "\n"


def _training_text(suite: SuiteResults) -> str:
    """``1,000 training images per fold, 3 epochs, batch 32``: a smoke run must not read as a full one."""
    meta, done = suite.meta, completed(suite.results)
    parts = [f"{round(done['n_train'].mean()):,} training images per fold" if done["n_train"].notna().any() else "",
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


def _clear_figures(directory: Path) -> None:
    """Remove figures of a previous report, so that none of a removed configuration lingers."""
    for pattern in FIGURE_PATTERNS:
        for path in directory.glob(pattern):
            if path.is_file():
                path.unlink()


def _checkpoint_figures(suite: SuiteResults, order: list[str], directory: Path, images: torch.Tensor,
                        load_model: Callable[[str], MultitaskVAE], results_dir: Path) -> tuple[list[Path], list[str]]:
    """Reconstruction grid (and error vs observed pixels for conditioned models) of the first
    COMPLETE fold with a checkpoint of every configuration; failures become warnings."""
    from benchmark.conditioning import PixelSampler
    from benchmark.figures import configuration_title, error_vs_observed, reconstruction_grid

    paths, warnings = [], []
    done = completed(suite.results)
    done = done[done["checkpoint"] != ""].sort_values("fold")
    first = done.drop_duplicates("config_id").set_index("config_id")
    size = images.shape[-1]
    for config_id in [c for c in order if c in first.index]:  # the table's order
        row = first.loc[config_id]
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", config_id)  # a plain file name
        try:
            model = load_model(str(checkpoint_file(row["checkpoint"], results_dir, suite.suite)))
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
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            warnings.append(f"{config_id}: no checkpoint figures ({type(error).__name__}: {error})")
    return paths, warnings


def _index(suite: SuiteResults, files: list[Path], out_dir: Path, missing: list[MissingUnits],
           warnings: list[str]) -> str:
    """README of the report directory: what the run was, each file, what is missing."""
    meta = suite.meta
    described = {"table.csv": "tidy numbers: one row per configuration; parameters (`observed`: the pixels k a "
                              "Multidecoder's conditioned decoder sees, given or default), `n` folds done and "
                              "`complete` (all of them), `<metric>_mean/var/std/n` "
                              "(variance ddof=0; `_n` finite values), `<metric>_mean_diff/ci_low/ci_high/t/p/"
                              "p_holm/rel_change/significant/n_pairs` against the baseline (the 95% CI is per "
                              "comparison, not Holm-adjusted; `p_holm` only with every fold paired); "
                              "`prior_*`: VQ-VAE prior NLL",
                 "table.tex": "booktabs table (needs `\\usepackage{booktabs,multirow}`)",
                 "table.md": "the same table in Markdown",
                 "comparison.md": "each method against its baseline: mean difference, 95% interval, relative "
                                  "change, Holm-adjusted p (the same numbers as table.csv's comparison columns)",
                 "comparison.tex": "the comparison as a booktabs table",
                 "missing.txt": "configurations short of complete folds, with the errors of failed units"}
    repeats = int(meta.get("repeats", 1) or 1)
    total = len(meta["configurations"])
    lines = [f"# Report of suite `{suite.suite}`", "",
             f"Dataset `{meta.get('dataset', '?')}`, {meta['folds']} folds"
             + (f" × {repeats} repeats" if repeats > 1 else "")
             + f", seed {meta.get('seed', '?')}; {_training_text(suite) or 'training size unknown'}; "
             f"{total - sum(m.config_id in meta['configurations'] for m in missing)} of {total} "
             "configurations complete.", ""]
    tuned = meta.get("params_from") or {}
    if tuned:
        lines += ["## Tuned parameters", "",
                  "These configurations use the best parameters of an Optuna search. The search chose them on "
                  "these images, so their scores here are optimistic (selection bias). Another `--seed` gives "
                  "new folds (and, for datasets without an official test split or with `--limit`, a partly "
                  "different training pool), which lessens the bias but does not remove it; only images that "
                  "the search never saw (nested cross-validation) would.", ""]
        lines += [f"- `{config_id}`: from study `{study}` (its Optuna plots: "
                  f"`python -m benchmark studies plot {study}`)" for config_id, study in tuned.items()] + [""]
    lines += ["## Tables", ""]
    figures: dict[str, list[str]] = {}
    for path in files:
        relative = path.relative_to(out_dir).as_posix()
        if relative in described:
            lines.append(f"- [`{relative}`]({relative}): {described[relative]}")
        else:  # one line per figure, linking its formats
            figures.setdefault(path.stem, []).append(f"[{path.suffix[1:]}]({relative})")
    if figures:
        lines += ["", "## Figures"]
        for prefix, text in FIGURE_KINDS.items():
            stems = [stem for stem in figures if stem.startswith(prefix)]
            if stems:
                lines += ["", text, ""] + [f"- `{stem}`: {' · '.join(figures[stem])}" for stem in stems]
    if missing:
        lines += ["", f"## Missing ({len(missing)} configuration{'s' * (len(missing) != 1)})", ""]
        lines += [f"- {m.describe()}" for m in missing]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def write_report(results_dir: Path, suite: str, out_dir: Path, *, figures: bool = True,
                 images: torch.Tensor | None = None,
                 load_model: Callable[[str], MultitaskVAE] | None = None) -> ReportSummary:
    """Read ``results_dir/<suite>{.csv,_history.csv,_meta.json}`` and write the report to ``out_dir``.

    figures: draw the validation curves (and, given ``images`` (N, C, H, W) in [0, 1], the
    sampling types; given also ``load_model(checkpoint_path) -> model``, reconstruction grids
    and error-vs-observed plots per configuration). Raises ``ReportError`` before writing
    anything when the suite is unknown or empty. Returns what was written and what is missing.
    """
    data = load_suite(results_dir, suite)
    table = build_table(data)
    missing = find_missing(data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, warnings = [], []
    if "dataset" not in data.meta:
        warnings.append(f"no {suite}_meta.json: expected folds and configurations guessed from the results")

    table.to_csv(out_dir / "table.csv", index=False)
    (out_dir / "table.tex").write_text(latex_table(table, _caption(data)))
    (out_dir / "table.md").write_text(markdown_table(table))
    files += [out_dir / "table.csv", out_dir / "table.tex", out_dir / "table.md"]
    comparison = comparison_cells(table)
    note = comparison_note(table)
    texts = {out_dir / "comparison.tex": comparison_latex(comparison, f"Each method against its baseline, suite {suite}.",
                                                          note),
             out_dir / "comparison.md": comparison_markdown(comparison, note)}
    for path, text in texts.items():
        if comparison.empty:  # baselines only: no comparison (nor an earlier report's)
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
            files.append(path)
    missing_path = out_dir / "missing.txt"
    if missing:
        header = (f"# suite {suite}: {len(missing)} of {len(data.meta['configurations'])} configurations "
                  f"short of {data.expected_folds} COMPLETE folds")
        missing_path.write_text("\n".join([header, *(m.describe() for m in missing)]) + "\n")
        files.append(missing_path)
    elif missing_path.exists():
        missing_path.unlink()  # stale from an earlier, partial report

    directory = out_dir / "figures"
    if directory.is_dir():
        _clear_figures(directory)  # an earlier report's: index.md must not leave them unlisted and stale
    if figures:
        from benchmark.figures import sampling_types, validation_curves

        directory.mkdir(exist_ok=True)
        if data.history is not None and not data.history.empty:
            files += validation_curves(data.history, data.results, directory)
        else:
            warnings.append(f"no {suite}_history.csv: validation curves skipped")
        if images is not None:
            files += sampling_types(images, images.shape[-1], directory / "sampling_types")
            if load_model is not None:
                paths, problems = _checkpoint_figures(data, list(table["config_id"]), directory, images, load_model,
                                                        results_dir)
                files += paths
                warnings += problems
        if data.prior is not None:  # images decoded from the prior samples that `prior` stored
            paths, problems = prior_figures(Path(results_dir), suite, data.prior, list(table["config_id"]), directory)
            files, warnings = files + paths, warnings + problems

    (out_dir / "index.md").write_text(_index(data, files, out_dir, missing, warnings))
    files.append(out_dir / "index.md")
    return ReportSummary(suite, out_dir, files, table["config_id"].tolist(), missing, warnings)


__all__ = ["MissingUnits", "ReportError", "ReportSummary", "SuiteResults", "available_suites", "build_table",
           "comparison_cells", "comparison_latex", "comparison_markdown", "find_missing", "latex_table", "load_suite",
           "markdown_table", "write_report"]
