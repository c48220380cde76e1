"""One fold: train with AdamW, evaluate every epoch, keep the best epoch's weights and metrics."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from benchmark.balancing import LossBalancer
from benchmark.conditioning import PixelSampler
from benchmark.config import Configuration, TrainConfig, check_device
from benchmark.memory import keep_freed_memory
from benchmark.models import MultitaskVAE, build_model, eval_mode
from benchmark.models.cpu_convs import use_cpu_convs
from benchmark.processes import cpuinfo


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def resolve_device(device: str) -> torch.device:
    """auto | cpu | cuda | cuda:N as a torch device; ``ValueError`` for anything else, and for a
    GPU this machine does not have."""
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    resolved = torch.device(device)
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s): "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def cpu_model() -> str:
    """The CPU's model as the system names it (``AMD EPYC``), or ``''`` where it does not."""
    return cpuinfo("model name") or platform.processor()  # on Linux that is only the architecture


def device_name(device: torch.device) -> str:
    """The GPU's model (``cuda: NVIDIA H100 80GB HBM3``), or the CPU's with the vector instructions
    PyTorch's kernels use on it (``cpu: AMD EPYC (AVX512)``): what a reader of the results needs to
    weigh their training times."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return device.type
    model = cpu_model()
    return f"cpu: {model} ({torch.backends.cpu.get_cpu_capability()})" if model else "cpu"


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast has real kernels on ``device``. On a CPU, oneDNN's bf16 needs
    AVX-512; without it PyTorch falls back to plain loops: a 1024² product at 1 GFLOP/s on an
    AVX2 core, against 80 in float32. A GPU older than Ampere emulates bf16: slower than
    float32, but not by that much, so there it stays a choice (``auto`` does not take it)."""
    return device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def training_device(train_config: TrainConfig) -> torch.device:
    """The device ``train_config`` trains on. Raises ``ValueError`` for an unavailable device, and
    for bf16 on a CPU without bf16 kernels (a run that would take a hundred times longer)."""
    device = resolve_device(train_config.device)
    if train_config.autocast(device) and not native_bf16(device):
        raise ValueError(f"precision bf16 asked for, but this CPU ({torch.backends.cpu.get_cpu_capability()}) has no "
                         "bfloat16 kernels (oneDNN's need AVX-512): bf16 would train about 100x slower than "
                         "float32; use precision fp32")
    return device


def agreed_precision(train_config: TrainConfig, device: torch.device, kept: str | None,
                     study: str) -> tuple[str, str | None]:
    """The precision (``fp32`` or ``bf16``) a worker of ``study`` trains in on ``device``, and a note
    when it is not the one asked for. A study keeps the precision of its first run (``kept``; None
    for a new study), and one study's units must not train in two: under ``auto`` a worker takes
    the study's (an Ampere GPU joining a study an older GPU began goes on in fp32), and a CPU
    without bf16 kernels is refused a bf16 study here. A worker asking for another precision is
    refused when it opens the study."""
    own = train_config.effective_precision(device)
    if train_config.precision != "auto" or kept not in ("fp32", "bf16") or kept == own:
        return own, None
    if kept == "bf16" and not native_bf16(device):
        raise ValueError(f"study {study!r} trains in bf16, and this CPU ({torch.backends.cpu.get_cpu_capability()}) "
                         "has no bfloat16 kernels (about 100x slower than float32): run this worker on a GPU or a "
                         "CPU with AVX-512, or file this run under another --name")
    return kept, (f"note: study {study!r} trains in {kept}, as its first run did, so this run does too, not in "
                  f"{own} (precision auto on this device): one study's units train in one precision")


@dataclass
class FoldResult:
    """Per-fold outcome: metrics at the best epoch, the per-epoch history, the best weights, and
    how many images the fold trained and validated on (what the results record, so a swapped
    split shows there)."""

    best_epoch: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    n_train: int
    n_val: int
    seconds: float = 0.0


VAL_BATCH = 512  # validation images per forward pass: no gradients, so larger than a training batch


