"""What limits a report's numbers, read from the run itself: the caveats that ``index.md`` and
``report``'s output list above the tables (``caveats``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmark.balancing import BalanceConfig, idle_softadapt_note
from benchmark.cv import fold_label
from benchmark.params_from import TRAINING_SETTINGS, training_changes, training_differences
from benchmark.prior_stage import settings_flags
from benchmark.results import SuiteResults, results_dir_flag
from benchmark.stats import (DIVERGED_FACTOR, compare_with_baseline, completed, diverged_folds, format_mean_var,
                             reference_baseline)

if TYPE_CHECKING:
    import optuna

    from benchmark.search_space import SearchSettings

    Searches = dict[str, tuple[optuna.Study, SearchSettings] | ValueError]  # a search, or why it cannot be read

COLLAPSED_CODEBOOK = 0.1  # a codebook used at a perplexity under this share of its codes gets a caveat
STEADY_PAIRS = 5  # the default folds: a comparison on fewer paired folds gets a caveat
SHOWN_FOLDS = 5  # diverged folds a caveat names before it counts the rest
UNSTEADY_TIMES = 3.0  # folds of one configuration whose times differ by more than this factor get a caveat,
UNSTEADY_SECONDS = 5.0  # and by more than this: a run's start-up adds about a second to its first unit


def caveats(suite: SuiteResults, searches: Searches | None = None) -> list[str]:
    """What limits the numbers, read from the run itself: methods without their baseline, comparisons
    on few paired folds, folds that diverged without failing, methods and their baseline not tuned
    alike, folds still improving at their last epoch (not converged), folds of one configuration
    timed far apart, priors that say little and VQ-VAE configurations without one, SoftAdapt
    configurations that trained too few steps to re-weight, and the ``searches`` (``run
    --params-from``) that tuned parameters with other training than the run's."""
    meta, done, notes = suite.meta, completed(suite.results), []
    models = suite.results.groupby(["family", "config"], sort=False)
    alone = [f"{family}/{config}" for (family, config), rows in models if not (rows["method"] == "baseline").any()]
    if alone:
        notes.append(f"no baseline of {', '.join(alone)} in these results, so the methods there are not compared "
                     f"with one: list `{alone[0]}/baseline` in the suite and run it again (a suite file can grow; "
                     "its units already done are kept).")
    # A baseline without a fold done leaves its methods' comparisons empty: the report would just lack them.
    undone = [baseline for (family, config), rows in models
              if (baseline := reference_baseline(family, config, rows)) and (rows["config_id"] != baseline).any()
              and not (done["config_id"] == baseline).any()]
    if undone:
        one = len(undone) == 1
        notes.append(f"baseline{'' if one else 's'} {', '.join(undone)} {'has' if one else 'have'} no fold done, so "
                     f"the methods of {'its' if one else 'their'} model config are not compared with "
                     f"{'it' if one else 'them'} (missing.txt says why): run the suite again to train what is "
                     "unfinished; a diverged one is failed for good: train the suite with other settings (a lower "
                     "`lr` in a suite file) under a `--name` of its own.")
    notes += [note for note in (_pairing_note(suite), _diverged_note(suite)) if note] + _unequal_tuning_notes(suite)
    epochs = meta.get("epochs")
    # Per configuration: one still improving must not hide behind others that converged (its
    # comparison with them would partly measure the training it still lacked).
    kept = {config_id: rows.dropna() for config_id, rows in done.groupby("config_id", sort=False)["best_epoch"]
            } if epochs else {}
    unconverged = {config_id: folds for config_id, folds in kept.items()
                   if 2 * int((folds == epochs).sum()) > len(folds)}
    if unconverged:
        last = sum(int((folds == epochs).sum()) for folds in unconverged.values())
        folds = sum(len(folds) for folds in unconverged.values())
        every = len(unconverged) == sum(len(folds) > 0 for folds in kept.values())
        which = "" if every else f" of {' and '.join(_named(unconverged, done))}"
        why = ("the folds trained one epoch" if epochs == 1 else
               f"{last} of {folds} folds{which} kept their last epoch ({epochs}): the validation loss was still "
               "falling when training stopped")
        notes.append(f"{why}, so {'the' if every else 'those'} models are not converged and longer training "
                     "(`--epochs`) would change these numbers; "
                     + ("compare rows within this report (all trained alike), not with the thesis's table." if every
                        else "their comparison with rows that peaked earlier partly measures the training they still "
                             "lacked, and no row of this report compares with the thesis's table."))
    if "recon_mean_image" in done:  # absent from the exports of earlier versions
        means = done.dropna(subset=["recon", "recon_mean_image"]).groupby("config_id", sort=False)[
            ["recon", "recon_mean_image"]].mean()
        blank = means[means["recon"] >= means["recon_mean_image"]]
        if len(blank):
            listed = ", ".join(f"{config_id} ({format_mean_var(row.recon, None)} ≥ "  # as the table writes means
                               f"{format_mean_var(row.recon_mean_image, None)})" for config_id, row in blank.iterrows())
            notes.append(f"configurations that reconstruct no better than the mean training image does (its "
                         f"per-pixel MSE as every validation image's reconstruction): {listed}; they learnt nothing "
                         "of each image, so their rows and comparisons say little: train longer (`--epochs`).")
    busy = done["busy_load"].dropna() if "busy_load" in done else pd.Series(dtype=float)
    if len(busy):
        notes.append(f"{len(busy)} of {len(done)} units finished while other work kept the machine busy (load average "
                     f"up to {busy.max():.1f}): their training times (`seconds` in the results, `seconds_mean` in "
                     "table.csv) are high, so compare costs of units trained alone.")
    notes += _unsteady_times_notes(done)
    if suite.prior is not None:
        notes += prior_notes(suite.prior) + _priorless_notes(suite, done)
    if done["softadapt"].astype(bool).any() and epochs and meta.get("batch_size") and done["n_train"].notna().any():
        # A results CSV does not record SoftAdapt's period: the suites train at BalanceConfig's.
        idle = idle_softadapt_note([BalanceConfig(softadapt=True)], int(done["n_train"].min()),
                                   int(meta["batch_size"]), int(epochs))
        if idle:
            notes.append(idle.removeprefix("note: ") + ", so their rows measure uniform weighting, not SoftAdapt.")
    return notes + _tuning_notes(suite.meta, searches or {}) + _moved_best_notes(suite.meta, searches or {})


