"""index.md: the README of a report's folder, written last by ``report.write_report``: what the
run was, what limits its numbers, a line on each table and figure, what is missing."""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from benchmark.prior_stage import OBSERVED_PIXELS
from benchmark.results import MissingUnits, SuiteResults
from benchmark.stats import completed
from benchmark.storage import password_hidden
from benchmark.studies import StudyPlace, file_name

OPTUNA_FIGURES = "optuna"  # the folder of the tuning searches' plots, one folder a study
FIGURE_KINDS = {  # index.md's one line on each kind of figure, in ``report.FIGURE_PATTERNS`` order
    "curves_": "Validation curves of each method's configurations against the baseline (those with a fold done; "
               "mean over folds, band: min–max over folds, × at each fold's selected epoch): the latent loss and "
               "unconditioned reconstruction, then, where they are recorded, the conditioned reconstruction and "
               "the validation total that selects the epoch, as a multiple of its fold's lowest.",
    "reconstruction_": "Held-out test images and each decoder's reconstruction of them (a conditioned one's beside "
                       "its mask), from the first fold's best-epoch weights.",
    "error_vs_observed_": "The conditioned output's error against the number of distinct observed pixels, the "
                          "training condition marked (the numbers in the CSV).",
    "sampling_types": "The three mask samplers (exact, uniform, gaussian) on one image.",
    "generated_": "Images decoded from samples of each VQ-VAE's prior; a conditioned decoder's rows observe "
                  f"{OBSERVED_PIXELS} uniformly drawn pixels of a validation image, the same for every method, not "
                  "each one's training condition.",
    f"{OPTUNA_FIGURES}/": "Optuna's plots of the searches whose best parameters configurations here use, as "
                          "the searches stand now (one continued since the run may have another best): "
                          "optimization history, each trial's running mean over its folds, slices, parameter "
                          "importances and contours; a Pareto front for two objectives.",
}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def setup_text(suite: SuiteResults) -> str:
    """How the units trained, as far as the run recorded it: optimiser, precision, the devices and
    torch versions that trained them, validation images per fold and the command."""
    meta, done = suite.meta, completed(suite.results)
    parts = []
    if _number(meta.get("lr")):
        decay = meta.get("weight_decay")
        parts.append(f"AdamW (lr {meta['lr']:g}" + (f", weight decay {decay:g})" if _number(decay) else ")"))
    if meta.get("precision") in ("fp32", "bf16"):  # not an earlier version's unresolved "auto"
        parts.append(f"in {meta['precision']}")
    devices = sorted({*done["device"]} - {""}) if "device" in done else []
    versions = sorted({*done["torch"]} - {""}) if "torch" in done else []
    if devices:  # several where machines of a shared study differ: their training times do too
        unrecorded = int((done["device"] == "").sum())
        parts.append(f"on {' and '.join(f'`{d}`' for d in devices)}"
                     + (f" (torch {', '.join(versions)})" if versions else "")
                     + (f", {unrecorded} of {len(done)} units unrecorded" if unrecorded else ""))
    texts = [f"Trained with {' '.join(parts)}"] if parts else []
    if done["n_val"].notna().any():
        texts.append(f"{count_range(done['n_val'])} validation images per fold")
    if meta.get("command"):
        texts.append(f"run by `{meta['command']}`")
    units = suite.results  # those failed for good too
    taken = units["taken_from"][units["taken_from"] != ""] if "taken_from" in units else []
    if len(taken):  # by ``benchmark.reuse``
        runs = ", ".join(f"`{run}`" for run in sorted(set(taken)))
        texts.append(f"{len(taken)} of {len(units)} units taken from run {runs}, which had trained them with the "
                     "same settings")
    return "; ".join(texts) + "." if texts else ""


def _plot_command(study: str, meta: dict) -> str:
    """`studies plot` of a search a run took parameters from, with the storage the run read it from."""
    url = (meta.get("search_storages") or {}).get(study)  # absent from the exports of earlier versions: studies/
    command = f"`python -m benchmark studies plot {shlex.quote(study)}{StudyPlace().flags(study, url) if url else ''}`"
    return command + (" with the password in place of ***" if url and password_hidden(url) else "")


def count_range(counts: pd.Series) -> str:
    """``1,000``, or ``2–3`` where the folds' counts differ (folds of a size that does not divide evenly)."""
    low, high = int(counts.min()), int(counts.max())
    return f"{low:,}{f'–{high:,}' if high != low else ''}"


