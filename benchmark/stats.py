"""Aggregation over folds and the paired comparison of every method with its baseline.

Pure functions on numpy arrays and pandas frames (no I/O). Input is the tidy per-fold
results frame the runner exports (one row per configuration and fold, see SPEC "Report");
only ``state == "COMPLETE"`` rows count.

Variance is the population variance (ddof=0) as in the thesis's table. Comparisons use the
corrected resampled t-test (Nadeau & Bengio, 2003) because k-fold training sets overlap and
the plain paired t-test is too optimistic; p-values of the methods of one model config are
Holm-adjusted per metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.balancing import DEFAULT_SOFTADAPT_BETA, DEFAULT_VARIANT
from benchmark.models import DEFAULT_BETA

METRICS = ("recon", "latent", "recon_cond")
COMPARED = ("recon", "latent")          # the conditioned decoder has no baseline counterpart
PARAMETERS = ("config_id", "family", "config", "method", "sampling", "exponent", "count", "softadapt",
              "w1", "w2", "beta", "softadapt_beta", "variant", "params_from")
ALPHA = 0.05
DIVERGED_FACTOR = 1000  # how far above its model config's median a fold's metric looks diverged
METHOD_TITLES = {"baseline": "Baseline", "multidecoder": "Multidecoder", "single": "Single decoder"}
COMPARISON_FIELDS = ("n_pairs", "baseline_mean", "mean_diff", "ci_low", "ci_high", "t", "p", "p_holm",
                     "rel_change", "significant")


def completed(results: pd.DataFrame) -> pd.DataFrame:
    """The COMPLETE rows, one per (config_id, fold) (the last one wins if a unit was exported twice)."""
    done = results[results["state"] == "COMPLETE"]
    return done.drop_duplicates(["config_id", "fold"], keep="last")


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the parameters, then for each metric ``<m>_mean``, ``<m>_var``
    (ddof=0; NaN for fewer than two values), ``<m>_std`` (= sqrt of that variance) and ``<m>_n``
    (finite COMPLETE values),
    plus ``n`` (COMPLETE folds), ``seconds_mean`` and ``best_epoch_min``/``_max`` (the epochs the
    folds kept: each fold's lowest validation total).

    Every configuration in ``results`` gets a row, in order of first appearance; one with no
    COMPLETE fold has n = 0 and NaN statistics.
    """
    order = pd.unique(results["config_id"])
    params = [c for c in PARAMETERS if c in results.columns]
    table = results.drop_duplicates("config_id").set_index("config_id")[params[1:]].reindex(order)
    done = completed(results)
    grouped = done.groupby("config_id", sort=False)
    columns: dict[str, pd.Series] = {"n": grouped["fold"].nunique()}
    for metric in METRICS:
        values = grouped[metric]
        columns[f"{metric}_mean"] = values.mean()
        columns[f"{metric}_n"] = values.count()
        # one fold has no spread to measure: NaN, not pandas' 0 (which reads as folds that agreed)
        columns[f"{metric}_var"] = values.var(ddof=0).where(columns[f"{metric}_n"] > 1)
        columns[f"{metric}_std"] = np.sqrt(columns[f"{metric}_var"])
    if "seconds" in done.columns:
        columns["seconds_mean"] = grouped["seconds"].mean()
    if "best_epoch" in done.columns:
        columns["best_epoch_min"] = grouped["best_epoch"].min()
        columns["best_epoch_max"] = grouped["best_epoch"].max()
    stats = pd.DataFrame(columns).reindex(order)
    for name in ["n", *(f"{m}_n" for m in METRICS)]:
        stats[name] = stats[name].fillna(0).astype(int)
    for name in ("best_epoch_min", "best_epoch_max"):
        if name in stats:
            stats[name] = stats[name].astype("Int64")
    out = table.join(stats)
    out.index.name = "config_id"
    return out.reset_index()


@dataclass(frozen=True)
class TTest:
    """Result of the corrected resampled t-test on differences d (method − baseline)."""

    n: int            # number of differences used
    mean: float       # mean difference
    t: float
    p: float          # two-sided
    ci_low: float     # 95% interval of the mean difference
    ci_high: float
    df: int


