"""The report's tables as text: the thesis table's cells (``mean ± variance``, † and bold) as
LaTeX (booktabs) and Markdown, and each method's comparison with its baseline, with the notes
that say what the numbers are."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import pandas as pd
from tabulate import tabulate

from benchmark.models import VQConfig
from benchmark.stats import COMPARED, METHOD_TITLES, METRICS, format_mean_var

METRIC_TITLES = {"recon": "Reconstruction loss", "latent": "KL / VQ loss", "recon_cond": "Conditioned reconstruction"}
# Two-line LaTeX headers keep the columns within a page.
TEX_TITLES = {"Reconstruction loss": r"\shortstack{Reconstruction\\loss}", "KL / VQ loss": r"\shortstack{KL / VQ\\loss}",
              "Conditioned reconstruction": r"\shortstack{Conditioned\\reconstruction}",
              "Prior NLL (nats/code)": r"\shortstack{Prior NLL\\(nats/code)}"}
INDEX_TITLES = ("Model", "Config", "Method", "Parameters")
FOOTNOTE = ("† differs from the baseline of the same model and config (p < 0.05): corrected resampled "
            "t-test (Nadeau & Bengio, 2003) on the paired per-fold differences, Holm-adjusted over the "
            "methods of one model config, per metric; tested only where both have every fold done (a method "
            "short of folds still counts in Holm's family, as p = 1: it was one of the planned comparisons). "
            "Bold: lowest mean within a model config (a ranking, not a test), among two or more "
            "configurations with every fold done; for the "
            "conditioned reconstruction, among the rows that sample the same number of pixels (one "
            "method with the same count k or power-law exponent; Gaussian sampling draws with replacement, so "
            "it observes fewer distinct ones); KL and VQ loss are not ranked "
            "(the lowest is not the best model: a collapsed posterior, or codes bought with worse reconstruction). "
            "Cells: mean ± population variance over folds, each fold at its epoch of lowest validation "
            "total loss, (n=…) where fewer folds have a value; "
            "reconstruction as per-pixel MSE (over pixels and channels): the Reconstruction loss column holds the "
            "unconditioned output's (a Multidecoder's decoder 1, a Single decoder given an empty mask), Conditioned "
            "reconstruction the conditioned output's (decoder 2; the Single decoder given its mask); a Multidecoder "
            "listed without k observes its sampling's default count (table.csv's observed column); "
            "KL summed over latent dimensions (Gaussian VAE); VQ loss (VQ-VAE): codebook + "
            f"{VQConfig.commitment:g} × commitment, squared distances averaged over the code map's elements "
            f"(the thesis table's scale), at {VQConfig.commitment:g} whatever β trained.")
EPOCH_NOTE = " Epoch: the epochs the folds kept, lowest–highest; rows that kept other epochs differ in training too."
COMPARISON_TITLES = ("Difference", "95% interval", "Change", "p (Holm)", "Folds")
COMPARISON_NOTE = ("Difference: mean over folds of the method minus the baseline of the same model and config, paired "
                   "on fold; negative is a lower loss. 95% interval and p: corrected resampled t-test "
                   "(Nadeau & Bengio, 2003), the interval per comparison (not adjusted: one that excludes 0 "
                   "beside a p (Holm) of 0.05 or more is not significant), p Holm-adjusted over the methods "
                   "of one model config per metric, and only where both have every fold done (– otherwise; such a "
                   "comparison still counts in Holm's family, as p = 1). "
                   "Change: the difference relative to the baseline's mean. † p (Holm) < 0.05.")
PRIOR_NOTE = (" Prior NLL: validation negative log-likelihood of a VQ-VAE's code maps under a Gated "
              "PixelCNN prior fitted to the training codes of one fold, the same fold for every row "
              "(nats per code, lower is better; a uniform prior scores ln K). Perplexity: how many codes the "
              "validation code maps use in effect (exp of their frequencies' entropy); a codebook collapsed onto "
              "few codes is easy to predict, so compare NLLs at like perplexities.")
WEIGHTS_NOTE = (" Weights: the model's trainable weights, what a method costs in size (a Multidecoder has two "
                "decoders; a conditioned decoder's first layer also takes the mask).")
TUNED_NOTE = (" Tuned: parameters chosen by a search on these images, so the row's scores and its "
              "test against the baseline are optimistic (selection bias).")


def _best_rows(table: pd.DataFrame, metric: str) -> pd.Series:
    """True where the row has the lowest ``metric`` mean of its (family, config).

    The conditioned reconstruction depends on how many pixels a decoder observes, so it is
    ranked only among rows that sample the same number: one method with the same constant k
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
        text = [format_mean_var(m, v) + (f" (n={k})" if 0 < k < n else "")
                for m, v, k, n in zip(table[f"{metric}_mean"], table[f"{metric}_var"], table[f"{metric}_n"],
                                      table["n"])]
        flag = table.get(f"{metric}_significant", pd.Series(False, index=table.index)).fillna(False).astype(bool)
        cells[METRIC_TITLES[metric]] = [t + ("†" if f else "") for t, f in zip(text, flag)]
        bold[METRIC_TITLES[metric]] = _best_rows(table, metric).to_list()
    if "prior_nll_nats" in table:  # VQ-VAE rows once `prior` has run; NLLs of other folds are not ranked
        cells["Prior NLL (nats/code)"], bold["Prior NLL (nats/code)"] = prior_cells(table), [False] * len(table)
    if _has_weights(table):
        cells["Weights"], bold["Weights"] = [_count_text(w) for w in table["weights"]], [False] * len(table)
    if "best_epoch_min" in table:
        cells["Epoch"], bold["Epoch"] = epoch_cells(table), [False] * len(table)
    cells["n"] = table["n"].astype(str).to_list()
    bold["n"] = [False] * len(table)
    return pd.DataFrame(cells, index=index), pd.DataFrame(bold, index=index)


