"""The VQ-VAE's second stage on a finished run: a Gated PixelCNN prior per VQ-VAE configuration.

A VQ-VAE is trained in two stages (thesis §2.2.2): encoder, codebook and decoder first, under an
arbitrary prior; then an autoregressive prior p(z) over the discrete code maps (thesis §2.5.1,
``benchmark.prior``).  For every VQ-VAE configuration of a suite that ``run`` finished, this module

1. takes one fold for every configuration: the lowest fold COMPLETE (with a checkpoint) in all of
   the suite's VQ-VAE configurations, or the one asked for. The priors are then scored on the
   same validation images, and no fold is chosen for a good score (which would flatter it);
2. rebuilds that fold's train/validation split exactly as the runner did (the meta file's
   dataset, limit and seed → ``load_dataset`` → ``fold_indices``), so the prior is scored on
   images neither stage trained on;
3. encodes both parts into code maps (N, h, w) with the trained VQ-VAE (eval mode, batched);
4. fits the prior on the training codes (its epoch chosen on a tenth of them, held out) and scores
   it on the validation codes (nats per code and bits per code; a uniform prior scores ln K nats =
   log2 K bits);
5. draws a few samples (prior → ``quantizer.lookup`` → decoder 1, and for conditioned methods the
   conditioned decoder given 16 observed pixels of real validation images, the same images and
   masks for every configuration) on the same device;
6. stores weights and samples in ``results/<suite>/priors/<name>.pt`` and one row per
   configuration in ``results/<suite>_prior.csv`` (``n_train``: the fold's training code maps, a
   tenth of them held out) with the settings it was made with (rerunning
   replaces that row; rows made with other settings are not mixed in, see ``check_kept_rows``).

The report reads the CSV for its "Prior NLL" column and the stored samples for
``figures/generated_<name>.{png,pdf}``; generating here keeps the report cheap and lets the
sampling run on the GPU.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from benchmark.checks import check_choice, first_line, problems_of, raise_problems
from benchmark.conditioning import PixelSampler
from benchmark.cv import fold_indices, unit_seed
from benchmark.data import pixel_digest
from benchmark.files import write_whole
from benchmark.models import MultitaskVAE, eval_mode
from benchmark.prior import (GatedPixelCNN, PriorConfig, PriorDivergedError, PriorResult, check_kernel_width,
                             code_perplexity, frequency_nats, train_prior)
from benchmark.processes import shared_threads_note
from benchmark.progress import chosen_progress, progress_bar
from benchmark.results import (SuiteResults, checkpoint_file, current_priors, load_suite, prior_csv_path, read_prior,
                               results_dir_flag, run_dataset, safe_name)
from benchmark.train import resolve_device

# What decides a prior's NLL besides its configuration; the rows of one CSV must agree on them.
SETTINGS = ("fold", "epochs", "batch_size", "lr", "hidden", "layers", "kernel")
# temperature: the samples', which the NLL does not depend on (so not among the settings that must agree)
# checkpoint: the name of the weights the prior was fitted to, one unit's of one run (``current_priors``)
PRIOR_COLUMNS = ("config_id", "fold", "val_nll_nats", "val_bits_per_code", "uniform_nats", "frequency_nats",
                 "code_perplexity", "epochs", "best_epoch", "n_train", "n_val", "prior_path", "checkpoint", "seconds",
                 "batch_size", "lr", "hidden", "layers", "kernel", "temperature")
OBSERVED_PIXELS = 16      # pixels of a real image given to the conditioned decoder in the figures
MAX_SAMPLES = 32          # generated images per configuration: a figure of more columns is unreadable
CONDITIONED_IMAGES = 3    # real validation images, one figure row each


def prior_dir(results_dir: Path, suite: str) -> Path:
    return Path(results_dir) / suite / "priors"


# --------------------------------------------------------------------------- which fold, which data


@dataclass(frozen=True)
class PriorTarget:
    """The fold of one VQ-VAE configuration whose checkpoint the prior is fitted to."""

    config_id: str
    method: str
    fold: int
    recon: float              # validation per-pixel MSE of that fold, as the run measured it
    checkpoint: Path
    n_train: int | None       # as recorded by the runner, to check the rebuilt split against
    n_val: int | None


def _count(value: object) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def vq_configurations(data: SuiteResults, suite: str) -> list[str]:
    """The VQ-VAE configurations of a run, in suite order; a ``ValueError`` where it has none."""
    order = list(dict.fromkeys([*data.meta["configurations"], *data.results["config_id"]]))
    family = data.results.drop_duplicates("config_id").set_index("config_id")["family"]
    vq = [c for c in order if family.get(c, "vq-vae" if c.startswith("vq-vae/") else "") == "vq-vae"]
    if not vq:
        raise ValueError(f"suite {suite!r} has no VQ-VAE configuration (the prior is a VQ-VAE's second stage); "
                         f"its configurations: {', '.join(order)}")
    return vq


def check_named(data: SuiteResults, suite: str, config_ids: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """The run's VQ-VAE configurations (``vq_configurations``) and ``config_ids`` once each, in the order
    given; a ``ValueError`` for one that is not a VQ-VAE configuration of the run (a Gaussian VAE's is
    named as such)."""
    vq = vq_configurations(data, suite)
    named = list(dict.fromkeys(config_ids or ()))
    listed = set(data.results["config_id"]) | set(data.meta["configurations"])
    for config_id in named:
        if config_id in listed and config_id not in vq:
            raise ValueError(f"{config_id!r} is a Gaussian VAE configuration of suite {suite!r}: the prior is a "
                             f"VQ-VAE's second stage; its VQ-VAE configurations: {', '.join(vq)}")
        check_choice(f"VQ-VAE configuration of suite {suite!r}:", config_id, vq)
    return vq, named


def prior_file(results_dir: Path, suite: str, config_id: str) -> Path:
    """Where a configuration's prior is: in ``prior_dir`` of these results, where the stage writes it.
    Not at its row's ``prior_path``, as written from where the stage ran: from another folder, that
    may name another results folder's file."""
    return prior_dir(results_dir, suite) / f"{safe_name(config_id)}.pt"