def corrected_resampled_ttest(d: np.ndarray | list[float], n_train: int, n_val: int, k: int,
                              repeats: int = 1, confidence: float = 0.95) -> TTest:
    """Nadeau & Bengio's corrected resampled t-test (Bouckaert & Frank's form for repeats).

    t = mean(d) / sqrt((1/J + n_val/n_train) · var(d, ddof=1)) with J − 1 degrees of freedom,
    where J = k·repeats for a full run. Non-finite differences are dropped; when some folds
    are missing, J is the number of differences actually averaged (the 1/J term is the
    variance of their mean). Zero variance gives p = 1 if mean(d) = 0 and p = 0 (t = ±inf)
    otherwise; fewer than two differences give NaN. Never warns.
    """
    values = np.asarray(d, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if k < 2 or repeats < 1 or n_train <= 0 or n_val <= 0:
        raise ValueError(f"need k >= 2, repeats >= 1 and positive set sizes, got k={k}, repeats={repeats}, "
                         f"n_train={n_train}, n_val={n_val}")
    if len(values) > k * repeats:
        raise ValueError(f"{len(values)} differences for {k} folds × {repeats} repeat{'s' * (repeats != 1)}: at most "
                         f"one per fold and repeat ({k * repeats})")
    n = len(values)
    if n < 2:
        mean = float(values[0]) if n else math.nan
        return TTest(n, mean, math.nan, math.nan, math.nan, math.nan, max(n - 1, 0))
    mean, var, df = float(values.mean()), float(values.var(ddof=1)), n - 1
    if var == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        return TTest(n, mean, t, 1.0 if mean == 0.0 else 0.0, mean, mean, df)
    se = math.sqrt((1.0 / n + n_val / n_train) * var)
    t = mean / se
    p = float(2.0 * sps.t.sf(abs(t), df))
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df)) * se
    return TTest(n, mean, t, p, mean - half, mean + half, df)


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    # p_(i) · (m − i + 1), made monotone from the smallest up, capped at 1.
    steps = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted[order] = steps
    return adjusted


def _set_sizes(rows: pd.DataFrame, k: int) -> tuple[float, float]:
    """Mean training / validation set sizes of the paired folds (k-fold ratio if not exported)."""
    if {"n_train", "n_val"} <= set(rows.columns):
        n_train, n_val = rows["n_train"].mean(), rows["n_val"].mean()
        if np.isfinite(n_train) and np.isfinite(n_val) and n_train > 0 and n_val > 0:
            return float(n_train), float(n_val)
    return float(k - 1), 1.0


def reference_baseline(family: str, config: int, rows: pd.DataFrame) -> str | None:
    """The config id of the baseline that the methods of model config ``family``/``config`` (its
    ``rows`` of the results) are compared with: the plain one where listed, else the first
    baseline listed; None without one."""
    baselines = list(rows.loc[rows["method"] == "baseline", "config_id"].unique())
    plain = f"{family}/{config}/baseline"
    return plain if plain in baselines else next(iter(baselines), None)