def _unsteady_times_notes(done: pd.DataFrame) -> list[str]:
    """Configurations whose folds did the same work (on one device, alone or in ensembles of one
    size) in times over ``UNSTEADY_TIMES`` apart and ``UNSTEADY_SECONDS`` more: something slowed
    some of them (other work, threads contending for the cores), which the load average at a
    unit's end can miss. The floor keeps a run's start-up in its first unit out."""
    timed = done[done["seconds"] > 0]
    # Results made in memory, or exported before units recorded their device and ensemble
    timed = timed.assign(device=timed.get("device", ""),
                         stacked=timed.get("stacked", pd.Series(1, index=timed.index)).fillna(1))
    seconds = timed.groupby(["config_id", "device", "stacked"], sort=False)["seconds"].agg(["min", "max"])
    unsteady = seconds[(seconds["max"] > UNSTEADY_TIMES * seconds["min"])
                       & (seconds["max"] - seconds["min"] > UNSTEADY_SECONDS)]
    if unsteady.empty:
        return []
    listed = ", ".join(f"{config_id} ({row['min']:.3g}–{row['max']:.3g} s)"
                       for (config_id, _, _), row in unsteady.iterrows())
    return [f"training times that differ over {UNSTEADY_TIMES:g}× between folds of one configuration that did the "
            f"same work: {listed}; something slowed some folds (other work on the machine, threads contending for "
            "its cores), so their costs (`seconds`, `seconds_mean`) are unreliable: time them again on an idle "
            "machine."]


def _named(config_ids: Iterable[str], done: pd.DataFrame) -> list[str]:
    """``config_ids`` as a reader takes them in: a model config (``vae/1``) where they are all of
    its configurations in ``done``, else each configuration."""
    config_ids = set(config_ids)
    names = []
    for (family, config), rows in done.groupby(["family", "config"], sort=False):
        ids = list(dict.fromkeys(rows["config_id"]))
        if set(ids) <= config_ids:
            names.append(f"{family}/{config}")
        else:
            names += [config_id for config_id in ids if config_id in config_ids]
    return names