def select_targets(results_dir: Path, suite: str, config_ids: Iterable[str] | None = None,
                   fold: int | None = None) -> tuple[list[PriorTarget], list[str], SuiteResults]:
    """One fold of every VQ-VAE configuration of ``suite`` (or of those named): ``fold``, or by
    default the lowest fold COMPLETE in every VQ-VAE configuration of the suite that has one
    (named or not, so that a rerun of some takes the fold of the others).

    Returns (targets in suite order, skipped configurations with the reason, the run's results).
    Raises ``ValueError`` (one line) for an unknown suite, a suite without VQ-VAE configurations,
    an unknown configuration id, no fold common to the configurations, a named configuration
    without that fold, no usable fold at all, or a missing checkpoint.  Unnamed configurations
    without the fold are skipped, not fatal, so that a partly finished suite can still get its priors.
    """
    from benchmark.stats import completed

    results_dir = Path(results_dir)
    data = load_suite(results_dir, suite)
    results, meta = data.results, data.meta
    vq, named = check_named(data, suite, config_ids)
    units = int(meta.get("folds") or 0) * int(meta.get("repeats") or 1)
    if fold is not None and units and fold >= units:  # one that no run of the suite will ever finish
        raise ValueError(f"fold {fold} does not exist: suite {suite!r} has folds 0 to {units - 1}")
    done = completed(results)
    done = done[(done["checkpoint"] != "") & done["recon"].notna()]
    folds = {c: set(done.loc[done["config_id"] == c, "fold"].astype(int)) for c in vq}
    if fold is None:
        started = [f for c, f in folds.items() if f]
        common = set.intersection(*started) if started else set()
        if started and not common:
            have = "; ".join(f"{c}: {', '.join(map(str, sorted(f))) or 'none'}" for c, f in folds.items())
            raise ValueError(f"no fold is COMPLETE in every VQ-VAE configuration of suite {suite!r} ({have}); "
                             "choose one with --fold (configurations without it are skipped)")
        fold = min(common, default=0)
    targets, skipped = [], []
    # a run filed under a --name goes on only with the command that started it, which it recorded
    resume = meta.get("command") or f"python -m benchmark run --suite {suite}{results_dir_flag(results_dir)}"
    for config_id in [c for c in vq if not named or c in named]:
        rows = done[(done["config_id"] == config_id) & (done["fold"] == fold)]
        if rows.empty:
            reason = (f"{config_id}: fold {fold} is not COMPLETE with a checkpoint; "
                      f"finish it with `{resume}`")
            if named:
                raise ValueError(reason)
            skipped.append(reason)
            continue
        row = rows.iloc[0]
        checkpoint = checkpoint_file(row["checkpoint"], results_dir, suite)
        if not checkpoint.is_file():
            raise ValueError(f"checkpoint of {config_id} fold {fold} is missing: {row['checkpoint']} "
                             f"(looked for as recorded and in {checkpoint.parent}): run the command where `run` "
                             "ran, or put the weights back; `run` does not train a finished unit again")
        targets.append(PriorTarget(config_id, str(row["method"]), fold, float(row["recon"]),
                                   checkpoint, _count(row.get("n_train")), _count(row.get("n_val"))))
    if not targets:
        raise ValueError(f"no VQ-VAE configuration of suite {suite!r} has fold {fold} COMPLETE with a checkpoint yet "
                         f"({', '.join(vq)}); finish them with `{resume}`")
    return targets, skipped, data


