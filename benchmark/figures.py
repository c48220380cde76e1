"""Report figures (matplotlib), each saved as ``<stem>.png`` and ``<stem>.pdf``.

- ``validation_curves``: per model config, with vs without each method (thesis Fig. 4.2,
  4.4–4.6, plus the conditioned reconstruction and the selecting total) from the history CSV;
  mean over folds with a min–max band, × at each fold's selected epoch.
- ``reconstruction_grid``: input | decoder 1 | decoder 2 (conditioned) | mask, one test image a row.
- ``sampling_types``: exact / uniform / gaussian masks on one image (thesis Fig. 3.6).
- ``error_vs_observed``: conditioned per-pixel MSE against the number of distinct observed pixels.
- ``generated_grid``: images decoded from samples of a VQ-VAE's prior (``benchmark.prior_stage``).

Functions that need a model take the model and images as arguments; reading checkpoints is
the caller's job (see ``benchmark.report.write_report(load_model=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator
from torchvision.utils import make_grid

from benchmark.conditioning import PixelSampler
from benchmark.models import FAMILY_TITLES, MultitaskVAE, eval_mode
from benchmark.stats import METHOD_TITLES, completed, parameter_text

LATENT_LABELS = {"vae": "KL divergence", "vq-vae": "VQ loss"}
TOTAL_LABEL = "validation total ÷ its fold's lowest"
CURVES_NOTE = ("mean over folds; band: min–max over folds; × marks each fold's selected "
               "(best validation total) epoch")
UNOBSERVED = (0.35, 0.55, 0.85)  # a blue no grey or black pixel of an image can be mistaken for
FORMATS = ("png", "pdf")


def _stem(path: Path | str) -> Path:
    """``path`` without a .png/.pdf suffix: callers may name the figure either way."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path


def save_figure(fig: Figure, stem: Path | str) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (TrueType fonts), return both paths."""
    stem = _stem(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    # Type 42 (TrueType) fonts: Type 3 fonts are bitmaps to some viewers and rejected by journals.
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        for fmt in FORMATS:
            path = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(path, dpi=150, bbox_inches="tight")
            paths.append(path)
    return paths


def _fold_band(history: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, min and max of ``column`` over folds, per epoch."""
    return history.groupby("epoch")[column].agg(["mean", "min", "max"]).sort_index()


def _plot_configuration(axes: Sequence[Axes], columns: Sequence[str], runs: pd.DataFrame, label: str,
                        color: object, style: str, epochs: Sequence[int]) -> None:
    """Each column's mean over folds with its min–max band, × at the ``epochs`` that some fold selected."""
    for ax, column in zip(axes, columns):
        band = _fold_band(runs, column).dropna()
        if band.empty:
            continue
        # Markers, so that a one-epoch run still shows as a point.
        ax.plot(band.index, band["mean"], style, color=color, label=label, linewidth=1.5, marker="o", markersize=3)
        ax.fill_between(band.index, band["min"], band["max"], color=color, alpha=0.2, linewidth=0)
        chosen = band.index.intersection(epochs)
        ax.plot(chosen, band.loc[chosen, "mean"], "x", color=color, markersize=9, markeredgewidth=2, zorder=3)