def epoch_cells(table: pd.DataFrame) -> list[str]:
    """The epochs a row's folds kept: "3", "1–2"; "–" for a row without a fold done."""
    return ["–" if pd.isna(low) else f"{int(low)}" if low == high else f"{int(low)}–{int(high)}"
            for low, high in zip(table["best_epoch_min"], table["best_epoch_max"])]


def _count_text(count: int | None) -> str:
    """``65.2k``, ``3.22M``: a weight count to three significant digits; "–" when unknown."""
    if pd.isna(count):
        return "–"
    rounded = float(f"{count:.3g}")  # 999,999 is 1M, not 1e+03k
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rounded >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return str(int(count))


# Characters LaTeX treats specially, and the few symbols the report's plain text uses.
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$", ">": "$>$",
        "±": r"$\pm$", "†": r"$^\dagger$", "β": r"$\beta$", "W₁": r"$W_1$", "W₂": r"$W_2$", "–": "--",
        "×": r"$\times$", "…": r"\ldots{}", "−": "$-$"}


_TEX_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(_TEX, key=len, reverse=True)))


def tex(text: str) -> str:
    """Plain report text (ASCII plus ± † β W₁ W₂ – × … and the minus sign −) as LaTeX, in one pass."""
    return _TEX_PATTERN.sub(lambda match: _TEX[match.group()], text)


def _has_weights(table: pd.DataFrame) -> bool:
    """Whether the rows' model sizes are known (exports record the image channels since they are)."""
    return "weights" in table and bool(table["weights"].notna().any())


def _tuned(table: pd.DataFrame) -> bool:
    return bool(table["params_from"].fillna("").astype(str).str.len().gt(0).any())


def footnote(table: pd.DataFrame) -> str:
    """The tables' footnote; with the epochs', the weights' and the prior's columns explained when they are
    there, and the selection-bias caveat when a row's parameters were tuned."""
    return (FOOTNOTE + (EPOCH_NOTE if "best_epoch_min" in table else "") + (WEIGHTS_NOTE if _has_weights(table) else "")
            + (PRIOR_NOTE if "prior_nll_nats" in table else "") + (TUNED_NOTE if _tuned(table) else ""))