def training_pool(meta: dict) -> torch.Tensor:
    """The images the runner split into folds: the training part of the run's dataset; a ``ValueError``
    where they are other pixels than the run's study split (``pixel_digest``, exported since studies keep it)."""
    pool = run_dataset(meta).train
    if (split := meta.get("images_digest")) is not None and pixel_digest(pool) != split:  # none in older exports
        raise ValueError(f"the {meta['dataset']} images here are not those run {meta.get('suite')!r} split into its "
                         "folds (other files, or the same in another order or of another number): the folds rebuilt "
                         "from them would be others; put those images back")
    return pool


def fold_split(pool: torch.Tensor, meta: dict, fold: int, expected: tuple[int | None, int | None] = (None, None)
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) images of ``fold``, split as the runner split them.

    ``expected`` = the runner's (n_train, n_val); a mismatch means the data changed since the run,
    and a prior scored on other images would be silently wrong, so it raises.
    """
    folds = fold_indices(len(pool), int(meta["folds"]), int(meta.get("seed", 0)), int(meta.get("repeats", 1) or 1))
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} does not exist: the run has {len(folds)} folds")
    train_idx, val_idx = folds[fold]
    for name, got, want in (("training", len(train_idx), expected[0]), ("validation", len(val_idx), expected[1])):
        if want is not None and got != want:
            raise ValueError(f"rebuilt fold {fold} has {got} {name} images but the run recorded {want}; "
                             f"has the dataset {meta['dataset']!r} changed since the run?")
    return pool[train_idx], pool[val_idx]


# --------------------------------------------------------------------------- codes and samples


def _quantizer(model: MultitaskVAE):
    quantizer = getattr(model.latent_model, "quantizer", None)
    if quantizer is None:
        raise ValueError("a prior needs a VQ-VAE; this model has no codebook")
    return quantizer


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_codes(model: MultitaskVAE, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Code maps (N, h, w) int64 on the CPU: the nearest code of every encoder output.

    Runs in eval mode (BatchNorm must use its running statistics, as at validation) on the
    model's device, ``batch_size`` images at a time; the model's mode is restored.
    """
    quantizer, device = _quantizer(model), _device(model)
    with eval_mode(model):
        maps = [quantizer.codes(model.latent_model.encoder(images[start:start + batch_size].to(device))).cpu()
                for start in range(0, len(images), batch_size)]
    return torch.cat(maps) if maps else torch.empty(0, *model.latent_model.code_shape[1:], dtype=torch.long)


def _check_pair(model: MultitaskVAE, prior: GatedPixelCNN) -> None:
    codes = _quantizer(model).codebook.num_embeddings
    if prior.config.num_codes != codes:
        raise ValueError(f"the prior models {prior.config.num_codes} codes but the VQ-VAE has {codes}")


@torch.no_grad()
def generate(model: MultitaskVAE, prior: GatedPixelCNN, n: int, *, seed: int = 0,
             temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n new images: code maps drawn from the prior → ``quantizer.lookup`` → decoder 1.

    All n maps are sampled together (h·w prior passes) and decoded in one batch, each model on
    its own device.  The draws use a seeded CPU generator, so CPU and GPU give the same codes.
    Returns codes (n, h, w) int64 in [0, K) and images (n, C, H, W) in [0, 1], on the CPU.
    """
    _check_pair(model, prior)
    generator = torch.Generator().manual_seed(seed)
    codes = prior.sample(n, tuple(model.latent_model.code_shape[1:]), generator=generator,
                         device=_device(prior), temperature=temperature)
    with eval_mode(model):
        images = model.decode(_quantizer(model).lookup(codes.to(_device(model))))
    return codes.cpu(), images.float().cpu()


@torch.no_grad()
def decode_conditioned(model: MultitaskVAE, codes: torch.Tensor, images: torch.Tensor,
                       masks: torch.Tensor) -> torch.Tensor:
    """Every code map decoded by the conditioned decoder given each real image's observed pixels.

    codes (n, h, w); images (r, C, H, W) and masks (r, 1, H, W).  One batch of r·n decodes.
    Returns (r, n, C, H, W) on the CPU: row j = all n samples steered by image j's pixels.
    """
    if not model.conditioned:
        raise ValueError("the baseline has no conditioned decoder")
    device, n, r = _device(model), len(codes), len(images)
    with eval_mode(model):
        z = _quantizer(model).lookup(codes.to(device)).repeat(r, 1, 1, 1)   # block j holds all n maps
        x = images.to(device).repeat_interleave(n, dim=0)                   # ... next to image j
        out = model.decode(z, x, masks.to(device).repeat_interleave(n, dim=0), conditioned=True)
    return out.float().cpu().view(r, n, *images.shape[1:])


def draw_samples(model: MultitaskVAE, prior: GatedPixelCNN, val_images: torch.Tensor, n: int = 8, *,
                 seed: int = 0, temperature: float = 1.0, observed: int = OBSERVED_PIXELS,
                 rows: int = CONDITIONED_IMAGES, conditioning_seed: int | None = None) -> dict[str, torch.Tensor]:
    """What the report's generated-images figure shows, as CPU tensors.

    ``codes``/``images``: ``generate``; for a conditioned method also ``real`` (``rows``
    validation images), ``masks`` (``observed`` uniform pixels each), both drawn with
    ``conditioning_seed`` (default ``seed + 1``), and ``conditioned`` (``decode_conditioned``).
    Masks come from a CPU generator: the same on every device.
    """
    codes, images = generate(model, prior, n, seed=seed, temperature=temperature)
    samples = {"codes": codes, "images": images}
    if model.conditioned and len(val_images):
        generator = torch.Generator().manual_seed(seed + 1 if conditioning_seed is None else conditioning_seed)
        real = val_images[torch.randperm(len(val_images), generator=generator)[:rows]].float().cpu()
        side = real.shape[-1]
        masks = PixelSampler("uniform", side, count=min(observed, side * side)).sample(len(real), generator, "cpu")
        samples.update(real=real, masks=masks, conditioned=decode_conditioned(model, codes, real, masks))
    return samples


# --------------------------------------------------------------------------- storage


def save_prior(path: Path, result: PriorResult, info: dict, samples: dict[str, torch.Tensor] | None) -> Path:
    """Weights, prior config, provenance and samples in one file (written whole, then renamed)."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
               "config": asdict(result.model.config), "info": info, "samples": samples or {}}
    return _save_payload(path, payload)