def _panels(family: str, method: str, history: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(column, title, y label) of each panel: the thesis's two (latent loss, unconditioned
    reconstruction), then the conditioned reconstruction and the total that selects the epoch,
    where ``history`` has them."""
    latent = LATENT_LABELS.get(family, "latent loss")
    unconditioned = {"multidecoder": "decoder 1 (unconditioned)", "single": "empty mask (unconditioned)"}
    conditioned = {"multidecoder": "decoder 2 (conditioned)", "single": "with its mask (conditioned)"}
    panels = [("latent", latent, f"validation {latent}"),
              ("recon", f"reconstruction, {unconditioned[method]}" if method in unconditioned else "reconstruction",
               "validation reconstruction (per-pixel MSE)"),
              ("recon_cond", f"reconstruction, {conditioned.get(method, 'conditioned')}",
               "validation conditioned reconstruction (per-pixel MSE)"),
              ("total", "total (selects the epoch)", TOTAL_LABEL)]
    return [panel for panel in panels if panel[0] in history and history[panel[0]].notna().any()]


def validation_curves(history: pd.DataFrame, results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Validation curves, one figure per (family, config, method): baseline vs each
    configuration of that method. Panels: latent loss and unconditioned reconstruction (the
    thesis's two), then, where the history has them, the conditioned reconstruction and the
    validation total that selects each fold's epoch, as a multiple of its fold's lowest (a 2 × 2
    grid with three or four). Each curve is the mean over folds with a min–max band, × at the
    epochs folds selected.
    Only configurations with a COMPLETE fold are drawn: a method with none gets no figure, a
    method without its baseline's curves one of its own, and a model config whose methods have
    no fold done a figure of its baselines (``curves_<family>_<config>_baseline``).

    history: the ``<suite>_history.csv`` frame; results: the ``<suite>.csv`` frame (parameters,
    each fold's ``best_epoch``, and which (config, fold) units are COMPLETE — partial histories
    of failed units are left out). Writes ``curves_<family>_<config>_<method>.{png,pdf}`` under
    ``out_dir``, named as the other figures (``curves_vq-vae_1_single``, ``reconstruction_vq-vae_1_...``).
    """
    done = completed(results)
    history = history.merge(done[["config_id", "fold"]], on=["config_id", "fold"])
    if "total" in history:
        # Each method's total has terms and weights of its own, on the training scale: as a multiple of its
        # fold's lowest (its terms are not negative) the shapes compare, and every fold's selected epoch is at 1.
        lowest = history.groupby(["config_id", "fold"])["total"].transform("min")
        history = history.assign(total=history["total"] / lowest)
    best = done.dropna(subset=["best_epoch"]).groupby("config_id")["best_epoch"].agg(
        lambda epochs: sorted(set(epochs.astype(int))))
    params = results.drop_duplicates("config_id").set_index("config_id")
    drawable = set(history["config_id"])  # configurations with the history of a COMPLETE fold
    paths: list[Path] = []
    for (family, config), configs in params.groupby(["family", "config"], sort=False):
        baselines = [c for c in configs.index[configs["method"] == "baseline"] if c in drawable]
        # A method with no fold done gets no figure (it would show the baseline alone under the
        # method's name); when none has one, the baselines get a figure of their own.
        methods = [m for m in pd.unique(configs["method"])
                   if m != "baseline" and drawable.intersection(configs.index[configs["method"] == m])] or ["baseline"]
        for method in methods:
            members = [c for c in configs.index[configs["method"] == method] if c not in baselines and c in drawable]
            if not members and not baselines:
                continue
            drawn = []
            for config_id, style in zip(baselines, ("--", ":", "-.") * len(baselines)):
                text = parameter_text(params.loc[config_id])  # "–" for the plain baseline
                drawn.append((config_id, "baseline" if text == "–" else f"baseline: {text}", "black", style))
            colors = matplotlib.colormaps["tab10"]
            drawn += [(config_id, f"{METHOD_TITLES.get(method, method)}: {parameter_text(params.loc[config_id])}",
                       colors(i % 10), "-") for i, config_id in enumerate(members)]
            panels = _panels(family, method, history[history["config_id"].isin([c for c, *_ in drawn])])
            columns = [column for column, *_ in panels]
            rows = 1 if len(panels) <= 2 else 2  # 3 panels: the 2 × 2 grid of 4, so that every figure has one scale
            fig = Figure(figsize=(10, 3.8 * rows))
            axes = list(fig.subplots(rows, 2, squeeze=False).flat)
            for spare in axes[len(panels):]:
                fig.delaxes(spare)
            axes = axes[:len(panels)]
            for config_id, label, color, style in drawn:
                _plot_configuration(axes, columns, history[history["config_id"] == config_id], label, color, style,
                                    best.get(config_id, []))
            title = f"{FAMILY_TITLES.get(family, family)} {config}"
            compared = (f" · {METHOD_TITLES.get(method, method)}" + (" vs baseline" if baselines else "")
                        if method != "baseline" else "")
            fig.suptitle(f"{title}{compared}: validation curves")
            for ax, (_, panel_title, ylabel) in zip(axes, panels):
                ax.set(xlabel="epoch", ylabel=ylabel, title=panel_title)
                ax.grid(alpha=0.3)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: a tick at 1
                for band in ax.collections:  # overlapping bands stay readable
                    band.set_alpha(min(0.2, 0.5 / len(drawn)))
            fig.tight_layout()
            handles, labels = axes[0].get_legend_handles_labels()
            handles.append(Line2D([], [], color="grey", marker="x", markersize=8, markeredgewidth=2, linestyle=""))
            labels.append("selected epoch of a fold")
            # Below the panels, so that it never covers a band.
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels)),
                       fontsize="small", frameon=False, title=CURVES_NOTE, title_fontsize="small")
            paths += save_figure(fig, out_dir / f"curves_{family}_{config}_{method}")
    return paths