def comparison_note(table: pd.DataFrame) -> str:
    """The comparison tables' note; with the selection-bias caveat when a row's parameters were tuned,
    and the reference baselines that train with parameters of their own (a reference is the one
    baseline of its model config with no comparison of its own: ``stats.compare_with_baseline``)."""
    compared = table[[f"{metric}_n_pairs" for metric in COMPARED]].notna().any(axis=1)
    models = table.groupby(["family", "config"])
    reference = (table["method"] == "baseline") & ~compared & models["config_id"].transform("size").gt(1)
    own = table[reference & (table["parameters"] != "–")]
    baselines = "; ".join(f"{row.model} {row.config}: {row.parameters}" for row in own.itertuples())
    return (COMPARISON_NOTE + (TUNED_NOTE if _tuned(table) else "")
            + (f" Baselines with parameters of their own ({baselines}): a difference from one mixes the method's "
               "effect with those parameters'." if baselines else ""))


def _tex_number(text: str) -> str:
    """A cell of numbers (``-0.0242``, ``9.2e-01``) as LaTeX, its hyphens minus signs (``$-$``), as
    a text hyphen is too short for one."""
    return tex(text.replace("-", "−"))


def _rule_groups(lines: list[str], top: int, index: pd.MultiIndex, columns: int) -> None:
    """Insert, in the LaTeX ``lines`` of a table whose header row follows line ``top``, a \\midrule
    where the first index level (the model) changes and a \\cmidrule where the second (the
    config) does; only when each row of ``index`` is one line (rules would split a wrapped row)."""
    start, end = lines.index(r"\midrule", top) + 1, lines.index(r"\bottomrule")
    if end - start != len(index):
        return
    models, configs = index.get_level_values(0), index.get_level_values(1)
    for i in reversed(range(1, len(index))):
        if models[i] != models[i - 1]:
            lines.insert(start + i, r"\midrule")
        elif configs[i] != configs[i - 1]:
            lines.insert(start + i, rf"\cmidrule(l){{2-{columns}}}")


def latex_table(table: pd.DataFrame, caption: str, label: str = "tab:cross-validation") -> str:
    """A booktabs ``table`` float with \\multirow groups, bold best cells and a † footnote."""
    cells, bold = display_table(table)
    cells = cells.map(_tex_number)
    cells.index = cells.index.set_levels([level.map(tex) for level in cells.index.levels])
    styler = cells.style.apply(lambda _: bold.map(lambda b: "font-weight: bold" if b else "").to_numpy(), axis=None)
    styler.hide(names=True, axis="index")
    styler.set_table_styles([{"selector": "small", "props": ":;"},
                             {"selector": "setlength", "props": ":{\\tabcolsep}{4pt};"}], overwrite=False)
    spec = "llll" + "r" * cells.shape[1]
    latex = styler.to_latex(column_format=spec, hrules=True, multirow_align="t",
                            convert_css=True, position="htbp", position_float="centering",
                            caption=tex(caption), label=label)
    lines = latex.splitlines()
    top = lines.index(r"\toprule")
    # One header row naming the index columns (pandas leaves them blank when names are hidden).
    lines[top + 1] = " & ".join([*INDEX_TITLES, *(TEX_TITLES.get(c, tex(c)) for c in cells.columns)]) + r" \\"
    _rule_groups(lines, top, cells.index, len(spec))
    # The full grid is wider than an article's text: centre it over the margins instead of
    # letting it run into the right one (plain LaTeX, no extra package).
    lines.insert(lines.index(r"\begin{tabular}" + f"{{{spec}}}"), r"\makebox[\linewidth][c]{%")
    close = lines.index(r"\end{tabular}")
    lines[close] += "}"
    lines.insert(close + 1, r"\par\smallskip\parbox{\linewidth}{\footnotesize " + tex(footnote(table)) + "}")
    return "\n".join(lines) + "\n"


def text_table(rows: Iterable[Sequence[object]], headers: Sequence[str], colalign: Sequence[str],
               tablefmt: str = "simple") -> str:
    """``rows`` of cells as they were formatted, under ``headers``, each column aligned as ``colalign``
    says: tabulate without its number parsing, which would rewrite "0.790", "1,234" or a study named "007"."""
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=colalign)