def index_text(suite: SuiteResults, files: list[Path], out_dir: Path, missing: list[MissingUnits],
               warnings: list[str], limits: list[str], training: str, numbers: tuple[str, str | None]) -> str:
    """index.md, the README of a report's folder ``out_dir``: what the run was (``training``: its
    images, epochs and batch), what limits its numbers (``limits``, tuned parameters and the
    ``warnings`` of the report), then the numbers themselves (``numbers``: the Markdown table and
    comparison, None without one), each file of ``files`` and what is missing."""
    meta = suite.meta
    described = {"table.csv": "tidy numbers: one row per configuration; parameters (`observed`: the pixels k a "
                              "Multidecoder's conditioned decoder sees, given or default), `n` folds done and "
                              "`complete` (all of them), `<metric>_mean/var/std/n` (variance ddof=0, std its "
                              "square root; `_n` finite values), `weights` (the model's trainable weights), "
                              "`seconds_mean` (a fold's training time; folds trained as one ensemble share it), "
                              "`<metric>_mean_diff/ci_low/ci_high/t/p/p_holm/rel_change/significant/n_pairs` "
                              "against the baseline (the 95% CI is per comparison, not Holm-adjusted; `p_holm` "
                              "only with every fold paired); `prior_*`: VQ-VAE prior NLL",
                 "table.tex": "booktabs table (needs `\\usepackage{booktabs,multirow}`)",
                 "table.md": "the same table in Markdown",
                 "comparison.md": "each method against its baseline: mean difference, 95% interval, relative "
                                  "change, Holm-adjusted p (the same numbers as table.csv's comparison columns)",
                 "comparison.tex": "the comparison as a booktabs table",
                 "missing.txt": "configurations short of complete folds, with the errors of failed units"}
    repeats = int(meta.get("repeats", 1) or 1)
    total = len(meta["configurations"])
    short = sum(m.config_id in meta["configurations"] for m in missing)  # not those found beyond the suite's list
    lines = [f"# Report of suite `{suite.suite}`", "",
             f"Dataset `{meta.get('dataset', '?')}`, {meta['folds']} folds"
             + (f" × {repeats} repeats" if repeats > 1 else "")
             + f", seed {meta.get('seed', '?')}; {training or 'training size unknown'}; "
             f"{total - short} of {total} configurations complete"
             + (" (the others: Missing, at the end)." if short else "."), ""]
    if setup := setup_text(suite):
        lines += [setup, ""]
    if limits:
        lines += ["## Caveats", "", *(f"- {c}" for c in limits), ""]
    tuned = meta.get("params_from") or {}
    if tuned:
        lines += ["## Tuned parameters", "",
                  "These configurations use the best parameters of an Optuna search. The search chose them by "
                  "their validation scores on images that these folds use again (where it searched this dataset: "
                  "a caveat names a search that trained otherwise), so their scores here are optimistic "
                  "(selection bias). A `--seed` other than "
                  "the search's gives new folds (and, for datasets without an official test split or with "
                  "`--limit`, a partly different training pool), which lessens the bias but does not remove it; "
                  "only images that the search never saw (nested cross-validation) would.", ""]
        plotted = {path.parent.name for path in files if path.parent.parent.name == OPTUNA_FIGURES}
        lines += [f"- `{config_id}`: from study `{study}` (its Optuna plots: "
                  + (f"`figures/{OPTUNA_FIGURES}/{file_name(study)}/`, below)" if file_name(study) in plotted else
                     f"{_plot_command(study, meta)})") for config_id, study in tuned.items()] + [""]
    if warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    # After all that says what the numbers can and cannot be read as
    table_md, comparison_md = numbers
    lines += ["## Results", "", "### Cross-validation", "", table_md.rstrip("\n"), ""]
    if comparison_md is not None:
        lines += ["### Each method against its baseline", "", comparison_md.rstrip("\n"), ""]
    lines += ["## Tables", ""]
    figures: dict[str, list[str]] = {}
    for path in files:
        relative = path.relative_to(out_dir).as_posix()
        if relative in described:
            lines.append(f"- [`{relative}`]({relative}): {described[relative]}")
        else:  # one line per figure, linking its formats
            figure = path.relative_to(out_dir / "figures").with_suffix("").as_posix()
            figures.setdefault(figure, []).append(f"[{path.suffix[1:]}]({relative})")
    if figures:
        lines += ["", "## Figures"]
        for prefix, text in FIGURE_KINDS.items():
            stems = [stem for stem in figures if stem.startswith(prefix)]
            if stems:
                lines += ["", text, ""] + [f"- `{stem}`: {' · '.join(figures[stem])}" for stem in stems]
    if missing:
        lines += ["", f"## Missing ({len(missing)} configuration{'s' * (len(missing) != 1)})", ""]
        lines += [f"- {m.describe()}" for m in missing]
    return "\n".join(lines) + "\n"