def _save_payload(path: Path, payload: dict) -> Path:
    write_whole(path, lambda partial: torch.save(payload, partial))
    return path


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> tuple[GatedPixelCNN, dict]:
    """A stored prior (eval mode) and its payload: ``config``, ``info`` and ``samples``."""
    payload = torch.load(path, map_location=device, weights_only=True)  # tensors and plain data only
    model = GatedPixelCNN(PriorConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


def _current_rows(results_dir: Path, suite: str, results: pd.DataFrame) -> pd.DataFrame | None:
    """``<suite>_prior.csv`` without the rows of weights that ``results`` no longer hold (``current_priors``):
    they do not block new rows, and go with the next write."""
    prior = read_prior(results_dir, suite)
    return None if prior is None else current_priors(prior, results)[0]


def check_kept_rows(results_dir: Path, suite: str, results: pd.DataFrame, replaced: Iterable[str],
                    settings: dict, *, named: bool) -> str | None:
    """Refuse to add priors made with ``settings`` to a CSV whose other rows (those not ``replaced``)
    were made with other ones: the Prior NLL column would compare them as if alike. Those rows are of
    configurations left out of a stage that ``named`` some (``--config``), or else skipped by it, their
    fold not done. Rows about to be replaced that were made with other settings go with the first new
    row (``_update_csv``): the note returned says which, for a rerun not to replace them without a word."""
    old = _current_rows(results_dir, suite, results)
    if old is None:
        return None
    path, replaced = prior_csv_path(results_dir, suite), old["config_id"].isin(list(replaced))
    kept = old[~replaced]
    # what replaces them too: a stage of every configuration, or one whose fold of them is done
    them = "them" if len(kept) > 1 else "it"
    whole = ("rerun without --config to replace every configuration's" if named else
             f"finish fold {settings['fold']} of {them} first (this stage skips {them})")
    if not kept.empty and not _with_settings(kept):
        raise ValueError(f"{path} holds priors of {', '.join(kept['config_id'])} made by an earlier version, which "
                         f"chose each one's fold and epoch on its validation score; {whole}, or remove that file")
    if not kept.empty and (differing := _differing(kept, settings)):
        raise ValueError(f"{path} holds priors of {', '.join(kept['config_id'])} made with other settings "
                         f"({differing}); give these the same settings, {whole}, or remove that file")
    stale = old[_stale(old, replaced, settings)]
    other, earlier = stale[_recorded(stale)], stale[~_recorded(stale)]
    made = [(other, f"with other settings ({_differing(other, settings)})")] if not other.empty else []
    made += [(earlier, "by an earlier version")] if not earlier.empty else []
    if not made:
        return None
    (rows, how), *rest = made
    return (f"the priors of {', '.join(rows['config_id'])} in {path} were made {how}"
            + "".join(f", and those of {', '.join(rows['config_id'])} {how}" for rows, how in rest)
            + ": the first new prior stored replaces them")


def _stale(old: pd.DataFrame, replaced: pd.Series, settings: dict) -> pd.Series:
    """Which of the ``old`` prior rows go with the stage's first new row: those of its configurations
    (``replaced``) made with other settings."""
    return replaced & ~_made_with(old, settings)


def _recorded(rows: pd.DataFrame) -> pd.Series:
    """Which prior rows record their settings (a row of an earlier version records none)."""
    return rows.reindex(columns=list(SETTINGS)).notna().all(axis=1)


def _with_settings(rows: pd.DataFrame) -> bool:
    """Whether every prior row records its settings."""
    return bool(_recorded(rows).all())


def settings_flags(rows: pd.DataFrame) -> str | None:
    """The `prior` options that make a new prior agree with ``rows`` (``check_kept_rows``) and draw its
    samples at their temperature, or None where they do not all record one value of each setting."""
    if rows.empty or not _with_settings(rows) or (rows[list(SETTINGS)].nunique() > 1).any():
        return None
    # exact values: the settings are compared exactly, and argparse reads no 1e+06 as an int
    flags = [f"--{key.replace('_', '-')} {float(rows[key].iloc[0])!r}" if key == "lr" else
             f"--{key.replace('_', '-')} {int(rows[key].iloc[0])}" for key in SETTINGS]
    drawn = rows["temperature"].dropna().unique() if "temperature" in rows else ()
    if len(drawn) == 1:
        flags.append(f"--temperature {float(drawn[0])!r}")
    return " ".join(flags)


def _differing(rows: pd.DataFrame, settings: dict) -> str:
    """The settings in which prior rows that record theirs differ from ``settings`` ("hidden 32 there,
    64 now": the values of the rows that differ), or ""."""
    changes = []
    for key in SETTINGS:
        if there := sorted(set(rows.loc[~rows[key].eq(settings[key]), key])):
            changes.append(f"{key} {', '.join(f'{v:g}' for v in there)} there, {settings[key]:g} now")
    return "; ".join(changes)


def _update_csv(results_dir: Path, suite: str, results: pd.DataFrame, rows: list[dict], order: list[str],
                replaced: Iterable[str], settings: dict) -> Path:
    """Replace the rows of these configurations in ``<suite>_prior.csv`` (keep the others), in suite order.

    Rows of the stage's other configurations (``replaced``) made with other settings go now: an
    interrupted stage leaves no old row next to new ones, and one interrupted before its first
    row loses nothing."""
    path = prior_csv_path(results_dir, suite)
    old = _current_rows(results_dir, suite, results)
    new = pd.DataFrame(rows, columns=list(PRIOR_COLUMNS))
    if old is not None:
        stale = _stale(old, old["config_id"].isin(list(replaced)), settings)
        new = pd.concat([old[~old["config_id"].isin(new["config_id"]) & ~stale], new], ignore_index=True)
    rank = {c: i for i, c in enumerate(order)}
    _write_csv(new.sort_values("config_id", key=lambda ids: ids.map(lambda c: rank.get(c, len(rank))), kind="stable"),
               path)
    return path


def _made_with(rows: pd.DataFrame, settings: dict) -> pd.Series:
    """Which prior rows record these settings (a row of an earlier version records none)."""
    return rows.reindex(columns=list(settings)).eq(pd.Series(settings)).all(axis=1)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_whole(path, lambda partial: frame.to_csv(partial, index=False))


# --------------------------------------------------------------------------- the stage


@dataclass
class PriorStageSummary:
    """What ``run_prior_stage`` did: the CSV, its new rows, and configurations it skipped."""

    csv: Path
    rows: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def check_arguments(*, epochs: int, batch_size: int, lr: float, samples: int, temperature: float, hidden: int,
                    layers: int, kernel: int, fold: int | None) -> None:
    """``run_prior_stage``'s numbers: all their problems at once, each message beginning with its argument."""
    problems = [f"{name} must be >= {least}, got {value}" for name, value, least in (
        ("epochs", epochs, 1), ("batch_size", batch_size, 1), ("samples", samples, 0),
        ("fold", 0 if fold is None else fold, 0)) if value < least]
    problems += _sample_problems(samples, temperature) + [f"lr must be a finite number > 0, got {lr}"] * (
        not (math.isfinite(lr) and lr > 0))
    # stricter than PriorConfig, which loads a prior stored with kernel 1
    kernel_ok = kernel >= 3 and kernel % 2 == 1
    problems += [] if kernel_ok else [f"kernel must be odd and >= 3 (at 1 no layer widens the context: a code sees "
                                      f"only the code above it and the one to its left), got {kernel}"]
    raise_problems(problems + problems_of(PriorConfig, 2, hidden, layers, kernel if kernel_ok else 3))


def _sample_problems(samples: int, temperature: float) -> list[str]:
    """What is wrong with a number of samples to draw (at most ``MAX_SAMPLES``) and their temperature."""
    problems = [f"samples must be at most {MAX_SAMPLES} (a column of the figure each), got {samples}"] * (
        samples > MAX_SAMPLES)
    return problems + [f"temperature must be a finite number > 0, got {temperature}"] * (
        not (math.isfinite(temperature) and temperature > 0))


def _prior_seed(meta: dict, target: PriorTarget) -> int:
    """The seed of a configuration's prior: its initialisation, shuffling and samples."""
    return unit_seed(int(meta.get("seed", 0)), f"prior:{target.config_id}", target.fold)


def _load_vq(target: PriorTarget, device: torch.device) -> MultitaskVAE:
    """The trained VQ-VAE of ``target``; a one-line ``ValueError`` for weights that cannot be loaded or are
    another configuration's."""
    from benchmark.export import load_checkpoint

    try:
        model, info = load_checkpoint(target.checkpoint, device=str(device))
    except (RuntimeError, KeyError, OSError, ValueError) as error:  # e.g. weights of an older model
        raise ValueError(f"cannot load the checkpoint of {target.config_id} ({target.checkpoint}): "
                         f"{first_line(error)}") from None
    if info.get("config_id", target.config_id) != target.config_id:
        raise ValueError(f"checkpoint {target.checkpoint} holds {info['config_id']}, not {target.config_id} "
                         "(swapped or overwritten since the run?): put its own weights back")
    return model


def _draw(model: MultitaskVAE, prior: GatedPixelCNN, val_images: torch.Tensor, target: PriorTarget, meta: dict,
          samples: int, temperature: float) -> dict[str, torch.Tensor]:
    """``draw_samples`` with the configuration's seed, and one conditioning seed for the suite's fold: every
    configuration's figure shows the same real images and masks."""
    shared = unit_seed(int(meta.get("seed", 0)), "prior:conditioning", target.fold)
    return draw_samples(model, prior, val_images, samples, seed=_prior_seed(meta, target), temperature=temperature,
                        conditioning_seed=shared)


def run_prior_stage(results_dir: Path, suite: str, config_ids: Iterable[str] | None = None, *, epochs: int = 30,
                    batch_size: int = 128, lr: float = 1e-3, device: str = "auto", samples: int = 8,
                    temperature: float = 1.0, hidden: int = 64, layers: int = 8, kernel: int = 5,
                    fold: int | None = None, show_progress: bool = True,
                    on_result: Callable[[dict], None] | None = None,
                    notes: Callable[[str], None] | None = None) -> PriorStageSummary:
    """Fit, score and store the prior of every VQ-VAE configuration of a finished run (see module doc).

    Every argument and every target is checked before anything is trained or written.  The CSV
    is updated after each configuration, so an interrupted stage keeps what it finished.
    ``on_result`` receives each new CSV row as it is written; ``notes`` a note on the earlier rows
    this stage replaces, before training.
    """
    check_arguments(epochs=epochs, batch_size=batch_size, lr=lr, samples=samples, temperature=temperature,
                    hidden=hidden, layers=layers, kernel=kernel, fold=fold)
    config_ids = list(config_ids or ())  # none named: every configuration
    chosen_progress()  # a mistyped value fails before anything is trained, not once the bar is made
    torch_device = resolve_device(device)
    results_dir = Path(results_dir)
    targets, skipped, data = select_targets(results_dir, suite, config_ids, fold)
    meta = data.meta
    settings = {"fold": targets[0].fold, "epochs": epochs, "batch_size": batch_size, "lr": lr, "hidden": hidden,
                "layers": layers, "kernel": kernel}
    pool = training_pool(meta)
    # the code maps' size, of the first configuration (train_prior checks each): before a note or a prior
    check_kernel_width(kernel, *encode_codes(_load_vq(targets[0], torch_device), pool[:1]).shape[-2:])
    replaced = [t.config_id for t in targets]
    if (note := check_kept_rows(results_dir, suite, data.results, replaced, settings, named=bool(config_ids))) \
            and notes:
        notes(note)
    if notes and torch_device.type == "cpu" and (busy := shared_threads_note(torch.get_num_threads())):
        notes(busy.removeprefix("note: "))
    summary = PriorStageSummary(prior_csv_path(results_dir, suite), skipped=skipped)
    order = list(dict.fromkeys([*meta["configurations"], *(t.config_id for t in targets)]))
    # closed on Ctrl-C too: a message then starts a line
    with progress_bar(len(targets), f"prior {suite}", "config", show_progress) as bar:
        # tqdm's ETA moves once a configuration ends; this one, from every prior epoch trained so far
        stage_started, trained = time.perf_counter(), {"epochs": 0}
        for index, target in enumerate(targets, start=1):
            started = time.perf_counter()
            prefix = f"config {index}/{len(targets)} {target.config_id} (fold {target.fold})"
            bar.set_postfix_str(f"{prefix} | encoding", refresh=True)
            model = _load_vq(target, torch_device)
            train_x, val_x = fold_split(pool, meta, target.fold, (target.n_train, target.n_val))
            train_codes, val_codes = encode_codes(model, train_x), encode_codes(model, val_x)
            config = PriorConfig(_quantizer(model).codebook.num_embeddings, hidden, layers, kernel)
            seed = _prior_seed(meta, target)

            def on_epoch(record: dict, prefix: str = prefix) -> None:
                trained["epochs"] += 1
                left = len(targets) * epochs - trained["epochs"]
                eta = tqdm.format_interval(left * (time.perf_counter() - stage_started) / trained["epochs"])
                bar.set_postfix_str(f"ETA {eta} | {prefix} | epoch {record['epoch']}/{epochs} | "
                                    f"val NLL {record['val_nll']:.4f}", refresh=True)

            try:
                result = train_prior(train_codes, val_codes, config, epochs=epochs, batch_size=batch_size, lr=lr,
                                     seed=seed, device=torch_device, on_epoch=on_epoch)
            except PriorDivergedError as error:  # the priors finished before it are stored
                raise ValueError(f"{target.config_id}: {error}") from None
            drawn = None
            if samples:
                bar.set_postfix_str(f"{prefix} | sampling {samples}", refresh=True)
                try:
                    drawn = _draw(model, result.model, val_x, target, meta, samples, temperature)
                except RuntimeError as error:  # e.g. out of GPU memory: the prior trained is kept all the same
                    reason = first_line(error)
                    bar.write(f"warning: {target.config_id}: no samples drawn ({reason}); its prior is stored "
                              "without them (fewer --samples may fit)", file=sys.stderr)
            path = prior_file(results_dir, suite, target.config_id)
            save_prior(path, result, {"config_id": target.config_id, "method": target.method, "fold": target.fold,
                                      "checkpoint": str(target.checkpoint), "epochs": epochs, "best_epoch": result.best_epoch,
                                      "val_nll_nats": result.val_nll_nats,
                                      "temperature": temperature if samples else None,
                                      "code_shape": list(train_codes.shape[1:])}, drawn)
            row = {"config_id": target.config_id, "val_nll_nats": result.val_nll_nats,
                   "val_bits_per_code": result.val_bits_per_code, "uniform_nats": result.uniform_nats,
                   "frequency_nats": frequency_nats(train_codes, val_codes, config.num_codes),
                   "code_perplexity": code_perplexity(val_codes),
                   "best_epoch": result.best_epoch, "n_train": len(train_codes), "n_val": len(val_codes),
                   "prior_path": str(path), "checkpoint": target.checkpoint.name,
                   "seconds": time.perf_counter() - started,
                   "temperature": temperature if samples else None, **settings}  # with fold, epochs
            _update_csv(results_dir, suite, data.results, [row], order, replaced, settings)
            summary.rows.append(row)
            if on_result is not None:
                on_result(row)
            bar.update(1)
    return summary


def redraw_samples(results_dir: Path, suite: str, config_ids: Iterable[str] | None = None, *, samples: int = 8,
                   temperature: float = 1.0, device: str = "auto", show_progress: bool = True,
                   on_result: Callable[[dict], None] | None = None) -> PriorStageSummary:
    """New samples from the priors ``run_prior_stage`` stored (of every configuration, or of those named),
    drawn at ``temperature`` without training anything: for the report's figures at another temperature.

    The draw is seeded as the stage's, so at the stage's temperature it gives the same images. Each prior's
    file, and its row's ``temperature``, is rewritten as it is done: an interrupted redraw leaves every
    configuration with the samples its row describes. ``on_result`` receives each rewritten row.
    """
    raise_problems([f"samples must be >= 1 (images to draw), got {samples}"] * (samples < 1)
                   + _sample_problems(samples, temperature))
    chosen_progress()
    torch_device = resolve_device(device)
    results_dir, path = Path(results_dir), prior_csv_path(results_dir, suite)
    stored = read_prior(results_dir, suite)
    train = f"python -m benchmark prior --suite {suite}{results_dir_flag(results_dir)}"
    if stored is None:
        raise ValueError(f"suite {suite!r} has no priors to draw from ({path} is not there): train them with `{train}`")
    data = load_suite(results_dir, suite)
    _, named = check_named(data, suite, config_ids)
    rows, reasons = current_priors(stored, data.results)
    if rows.empty:
        raise ValueError(f"{path} holds no prior of the weights this run of suite {suite!r} holds "
                         f"({'; '.join(reasons)}): train them with `{train}`")
    if unknown := [c for c in named if c not in set(rows["config_id"])]:
        raise ValueError(f"{path} holds no prior of {', '.join(unknown)} fitted to this run's weights (it holds "
                         f"those of {', '.join(rows['config_id'])}): `{train} --config {unknown[0]}` trains one")
    rows = rows[rows["config_id"].isin(named)] if named else rows
    targets = [target for fold in dict.fromkeys(rows["fold"].astype(int))
               for target in select_targets(results_dir, suite, list(rows.loc[rows["fold"] == fold, "config_id"]),
                                            fold)[0]]
    pool, meta = training_pool(data.meta), data.meta
    summary = PriorStageSummary(path)
    with progress_bar(len(targets), f"redraw {suite}", "config", show_progress) as bar:
        for index, target in enumerate(targets, start=1):
            bar.set_postfix_str(f"config {index}/{len(targets)} {target.config_id} (fold {target.fold})", refresh=True)
            file = prior_file(results_dir, suite, target.config_id)
            try:
                prior, payload = load_prior(file)  # on the CPU: the file keeps CPU tensors, whatever draws
            except (OSError, RuntimeError, KeyError, ValueError) as error:
                raise ValueError(f"cannot load the prior of {target.config_id} ({file}): {first_line(error)}; "
                                 f"train it again with `{train} --config {target.config_id}`") from None
            model = _load_vq(target, torch_device)
            _, val_x = fold_split(pool, meta, target.fold, (target.n_train, target.n_val))
            try:
                payload["samples"] = _draw(model, prior.to(torch_device), val_x, target, meta, samples, temperature)
            except RuntimeError as error:  # e.g. out of GPU memory: its earlier samples are kept
                raise ValueError(f"{target.config_id}: no samples drawn ({first_line(error)}); its earlier ones are "
                                 "kept (fewer --samples may fit)") from None
            payload["info"]["temperature"] = temperature
            now = read_prior(results_dir, suite)  # as written by now, so that no other row changes
            # float: a library call may have written an integer; none in an earlier version's CSV
            now["temperature"] = now.get("temperature", pd.Series(math.nan, index=now.index)).astype(float)
            now.loc[now["config_id"] == target.config_id, "temperature"] = temperature
            _save_payload(file, payload)  # then the row at once: only two renames apart
            _write_csv(now, path)
            summary.rows.append(now[now["config_id"] == target.config_id].iloc[0].to_dict())
            if on_result is not None:
                on_result(summary.rows[-1])
            bar.update(1)
    return summary


# --------------------------------------------------------------------------- for the report


def prior_figures(results_dir: Path, suite: str, prior: pd.DataFrame, titles: dict[str, str],
                  directory: Path) -> tuple[list[Path], list[str]]:
    """``generated_<name>.{png,pdf}`` from the samples stored with each prior, for the configurations of
    ``titles`` (config id → the figures' name of it, ``configuration_title``) in its order; problems (a missing
    file, no samples stored) become warnings."""
    from benchmark.figures import generated_grid

    paths, warnings = [], []
    rows = prior.drop_duplicates("config_id", keep="last").set_index("config_id")
    for config_id in [c for c in titles if c in rows.index]:
        name = safe_name(config_id)
        try:
            _, payload = load_prior(prior_file(results_dir, suite, config_id))
            samples, method = payload.get("samples") or {}, payload["info"].get("method", "baseline")
            if "images" not in samples:
                warnings.append(f"{config_id}: no generated images stored (`prior --redraw` draws them without "
                                "training)")
                continue
            # Row labels say which decoder made the row; the single decoder has no "decoder 1".
            first, cond = ("empty mask", "") if method == "single" else ("decoder 1", "decoder 2: ")
            masks = samples.get("masks", [])
            # Uniform pixels for every method (draw_samples), whatever it trained on: the labels say so.
            labels = [first] + [f"{cond}{int(m.sum())} uniform px of image {j + 1}" for j, m in enumerate(masks)]
            temperature = payload["info"].get("temperature", 1.0)
            paths += generated_grid(samples["images"], directory / f"generated_{name}",
                                    conditioned=samples.get("conditioned"), real=samples.get("real"),
                                    masks=samples.get("masks"), row_labels=labels,
                                    title=f"{titles[config_id]}\nsamples of the prior at "
                                          f"temperature {temperature:g} (fold {rows.loc[config_id, 'fold']})")
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            warnings.append(f"{config_id}: no generated images ({type(error).__name__}: {error})")
    return paths, warnings


__all__ = ["PRIOR_COLUMNS", "PriorStageSummary", "PriorTarget", "decode_conditioned", "draw_samples", "encode_codes",
           "check_named", "fold_split", "generate", "load_prior", "prior_dir", "prior_figures", "prior_file",
           "redraw_samples", "run_prior_stage", "save_prior", "select_targets", "training_pool", "vq_configurations"]