def _show_grid(tiles: torch.Tensor, columns: Sequence[str], stem: Path, row_height: float = 1.0,
               row_labels: Sequence[str] | None = None, title: str | None = None) -> list[Path]:
    """Lay (rows·cols, C, H, W) tiles out row-major with column titles (and row labels) and save them."""
    grid = make_grid(tiles.detach().float().cpu().clamp(0, 1), nrow=len(columns), padding=2, pad_value=1.0)
    rows = len(tiles) // len(columns)
    fig = Figure(figsize=(1.2 * len(columns) + 0.5, row_height * rows + 0.6))
    ax = fig.subplots()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    step = grid.shape[-1] / len(columns)
    ax.set_xticks([step * (i + 0.5) for i in range(len(columns))], list(columns), fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    step = grid.shape[-2] / rows
    ax.set_yticks([step * (i + 0.5) for i in range(rows)] if row_labels else [], list(row_labels or []), fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, pad=16)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return save_figure(fig, stem)


def _channels(mask: torch.Tensor, channels: int) -> torch.Tensor:
    return mask.expand(-1, channels, -1, -1)


@torch.no_grad()
def reconstruction_grid(model: MultitaskVAE, images: torch.Tensor, mask_sampler: PixelSampler | None,
                        path: Path, *, seed: int = 0, title: str | None = None, fold: int | None = None) -> list[Path]:
    """Rows = images (N, C, H, W) in [0, 1]; columns input | decoder 1 | decoder 2 | mask.

    Decoder 1 is the unconditioned output, decoder 2 the conditioned one under a mask from
    ``mask_sampler`` (seeded); for the single decoder they are "empty mask" and "conditioned".
    Rows are labelled with the pixels their mask observes. A baseline shows only input |
    decoder 1. title: the configuration (``configuration_title``); fold: the checkpoint's fold.
    The model is run in eval mode and its mode restored. Returns the paths.
    """
    if model.conditioned and mask_sampler is None:
        raise ValueError(f"a {model.method} model needs a mask sampler for its conditioned decoder")
    device = next(model.parameters()).device
    x = images.to(device)
    unconditioned, conditioned = _output_names(model)
    labels = None
    with eval_mode(model):
        z = model.encode(x).z
        tiles = [x, model.decode(z)]
        columns = ["input", unconditioned]
        if model.conditioned:
            mask = mask_sampler.sample(len(x), torch.Generator(device=device).manual_seed(seed), device)
            tiles += [model.decode(z, x, mask, conditioned=True), _channels(mask, x.shape[1])]
            columns += [conditioned, "mask"]
            labels = [f"{int(n)} px observed" for n in mask.flatten(1).sum(1)]  # distinct: Gaussian draws repeat
    # Interleave so that each row holds one image's columns.
    stacked = torch.stack(tiles, dim=1).flatten(0, 1)
    return _show_grid(stacked, columns, _stem(path), row_labels=labels, title=_title(model, title, fold, len(x)))


def sampling_types(images: torch.Tensor, image_size: int, path: Path, *, count: int | None = None,
                   seed: int = 0) -> list[Path]:
    """Thesis Fig. 3.6: rows exact / uniform / gaussian on the first image, labelled with the
    sampler and its pixels; columns original | mask | masked image, unobserved pixels of the
    masked image in ``UNOBSERVED``. ``count`` pixels for uniform and gaussian (default: the
    exact grid's count, so all three rows draw as many pixels; Gaussian draws repeat some)."""
    x = images[:1].float().cpu()
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        raise ValueError(f"images are {tuple(x.shape[-2:])}, expected {image_size}x{image_size}")
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # RGB, for the colour of unobserved pixels
    unobserved = torch.tensor(UNOBSERVED).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    tiles, labels = [], []
    for sampling in ("exact", "uniform", "gaussian"):
        sampler = PixelSampler(sampling, image_size, count=None if sampling == "exact" else count)
        mask = sampler.sample(1, generator, "cpu")
        tiles += [x, _channels(mask, 3), torch.where(mask.bool(), x, unobserved)]
        pixels, k = int(mask.sum()), sampler.fixed_count
        labels.append({"exact": f"exact grid\n{pixels} px", "uniform": f"uniform\nk = {k} px",
                       "gaussian": f"gaussian\nk = {k} draws,\n{pixels} distinct px"}[sampling])
    return _show_grid(torch.cat(tiles), ["original", "mask", "masked\n(blue: unobserved)"], _stem(path),
                      row_labels=labels)


def generated_grid(samples: torch.Tensor, path: Path, *, conditioned: torch.Tensor | None = None,
                   real: torch.Tensor | None = None, masks: torch.Tensor | None = None,
                   row_labels: Sequence[str] | None = None, title: str | None = None) -> list[Path]:
    """Images generated from prior samples (see ``benchmark.prior_stage.draw_samples``).

    Row 1: ``samples`` (n, C, H, W), the unconditioned decoder's images of n prior code maps.
    With ``conditioned`` (r, n, C, H, W): one more row per real image ``real`` (r, C, H, W), the same
    n code maps decoded by the conditioned decoder given the pixels ``masks`` (r, 1, H, W) of that
    image; the first two columns then show the image and its mask (blank in row 1).
    """
    n, channels = samples.shape[:2]
    columns = [f"sample {i + 1}" for i in range(n)]
    if conditioned is None:
        tiles = samples
    else:
        if real is None or masks is None or conditioned.shape[:2] != (len(real), n):
            raise ValueError(f"conditioned rows {tuple(conditioned.shape[:2])} need r real images and masks "
                             f"and n = {n} samples")
        blank = torch.ones_like(samples[:1])  # white, like the grid's padding
        rows = [torch.cat([blank, blank, samples])]
        rows += [torch.cat([real[j:j + 1], _channels(masks[j:j + 1], channels), conditioned[j]])
                 for j in range(len(real))]
        tiles, columns = torch.cat(rows), ["image", "mask", *columns]
    return _show_grid(tiles, columns, _stem(path), row_labels=row_labels, title=title)


def default_counts(pixels: int) -> list[int]:
    """0, 1, 2, 4, … up to and including ``pixels``."""
    counts = [0] + [2 ** i for i in range(int(math.log2(pixels)) + 1)]
    return sorted(set(min(c, pixels) for c in counts) | {pixels})


def _distinct(mask: torch.Tensor) -> float:
    """Mean number of observed pixels per mask (B, 1, H, W): repeated Gaussian draws count once."""
    return float(mask.flatten(1).sum(1).mean())


@torch.no_grad()
def observed_error(model: MultitaskVAE, images: torch.Tensor, sampling: str = "uniform",
                   counts: Sequence[int] | None = None, *, seed: int = 0, exact: bool = False) -> pd.DataFrame:
    """Per-pixel MSE of the conditioned decoder with k observed pixels, for each k in ``counts``
    (masks from a seeded ``PixelSampler(sampling, count=k)``), next to the unconditioned MSE
    (decoder 1, or the single decoder with an empty mask); a Gaussian VAE decodes μ.

    With ``exact``, one more row under the exact grid's masks. Returns columns ``sampling``,
    ``count`` (k asked for), ``distinct_pixels`` (mean over the images of the pixels the masks
    observe: fewer than k for Gaussian draws, which repeat pixels), ``recon_cond``, ``recon``."""
    if not model.conditioned:
        raise ValueError("the baseline has no conditioned decoder")
    if sampling not in ("uniform", "gaussian"):
        raise ValueError(f"sampling must be uniform or gaussian (the exact grid has one count), got {sampling!r}")
    size = images.shape[-1]
    counts = default_counts(size * size) if counts is None else list(counts)
    samplers = [PixelSampler(sampling, size, count=int(k)) for k in counts]
    samplers += [PixelSampler("exact", size)] if exact else []
    device = next(model.parameters()).device
    x = images.to(device)
    with eval_mode(model):
        z = model.encode(x).z
        recon = float((model.decode(z) - x).pow(2).mean())
        rows = []
        for sampler in samplers:
            mask = sampler.sample(len(x), torch.Generator(device=device).manual_seed(seed), device)
            cond = float((model.decode(z, x, mask, conditioned=True) - x).pow(2).mean())
            rows.append({"sampling": sampler.sampling, "count": sampler.fixed_count, "distinct_pixels": _distinct(mask),
                         "recon_cond": cond, "recon": recon})
    return pd.DataFrame(rows)


def configuration_title(row: pd.Series | dict) -> str:
    """"Gaussian VAE 1 · Single decoder: gaussian, a=40" for a row of the results (family, config,
    method and its parameters), as the figures' titles name a configuration."""
    family, method = str(row["family"]), str(row["method"])
    text = f"{FAMILY_TITLES.get(family, family)} {int(row['config'])} · {METHOD_TITLES.get(method, method)}"
    parameters = parameter_text(row)
    return text if parameters == "–" else f"{text}: {parameters}"


def _title(model: MultitaskVAE, title: str | None, fold: int | None, images: int) -> str:
    """``title`` over a line saying which model and images made the figure."""
    used = ([f"fold {fold} model"] if fold is not None else []) + [f"{images} test image{'s' * (images != 1)}"]
    # The table's Gaussian VAE numbers decode a sampled z; the figures decode μ, and say so.
    used += ["z = μ"] if model.noise_dim else []
    return "\n".join([*([title] if title else []), ", ".join(used)])


def _output_names(model: MultitaskVAE) -> tuple[str, str]:
    """Names of the unconditioned and conditioned outputs: the single decoder has no decoder 1 or 2."""
    return ("empty mask", "conditioned") if model.method == "single" else ("decoder 1", "decoder 2")


def _training_mark(trained: PixelSampler, seed: int, samples: int = 1000) -> tuple[float, str]:
    """Where the masks a model was trained with sit on the distinct-pixel axis, and a label."""
    if trained.exponent is None:
        k = trained.fixed_count
        text = f"trained: {'exact grid, ' if trained.sampling == 'exact' else ''}k = {k}"
    else:
        k = trained.mean_count
        text = f"training mean E[k] = {k:.3g}"
    if trained.sampling != "gaussian":
        return float(k), text
    # Gaussian draws repeat pixels: the line goes where the training masks' distinct pixels lie.
    distinct = _distinct(trained.sample(samples, torch.Generator().manual_seed(seed), "cpu"))
    return distinct, f"{text} draws ≈ {distinct:.3g} distinct"


def error_vs_observed(model: MultitaskVAE, images: torch.Tensor, sampling: str, path: Path,
                      counts: Sequence[int] | None = None, *, seed: int = 0, trained: PixelSampler | None = None,
                      title: str | None = None, fold: int | None = None) -> list[Path]:
    """Plot ``observed_error`` against the mean number of distinct observed pixels (log-ish x axis),
    with the unconditioned output as a reference line; also writes the numbers to ``<stem>.csv``.

    trained: the model's training sampler; marks its pixel count k (the power law's mean for
    the single decoder) and, for a model trained on the exact grid, adds the exact grid's error
    as a star. title: the configuration (``configuration_title``); fold: the checkpoint's fold,
    named in the title. Returns the PNG, PDF and CSV paths.
    """
    exact = trained is not None and trained.sampling == "exact"
    table = observed_error(model, images, sampling, counts, seed=seed, exact=exact)
    sweep = table[table["sampling"] == sampling]
    unconditioned, conditioned = _output_names(model)
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ax.plot(sweep["distinct_pixels"], sweep["recon_cond"], "o-", label=f"{conditioned} ({sampling} mask)")
    if exact:
        grid = table[table["sampling"] == "exact"].iloc[0]
        ax.plot(grid["distinct_pixels"], grid["recon_cond"], "*", color="C3", markersize=13,
                label=f"{conditioned} (exact grid, k={grid['count']})")
    ax.axhline(table["recon"].iloc[0], color="black", linestyle="--", label=f"{unconditioned} (unconditioned)")
    if trained is not None:
        x, text = _training_mark(trained, seed)
        ax.axvline(x, color="C2", linestyle=":", linewidth=1.5, label=text)
    ax.set_xscale("symlog", linthresh=1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Left of 0, so that the marker at k = 0 shows whole.
    ax.set_xlim(-0.15, max(1.0, float(table["distinct_pixels"].max())) * 1.3)
    ax.set(xlabel="distinct observed pixels (mean over the images)", ylabel="reconstruction (per-pixel MSE)")
    ax.set_title(_title(model, title, fold, len(images)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    stem = _stem(path)
    paths = save_figure(fig, stem)
    csv = stem.with_name(f"{stem.name}.csv")
    table.to_csv(csv, index=False)
    return [*paths, csv]


__all__ = ["configuration_title", "default_counts", "error_vs_observed", "generated_grid", "observed_error",
           "reconstruction_grid", "sampling_types", "save_figure", "validation_curves"]