def _unequal_tuning_notes(suite: SuiteResults) -> list[str]:
    """Model configs whose methods and the baseline they are compared with (``compare_with_baseline``'s)
    were not tuned alike: methods that took parameters from a search against a baseline that kept its
    defaults, or the other way round; either difference is partly the tuning's."""
    if "params_from" not in suite.results:  # results made in memory, not read from an export
        return []
    untuned_baseline, untuned_methods = [], []
    for (family, config), rows in suite.results.groupby(["family", "config"], sort=False):
        reference = reference_baseline(family, config, rows)
        if reference is None:
            continue
        tuned = rows.loc[rows["method"] != "baseline", "params_from"] != ""
        baseline_tuned = bool(rows.loc[rows["config_id"] == reference, "params_from"].iloc[0])
        if tuned.any() and not baseline_tuned:
            untuned_baseline.append(f"{family}/{config}")
        elif baseline_tuned and not tuned.all():
            untuned_methods.append(f"{family}/{config}")
    mixed = "so their differences mix the method's effect with the tuning's"
    notes = []
    if untuned_baseline:
        notes.append(f"in {', '.join(untuned_baseline)}, methods took parameters from a search but the baseline they "
                     f"are compared with kept its defaults, {mixed}: search the baseline too (`search --method "
                     "baseline`) and name both searches in `--params-from`, under a new `--name`.")
    if untuned_methods:
        notes.append(f"in {', '.join(untuned_methods)}, the baseline took parameters from a search but some methods "
                     f"compared with it kept their defaults, {mixed}: search those methods too and name every search "
                     "in `--params-from`, under a new `--name`.")
    return notes


def prior_notes(prior: pd.DataFrame) -> list[str]:
    """Caveats on the prior NLL column: priors still improving at their last epoch, priors worse
    than the codes' frequencies alone predict, and codebooks used at a small fraction of their codes (few codes are easy
    to predict: a low NLL there says little of the prior); and on the generated images: temperatures that differ."""
    notes = []
    if {"best_epoch", "epochs"} <= set(prior):
        last = prior[prior["best_epoch"] >= prior["epochs"]]
        if len(last) and (last["epochs"] == 1).all():  # one epoch is always the last: it says nothing more
            notes.append(f"{len(last)} of {len(prior)} priors trained one epoch, so longer prior training "
                         "(`prior --epochs`) would likely lower their NLL.")
        elif len(last):
            notes.append(f"{len(last)} of {len(prior)} priors kept their last epoch "
                         f"({', '.join(sorted({f'{e:g}' for e in last['epochs']}))}): their NLL was still falling "
                         "when training stopped, so longer prior training (`prior --epochs`) would lower it.")
    if {"val_nll_nats", "uniform_nats"} <= set(prior):
        # The bar: a prior that knows only how often each code occurs in the training codes; a PixelCNN that
        # sees each code's neighbours must beat it. Priors of an earlier version recorded only the validation
        # codes' own entropy, ln(perplexity), which such a prior cannot reach (it is a lower bar).
        bar = prior["frequency_nats"] if "frequency_nats" in prior else pd.Series(np.nan, index=prior.index)
        older = bar.isna()
        if "code_perplexity" in prior:
            bar = bar.fillna(np.log(prior["code_perplexity"]))
        bar = bar.fillna(prior["uniform_nats"])
        worse = prior[prior["val_nll_nats"] > bar]
        if len(worse):
            listed = ", ".join(f"{row.config_id} ({row.val_nll_nats:.3f} > {b:.3f})"
                               for row, b in zip(worse.itertuples(), bar[worse.index]))
            older_bar = ("; for a prior of an earlier version, which did not record that, the validation codes' own "
                         "entropy, ln of their perplexity" if older[worse.index].any() else "")
            notes.append(f"priors that score worse than one that knows only how often each code occurs in the "
                         f"training codes (nats per code{older_bar}): {listed}; they failed to fit (too few epochs or "
                         "too small a PixelCNN: `prior --epochs`, `--hidden`, `--layers`), so their NLL says nothing "
                         "of the codes' structure.")
    if {"code_perplexity", "uniform_nats"} <= set(prior):
        codes = np.exp(prior["uniform_nats"])  # a uniform prior's NLL is ln K
        narrow = prior[prior["code_perplexity"] < COLLAPSED_CODEBOOK * codes]
        if len(narrow):
            listed = ", ".join(f"{row.config_id} ({row.code_perplexity:.1f} of {k:.0f})"
                               for row, k in zip(narrow.itertuples(), codes[narrow.index]))
            notes.append(f"codebooks used at a perplexity under {COLLAPSED_CODEBOOK:.0%} of their codes: {listed}; "
                         "few codes in use are easy to predict, so a low prior NLL there does not mean a better "
                         "prior: compare priors together with their perplexities.")
    if "temperature" in prior and prior["temperature"].nunique() > 1:  # a --redraw or --config of its own
        drawn = "; ".join(f"{t:g}: {', '.join(rows['config_id'])}" for t, rows in prior.groupby("temperature"))
        notes.append(f"generated images drawn at different temperatures ({drawn}); a lower one gives sharper, less "
                     "varied images, so compare the grids at one (`prior --redraw --temperature`).")
    return notes


