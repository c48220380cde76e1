"""The machine's dense-matmul peak and the FLOPs of one training step: what "% peak" is measured against."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.train import native_bf16


def conv3x3_channels(size: int) -> int:
    """Channels of the peak's 3x3-convolution route for a matrix side of ``size``."""
    return max(1, size // 8)


@dataclass(frozen=True)
class MatmulPeak:
    """The best dense-matmul rate seen on the device, in GFLOP/s (``bf16`` None when not measured).

    ``rates`` holds every route measured, e.g. ``{"torch.mm float32": ..., "1x1 conv float32": ...}``;
    ``fp32`` / ``bf16`` are the best route of each dtype.
    """

    device: str
    size: int
    fp32: float
    bf16: float | None
    rates: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        routes = ", ".join(f"{name} {rate:,.0f}" for name, rate in self.rates.items())
        bf16 = f", bfloat16 {self.bf16:,.0f} GFLOP/s" if self.bf16 else ""
        return (f"matmul peak on {self.device}: float32 {self.fp32:,.0f} GFLOP/s{bf16} "
                f"(best of {self.size}x{self.size} products and a 3x3 convolution of {conv3x3_channels(self.size)} "
                f"channels; {routes})")


PEAK_SIZES = {"cpu": 2048, "cuda": 8192}  # the square product's side on each: large enough to reach the peak


def default_peak_size(device: torch.device) -> int:
    """The side of the square product that measures ``device``'s peak unless one is given."""
    return PEAK_SIZES["cuda" if device.type == "cuda" else "cpu"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: str | torch.device = "cpu", size: int | None = None, repeats: int = 5) -> MatmulPeak:
    """Best dense matrix-product rate on ``device``, float32 and bfloat16, over several routes.

    Routes: ``torch.mm`` of two n×n matrices (the BLAS: MKL on CPU, cuBLAS on CUDA); on CPU
    the same product as a 1x1 convolution, which runs on oneDNN like the models' convolutions
    (MKL's GEMM is not the fastest route on every CPU, e.g. AVX-512 AMD ones); and a 3x3
    convolution of n/8 channels on 16x16 maps, batch 128, channels-last: an implicit GEMM whose
    register blocking beats both square products on some CPUs (seen: 450 against 320 GFLOP/s),
    so without it the models' big convolutions ran "above the peak". The peak is the best route.
    No bfloat16 rate where bf16 has no kernels (``native_bf16``): on an AVX2 CPU it took over 20
    minutes and would mean nothing.
    """
    device = torch.device(device)
    size = size or default_peak_size(device)
    inner = 20 if device.type == "cuda" else 3

    def best(route: Callable[[torch.dtype], tuple[Callable[[], object], float]], dtype: torch.dtype) -> float:
        run, flops = route(dtype)
        run()  # warm-up (library initialisation, kernel choice)
        _sync(device)
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(inner):
                run()
            _sync(device)
            rates.append(flops * inner / (time.perf_counter() - started) / 1e9)
        return max(rates)

    def square(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(size, size, device=device, dtype=dtype),
                torch.randn(size, size, device=device, dtype=dtype))

    def mm(dtype):
        a, b = square(dtype)
        return (lambda: torch.mm(a, b)), 2.0 * size ** 3

    def conv1x1(dtype):  # out[o, p] = Σ_i w[o, i] · x[i, p] over size pixels: the same product
        a, b = square(dtype)
        x, w = b.view(1, size, 1, size), a.view(size, size, 1, 1)
        return (lambda: torch.nn.functional.conv2d(x, w)), 2.0 * size ** 3

    def conv3x3(dtype):
        batch, channels, side = 128, conv3x3_channels(size), 16
        layout = {"device": device, "dtype": dtype}
        x = torch.randn(batch, channels, side, side, **layout).to(memory_format=torch.channels_last)
        w = torch.randn(channels, channels, 3, 3, **layout).to(memory_format=torch.channels_last)
        return (lambda: torch.nn.functional.conv2d(x, w, padding=1)), 2.0 * 9 * batch * side * side * channels ** 2

    routes = {"torch.mm": mm, **({"1x1 conv": conv1x1} if device.type == "cpu" else {}), "3x3 conv": conv3x3}
    dtypes = {"float32": torch.float32, **({"bfloat16": torch.bfloat16} if native_bf16(device) else {})}
    rates = {f"{route} {name}": best(make, dtype)
             for name, dtype in dtypes.items() for route, make in routes.items()}
    fp32 = max(rate for name, rate in rates.items() if name.endswith("float32"))
    half = max((rate for name, rate in rates.items() if name.endswith("bfloat16")), default=None)
    return MatmulPeak(str(device), size, fp32, half, rates)


def training_flops(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                   loss_fn: Callable | None = None) -> int:
    """FLOPs of one training step (forward + backward) on batch ``x``, as ``FlopCounterMode`` counts them.

    ``loss_fn`` maps the model's output to the scalar loss (default: the sum of a
    ``ModelOutput``'s terms, or of a plain tensor output).
    """
    def default_loss(output):
        if isinstance(output, torch.Tensor):
            return output.sum()
        return sum(output.terms.values())

    loss_fn = loss_fn or default_loss
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(x) if mask is None else model(x, mask)
        loss_fn(output).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()