def _markdown_cell(text: str) -> str:
    """``text`` kept within its cell: a newline would end the row and a bare "|" start a new cell."""
    return text.replace("\n", " ").replace("|", r"\|")


def _markdown(cells: pd.DataFrame, bold: pd.DataFrame, grouped: int) -> str:
    """GitHub Markdown of ``cells`` (text indexed by labels), **bold** where ``bold``; the first
    ``grouped`` index levels are shown only where their group starts. Labels left-aligned, values right."""
    names = list(cells.index.names)
    rows = []
    previous: tuple = ()
    for (labels, row), (_, marks) in zip(cells.iterrows(), bold.iterrows()):
        shown = [label if labels[:i + 1] != previous[:i + 1] else "" for i, label in enumerate(labels[:grouped])]
        previous = labels
        values = [f"**{v}**" if b else v for v, b in zip(row, marks)]
        rows.append([_markdown_cell(c) for c in [*shown, *labels[grouped:], *values]])
    # "pipe", which DataFrame.to_markdown uses: "github" would drop the ":" that right-aligns the values.
    return text_table(rows, [*names, *cells.columns], ("left",) * len(names) + ("right",) * cells.shape[1],
                      tablefmt="pipe")


def markdown_table(table: pd.DataFrame) -> str:
    """GitHub Markdown with blank repeated group cells (model, config, method), **bold** best
    cells and † marks."""
    cells, bold = display_table(table)
    return _markdown(cells, bold, 3) + "\n\n" + footnote(table) + "\n"


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
                         "p (Holm)": "–" if pd.isna(p_holm) else f"{p_holm:#.3g}".rstrip("."),  # 0.790, not 0.79
                         "Folds": str(int(pairs))})
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=[*INDEX_TITLES, "Metric"])
                        if index else pd.MultiIndex.from_tuples([], names=[*INDEX_TITLES, "Metric"]),
                        columns=list(COMPARISON_TITLES))


def comparison_markdown(cells: pd.DataFrame, note: str = COMPARISON_NOTE) -> str:
    """``comparison_cells`` as GitHub Markdown, with its note."""
    bold = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    return _markdown(cells, bold, 4) + "\n\n" + note + "\n"


def comparison_latex(cells: pd.DataFrame, caption: str, note: str = COMPARISON_NOTE,
                     label: str = "tab:comparison") -> str:
    """``comparison_cells`` as a booktabs ``table`` float, with its note; rules between models and
    configs as in ``latex_table``."""
    cells = cells.map(_tex_number)
    cells.index = pd.MultiIndex.from_tuples([tuple(tex(str(v)) for v in labels) for labels in cells.index],
                                            names=cells.index.names)
    styler = cells.style.hide(names=True, axis="index")
    latex = styler.to_latex(column_format="lllll" + "r" * cells.shape[1], hrules=True, multirow_align="t",
                            position="htbp", position_float="centering", caption=tex(caption),
                            label=label)
    lines = latex.splitlines()
    top = lines.index(r"\toprule")
    lines[top + 1] = " & ".join([*cells.index.names, *(tex(c) for c in cells.columns)]) + r" \\"
    _rule_groups(lines, top, cells.index, cells.index.nlevels + cells.shape[1])
    close = lines.index(r"\end{tabular}")
    lines.insert(close + 1, r"\par\smallskip\parbox{\linewidth}{\footnotesize " + tex(note) + "}")
    return "\n".join(lines) + "\n"


def prior_cells(table: pd.DataFrame) -> list[str]:
    """"NLL (fold k, perplexity P)" in nats per code, "–" for rows without a prior (Gaussian VAEs)."""
    perplexities = table.get("prior_code_perplexity", pd.Series(math.nan, index=table.index))
    return ["–" if pd.isna(nll) else
            f"{nll:.3f} (fold {int(fold)}" + ("" if pd.isna(perplexity) else f", perplexity {perplexity:.1f}") + ")"
            for nll, fold, perplexity in zip(table["prior_nll_nats"], table["prior_fold"], perplexities)]