def _priorless_notes(suite: SuiteResults, done: pd.DataFrame) -> list[str]:
    """Where the prior stage has run, the VQ-VAE configurations with folds done that have no prior, and whose
    prior was not left out (``suite.prior_problems`` names those): their Prior NLL is – as a Gaussian VAE's is.
    Those whose fold of the priors is not done cannot have one until the run finishes it."""
    fitted, vq = set(suite.prior["config_id"]), done[done["family"] == "vq-vae"]
    missing = [config_id for config_id in vq["config_id"].unique()
               if config_id not in fitted and config_id not in suite.priors_left_out]
    folds = suite.prior["fold"].dropna()
    fold = int(folds.iloc[0]) if len(folds) else None  # one for every prior: a stage refuses to mix them
    unfit = [config_id for config_id in missing
             if fold is not None and not ((vq["config_id"] == config_id) & (vq["fold"] == fold)).any()]
    fit = [config_id for config_id in missing if config_id not in unfit]

    # None where the other priors record no one set of settings (an earlier version's): a prior of
    # these cannot join them, so the command fits every prior again
    flags = settings_flags(suite.prior)

    def command(config_ids: list[str]) -> str:
        stage = f"python -m benchmark prior --suite {suite.suite}{results_dir_flag(suite.results_dir)}"
        return f"`{stage} --config {' '.join(config_ids)} {flags}`" if flags else f"`{stage}`"

    notes = []
    if fit:
        fits = ("fits them with the settings of the other priors" if flags else "fits them, and the others again: "
                "those record no one set of settings that a new prior could share")
        notes.append(f"VQ-VAE configurations without a prior, so with no Prior NLL (–): {', '.join(fit)}; the prior "
                     f"stage stopped before them or was not asked for them. {command(fit)} {fits}.")
    if unfit:
        notes.append(f"VQ-VAE configurations without a prior, so with no Prior NLL (–), whose fold {fold} (the one "
                     f"every prior is fitted on) is not done: {', '.join(unfit)}; run the suite again to finish it, "
                     f"then {command(unfit)}.")
    return notes


def _pairing_note(suite: SuiteResults) -> str | None:
    """The caveat on t-tests that rest on few paired folds: the fewest any comparison pairs, of
    those planned; None when no comparison pairs a fold or each pairs ``STEADY_PAIRS`` or more."""
    folds, repeats = int(suite.meta.get("folds", 5)), int(suite.meta.get("repeats", 1) or 1)
    comparison = compare_with_baseline(suite.results, k=folds, repeats=repeats)
    pairs = comparison[comparison["n_pairs"] > 0].groupby("config_id")["n_pairs"].max()
    if pairs.empty or pairs.min() >= STEADY_PAIRS:
        return None
    fewest, planned = int(pairs.min()), suite.expected_folds
    subject = "each comparison pairs only" if pairs.nunique() == 1 else "a comparison pairs as few as"
    short = f" of the {planned} planned (missing.txt says why the others are missing)" if fewest < planned else ""
    if fewest == 1:
        consequence = "so it has no t-test: one difference has no spread to test against"
    else:
        consequence = (f"so its t-test has {fewest - 1} degree{'s' * (fewest != 2)} of freedom: it rarely detects "
                       "a real difference and rests on a rough variance estimate")
    if planned >= STEADY_PAIRS:
        advice = ""  # enough folds planned: only the missing ones weaken the test
    elif repeats == 1:
        advice = "; 5 folds (the default) or `--repeats` give a steadier test"
    else:
        advice = f"; more folds (`--folds`, 5 by default) or more than {repeats} `--repeats` give a steadier test"
    return f"{subject} {fewest} fold{'s' * (fewest != 1)}{short}, {consequence}{advice}."