def check_images(name: str, images: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """A one-line ``ValueError`` for images the models cannot take as they are: they need a
    non-empty float32 (N, C, H, W) tensor with values in [0, 1] (the decoders end in a sigmoid),
    shaped like ``like``'s images when given."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.float32 or images.dim() != 4 or not len(images):
        got = (f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
               else type(images).__name__)
        raise ValueError(f"{name} must be a non-empty float32 tensor (N, C, H, W) in [0, 1], got {got}")
    if like is not None and images.shape[1:] != like.shape[1:]:
        raise ValueError(f"{name} are {tuple(images.shape[1:])} images, the training images "
                         f"{tuple(like.shape[1:])}")
    low, high = torch.aminmax(images)
    if not (low >= 0 and high <= 1):  # NaN fails too
        raise ValueError(f"{name} must lie in [0, 1] (the decoders end in a sigmoid), got values in "
                         f"[{low.item():.4g}, {high.item():.4g}]; 8-bit images: divide by 255")


def _generator(device: torch.device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _noise(batch: int, dim: int, generator: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """ε ~ N(0, I) of shape (batch, dim) for the reparameterisation; None for models without it."""
    return torch.randn(batch, dim, generator=generator, device=device) if dim else None


def evaluate(model: MultitaskVAE, images: torch.Tensor, sampler: PixelSampler | None,
             weights: dict[str, float], batch_size: int = VAL_BATCH, seed: int = 0) -> dict[str, float]:
    """Validation metrics, every module in eval mode, masks and reparameterisation noise from
    fixed seeds (``seed``, ``seed + 2``), so the numbers are deterministic (``train_fold``
    validates with ``seed`` = its own seed + 3). ``weights``: the fixed weight of each training
    term (``BalanceConfig.fixed_weights``), for ``total``.

    recon / recon_cond: per-pixel MSE of the unconditioned / conditioned decoder;
    latent: KL, or VQ loss at the paper's β (whatever β trains: one scale for every row);
    total: the training objective at ``weights`` and the model's β (training scale);
    recon_train / recon_cond_train: the reconstruction terms on the training scale.
    """
    check_images("validation images", images)
    if model.conditioned and sampler is None:
        raise ValueError(f"the {model.method} model's conditioned decoder needs a sampler for its validation masks")
    unknown = set(weights) - set(model.loss_terms)
    if unknown:
        raise ValueError(f"unknown loss term(s) {', '.join(sorted(unknown))} in weights; the {model.method} "
                         f"model's terms: {', '.join(model.loss_terms)}")
    return _validation_metrics(model, images, sampler, weights, batch_size, seed)


@torch.no_grad()
def _validation_metrics(model: MultitaskVAE, images: torch.Tensor, sampler: PixelSampler | None,
                        weights: dict[str, float], batch_size: int, seed: int) -> dict[str, float]:
    """``evaluate`` on input already checked: a fold validates every epoch, on images checked once."""
    with eval_mode(model):
        generator = _generator(images.device, seed)
        noise_generator = _generator(images.device, seed + 2)
        sums = torch.zeros(5, device=images.device, dtype=torch.float64)
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            code = model.encode(x, _noise(len(x), model.noise_dim, noise_generator, x.device))
            recon = model.reconstruction_loss(model.decode(code.z), x)
            cond = torch.zeros((), device=x.device)
            if model.conditioned:
                mask = sampler.sample(len(x), generator, x.device)
                cond = model.reconstruction_loss(model.decode(code.z, x, mask, conditioned=True), x)
            # The training objective's terms: the single decoder trains on its conditioned output.
            objective = {"recon": cond if model.method == "single" else recon, "recon_cond": cond,
                         "latent": code.objective(model.beta)}
            total = sum(weights[name] * objective[name] for name in weights)
            sums += torch.stack([recon, code.latent, cond, total, objective["latent"]]).double() * len(x)
        means = (sums / len(images)).tolist()
    conditioned = model.method != "baseline"
    return {
        "recon": means[0] * model.recon_scale,
        "latent": means[1],
        "recon_cond": means[2] * model.recon_scale if conditioned else math.nan,
        "total": means[3],
        "recon_train": means[0],
        "recon_cond_train": means[2] if conditioned else math.nan,
        "latent_train": means[4],  # at the trained β: β·KL, or codebook + β·commitment
    }


def whole_batch_note(batch_size: int, train_images: int) -> str | None:
    """A note when a fold has fewer training images than a batch: each epoch is then one step on all of
    them, not the batch the settings name (a small --limit with the default batch size)."""
    if batch_size <= train_images:
        return None
    return (f"note: batch size {batch_size} is more than a fold's {train_images} training images: each epoch is one "
            f"step on all {train_images}")


def mean_image_recon(train_images: torch.Tensor, val_images: torch.Tensor) -> float:
    """Per-pixel MSE of the training images' mean taken as every validation image's reconstruction:
    what a model that learnt nothing of each image scores (the scale of ``recon``)."""
    return float(((val_images.float() - train_images.float().mean(0)) ** 2).mean())


def new_model(configuration: Configuration, seed: int, channels: int, image_size: int,
              device: torch.device) -> MultitaskVAE:
    """The fold's model, its initial weights fixed by ``seed`` (the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):  # the model is built on the CPU, from its generator alone
        torch.default_generator.manual_seed(seed)
        return build_model(configuration.family, configuration.config, configuration.method.method,
                           channels, image_size, configuration.balance.beta).to(device)


class FoldRun:
    """What one fold carries through training besides its weights.

    Every source of randomness has its own generator derived from the fold's seed (batch
    order, masks, reparameterisation noise), so a fold gives the same numbers whether it is
    trained alone or stacked with other folds. Also tracks the history and the best epoch.
    """

    def __init__(self, configuration: Configuration, model: MultitaskVAE, train_images: torch.Tensor,
                 val_images: torch.Tensor, train_config: TrainConfig, seed: int) -> None:
        self.device = train_images.device
        self.train_x, self.val_x, self.seed = train_images, val_images, seed
        self.batch = train_config.batch_size
        self.noise_dim = model.noise_dim
        self.sampler = configuration.method.sampler(train_images.shape[-1])
        self.balancer = LossBalancer(configuration.balance, model.loss_terms)
        self.nominal = configuration.balance.fixed_weights(model.loss_terms)
        self.order_generator = _generator(torch.device("cpu"), seed + 2)
        self.mask_generator = _generator(self.device, seed + 1)
        self.noise_generator = _generator(self.device, seed + 4)
        self.best_total, self.best_epoch, self.best_metrics = math.inf, -1, {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self.started = time.perf_counter()

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_x) / self.batch)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        """One epoch of (x, mask or None, noise or None), the whole batch made at once on the device."""
        order = torch.randperm(len(self.train_x), generator=self.order_generator).to(self.device)
        for start in range(0, len(self.train_x), self.batch):
            x = self.train_x[order[start:start + self.batch]]
            mask = self.sampler.sample(len(x), self.mask_generator, self.device) if self.sampler else None
            yield x, mask, _noise(len(x), self.noise_dim, self.noise_generator, self.device)

    def end_epoch(self, epoch: int, train_loss: float, model: MultitaskVAE) -> dict[str, float]:
        """Validate, record the epoch, keep the weights if it is the best so far."""
        metrics = _validation_metrics(model, self.val_x, self.sampler, self.nominal, VAL_BATCH, self.seed + 3)
        if not all(math.isfinite(v) for v in (train_loss, metrics["total"])):
            raise DivergedError(f"loss diverged at epoch {epoch} (train {train_loss:.4g}, validation "
                                f"{metrics['total']:.4g})")
        row = {"epoch": epoch, "train_total": train_loss, **metrics,
               **{f"w_{name}": weight for name, weight in self.balancer.applied.items()}}
        self.history.append(row)
        if metrics["total"] < self.best_total:
            self.best_total, self.best_epoch, self.best_metrics = metrics["total"], epoch, metrics
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return row

    def result(self) -> FoldResult:
        return FoldResult(self.best_epoch, dict(self.best_metrics), self.history, self.best_state or {},
                          len(self.train_x), len(self.val_x), time.perf_counter() - self.started)