def compare_with_baseline(results: pd.DataFrame, k: int | None = None, repeats: int = 1) -> pd.DataFrame:
    """Each configuration against the baseline of its (family, config), paired on fold.

    The reference baseline of a (family, config) is its plain one (``<family>/<config>/baseline``,
    default weights), or its first if a suite has only others; further baselines (other weights)
    are compared with the reference like any method.

    Returns one row per (configuration, metric in ``COMPARED``) with ``config_id, family,
    config, method, metric`` and ``COMPARISON_FIELDS``: pairs used, baseline mean over those
    folds, mean difference (method − baseline; negative = lower loss), its 95% CI, t, p,
    Holm-adjusted p (over the methods of one family/config, per metric), relative change
    (mean_diff / baseline_mean) and ``significant`` (p_holm < 0.05). ``k`` defaults to the
    number of distinct folds divided by ``repeats``. Configurations without a baseline get NaN.
    Only a comparison on all k·repeats folds gets ``p_holm`` and can be ``significant``; t, p
    and the CI of one short of folds describe the folds that were done.
    """
    done = completed(results)
    if k is None:
        k = max(2, results["fold"].nunique() // max(repeats, 1))
    rows: list[dict] = []
    # Every configuration in the results gets its comparisons, finished or not: the reference
    # is never another baseline standing in for a plain one with no fold done, and one with no
    # fold done stays in Holm's family.
    for (family, config), every in results.groupby(["family", "config"], sort=False):
        reference = reference_baseline(family, config, every)
        base = done[done["config_id"] == reference]
        for config_id, planned in every[every["config_id"] != reference].groupby("config_id", sort=False):
            runs = done[done["config_id"] == config_id]
            paired = runs.merge(base, on="fold", suffixes=("", "_base"))
            n_train, n_val = _set_sizes(paired, k)
            for metric in COMPARED:
                pair = paired[[metric, f"{metric}_base"]].dropna()
                test = corrected_resampled_ttest(pair[metric] - pair[f"{metric}_base"], max(n_train, 1),
                                                 max(n_val, 1), k, repeats)
                base_mean = float(pair[f"{metric}_base"].mean()) if len(pair) else math.nan
                rows.append({"config_id": config_id, "family": family, "config": config,
                             "method": planned["method"].iloc[0], "metric": metric, "n_pairs": test.n,
                             "baseline_mean": base_mean, "mean_diff": test.mean, "ci_low": test.ci_low,
                             "ci_high": test.ci_high, "t": test.t, "p": test.p,
                             "rel_change": test.mean / base_mean if base_mean else math.nan})
    columns = ["config_id", "family", "config", "method", "metric", *COMPARISON_FIELDS]
    out = pd.DataFrame(rows, columns=columns)
    if out.empty:
        return out
    # A comparison short of folds (diverged, failed or unfinished) is tested only on the folds
    # that survived, which biases it; it claims nothing, yet keeps its place in Holm's family
    # (as p = 1) so that the others are not corrected for fewer comparisons than were made.
    full = out["n_pairs"] == k * repeats
    out["p_holm"] = out["p"].where(full, 1.0).groupby([out["family"], out["config"], out["metric"]],
                                                       sort=False).transform(
        lambda p: pd.Series(holm(p.to_numpy()), index=p.index)).where(full)
    out["significant"] = out["p_holm"] < ALPHA
    return out


def comparison_wide(comparison: pd.DataFrame) -> pd.DataFrame:
    """``compare_with_baseline`` output as one row per config_id: ``<metric>_<field>`` columns."""
    fields = list(COMPARISON_FIELDS)
    if comparison.empty:
        return pd.DataFrame(columns=["config_id", *(f"{m}_{f}" for m in COMPARED for f in fields)])
    wide = comparison.pivot(index="config_id", columns="metric", values=fields)
    wide.columns = [f"{metric}_{field}" for field, metric in wide.columns]
    ordered = [f"{m}_{f}" for m in COMPARED for f in fields if f"{m}_{f}" in wide.columns]
    wide = wide[ordered]
    for column in ordered:  # pivot leaves object columns; restore numbers and flags
        kind = bool if column.endswith("_significant") else int if column.endswith("_n_pairs") else float
        wide[column] = wide[column].astype(kind)
    return wide.reset_index()


def diverged_folds(results: pd.DataFrame, kl_bound: float = math.inf) -> pd.DataFrame:
    """COMPLETE folds whose metrics blew up without overflowing (training fails a unit only at NaN
    or inf): one row per (fold, metric) flagged, with ``config_id, family, fold, metric, value``, in
    the results' order. A value is flagged when over ``DIVERGED_FACTOR`` × the median of that metric
    over the folds of its (family, config), since healthy folds of a model config stay within an order
    of magnitude or two and diverged ones are off by many; a Gaussian VAE's KL also when above
    ``kl_bound`` nats, which flags diverged folds even where they are the median."""
    done = completed(results).reset_index(drop=True)
    flags = []
    for metric in METRICS:
        median = done.groupby(["family", "config"])[metric].transform("median")
        limit = (DIVERGED_FACTOR * median).where(median > 0, math.inf)
        if metric == "latent":
            limit = limit.where(done["family"] != "vae", limit.clip(upper=kl_bound))
        flagged = done[done[metric] > limit]
        flags.append(pd.DataFrame({"order": flagged.index, "config_id": flagged["config_id"],
                                   "family": flagged["family"], "fold": flagged["fold"].astype(int),
                                   "metric": metric, "value": flagged[metric]}))
    out = pd.concat(flags, ignore_index=True).sort_values("order", kind="stable")
    return out.drop(columns="order").reset_index(drop=True)


def format_mean_var(mean: float, var: float | None) -> str:
    """Thesis number style: ``13.9709 ± 9.2e-01`` (variance to 2 significant digits in
    scientific notation). The mean has 4 decimals from 0.1 up and 3 significant digits below
    (``0.00250``, ``0.000736``), where 4 decimals would print different means alike; ``–`` when
    the mean is missing, and the mean alone when the variance is (a single fold). A mean of 10⁵
    or more (a diverging run) is in scientific notation too, not 25 digits."""
    if mean is None or not np.isfinite(mean):
        return "–"
    text = f"{mean:.3e}" if abs(mean) >= 1e5 else f"{mean:.4f}" if abs(mean) >= 0.1 else f"{mean:#.3g}"
    if var is None or not np.isfinite(var):
        return text
    return f"{text} ± {var:.1e}"


def _number(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def parameter_text(row: pd.Series | dict) -> str:
    """Short plain-text description of a configuration's method parameters.

    e.g. ``exact, SoftAdapt``, ``gaussian, a=40``, ``uniform, W₁=1, W₂=0.5, β=1``; weights and
    SoftAdapt's β are shown only when they differ from the defaults (weights 1, the family's β
    and SoftAdapt β), then ``tuned`` for parameters taken from a search; ``–`` for a default baseline.
    """
    method = str(row.get("method", ""))
    default_beta = DEFAULT_BETA.get(str(row.get("family")), 1.0)
    parts = [str(row["sampling"])] if isinstance(row.get("sampling"), str) and row.get("sampling") else []
    count, exponent = _number(row.get("count")), _number(row.get("exponent"))
    if math.isfinite(count):
        parts.append(f"k={count:g}")
    if math.isfinite(exponent):
        parts.append(f"a={exponent:g}")
    if str(row.get("softadapt", False)).lower() in ("true", "1", "1.0"):
        beta = _number(row.get("softadapt_beta"))
        default = DEFAULT_SOFTADAPT_BETA.get(str(row.get("family")))
        variant = row.get("variant")
        shown = isinstance(variant, str) and variant not in ("", DEFAULT_VARIANT)  # "" in an earlier version's CSV
        name = f"SoftAdapt ({variant})" if shown else "SoftAdapt"
        parts.append(f"{name} β={beta:g}" if math.isfinite(beta) and beta != default else name)
        latent_beta = _number(row.get("beta"))  # the model's β, inside the latent term that SoftAdapt weighs
        if math.isfinite(latent_beta) and latent_beta != default_beta:
            parts.append(f"β={latent_beta:g}")
    else:
        names = ("w1", "w2", "beta") if method == "multidecoder" else ("w1", "beta")  # w2: its second decoder
        defaults = {"w1": 1.0, "w2": 1.0, "beta": default_beta}
        weights = {name: _number(row.get(name, defaults[name])) for name in names}
        if any(math.isfinite(v) and v != defaults[name] for name, v in weights.items()):
            symbol = {"w1": "W₁", "w2": "W₂", "beta": "β"}
            parts += [f"{symbol[name]}={value:g}" for name, value in weights.items() if math.isfinite(value)]
    if isinstance(row.get("params_from"), str) and row.get("params_from"):
        parts.append("tuned")  # chosen by a search on these images: see the report's selection-bias note
    return ", ".join(parts) if parts else "–"


__all__ = ["ALPHA", "COMPARED", "DIVERGED_FACTOR", "METHOD_TITLES", "METRICS", "TTest", "compare_with_baseline",
           "comparison_wide", "completed", "corrected_resampled_ttest", "diverged_folds", "format_mean_var", "holm",
           "parameter_text", "reference_baseline", "summarise"]