def _diverged_note(suite: SuiteResults) -> str | None:
    """The caveat naming the folds ``stats.diverged_folds`` finds (the KL bound: C·H·W·ln 256 nats,
    what storing the 8-bit image verbatim costs, when the export knows its images), or None."""
    meta = suite.meta
    known = meta.get("image_channels") and meta.get("image_size")
    bound = int(meta["image_channels"]) * int(meta["image_size"]) ** 2 * math.log(256) if known else math.inf
    found = diverged_folds(suite.results, bound)
    if found.empty:
        return None
    names = {"recon": "reconstruction", "recon_cond": "conditioned reconstruction"}
    found["text"] = [f"validation {names.get(metric) or ('KL' if family == 'vae' else 'VQ loss')} {value:.3g}"
                     for metric, family, value in zip(found["metric"], found["family"], found["value"])]
    count, repeats = int(meta.get("folds", 5)), int(meta.get("repeats", 1) or 1)
    folds = [f"{config_id} {fold_label(fold, count, repeats)}: {', '.join(rows['text'])}"
             for (config_id, fold), rows in found.groupby(["config_id", "fold"], sort=False)]
    more = f"; and {len(folds) - SHOWN_FOLDS} more" if len(folds) > SHOWN_FOLDS else ""
    kl = (f", or a Gaussian VAE's KL is above {bound:,.0f} nats (more than storing the "
          f"{meta['image_channels']}×{meta['image_size']}×{meta['image_size']} 8-bit image verbatim costs)"
          if known else "")
    lr = "`[train] lr` in a suite file" + (f"; {meta['lr']:g} here" if meta.get("lr") else "")
    return (f"folds that look diverged though their loss stayed finite: {'; '.join(folds[:SHOWN_FOLDS])}{more}. A "
            f"fold looks diverged when a metric is over {DIVERGED_FACTOR:,} × the median of its model config's "
            f"folds{kl}. They count in the table and the comparisons as they are, so those rows' means, variances "
            f"and tests say little; a lower learning rate ({lr}) usually keeps training stable.")


def _tuning_notes(meta: dict, searches: Searches) -> list[str]:
    """A caveat for each search that tuned this run's parameters with other training than the run's."""
    here = {key: meta[key] for key in TRAINING_SETTINGS if key in meta}
    found = []
    for name, search in searches.items():
        if isinstance(search, ValueError):
            continue
        there = asdict(search[1])
        differ = training_differences(there, here)
        if differ:
            found.append(f"search `{name}` trained otherwise than this run ({training_changes(there, here, differ)}): "
                         "its best parameters were chosen for that training, and need not be the best for this one.")
    return found


def _moved_best_notes(meta: dict, searches: Searches) -> list[str]:
    """A caveat for each configuration whose search has found another best since the run took its parameters
    (the search went on): the report's Optuna plots show a best that the table's row did not train."""
    from benchmark.search_space import configuration_for
    from benchmark.studies import best_trial

    notes = []
    for config_id, name in (meta.get("params_from") or {}).items():
        search = searches.get(name)
        if search is None or isinstance(search, ValueError) or (best := best_trial(search[0])) is None:
            continue
        now = configuration_for(search[1], best.params).id
        if now != config_id:
            notes.append(f"search `{name}` has found another best since this run took its parameters: trial "
                         f"#{best.number}, `{now}`, where the table's row trained `{config_id}`; once that one's "
                         "units are all done, the same command trains the new best in its place (the study keeps "
                         "this one's units).")
    return notes


__all__ = ["caveats", "prior_notes"]