def train_fold(configuration: Configuration, train_images: torch.Tensor, val_images: torch.Tensor,
               train_config: TrainConfig, seed: int,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FoldResult:
    """Train ``configuration`` on one fold and return its best epoch.

    The seed fixes the initial weights, the batch order, the training masks and noise;
    validation masks and noise use seeds derived from it, so rerunning a fold on the same CPU with
    the same thread count gives the same numbers (another thread count, as under ``--workers``,
    sums in another order: float noise). Raises ``DivergedError`` when a loss becomes NaN or infinite.
    """
    check_images("training images", train_images)
    check_images("validation images", val_images, like=train_images)
    device = training_device(train_config)
    # channels_last: the convolution kernels' preferred layout on CPU and GPU (measured faster);
    # flatten() keeps the logical order, so the numbers do not change. The CPU convolution
    # routes are the same layers computed another way (benchmark.models.cpu_convs).
    model = new_model(configuration, seed, train_images.shape[1], train_images.shape[-1], device)
    if device.type == "cpu":
        keep_freed_memory()
        model = use_cpu_convs(model)
    model = model.to(memory_format=torch.channels_last)
    layout = {"device": device, "memory_format": torch.channels_last}
    fold = FoldRun(configuration, model, train_images.to(**layout), val_images.to(**layout), train_config, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay,
                                  fused=True)
    autocast = train_config.autocast(device)
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        running = torch.zeros((), device=device)
        for x, mask, noise in fold.batches():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                terms = model(x, mask, noise).terms
            loss = fold.balancer.combine(terms)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach()
        row = fold.end_epoch(epoch, float(running) / fold.steps_per_epoch, model)  # one sync per epoch
        if on_epoch is not None:
            on_epoch(epoch, row)
    return fold.result()
