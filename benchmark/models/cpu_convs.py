"""Convolutions as matrix products, for the shapes oneDNN runs slowly on the CPU.

Measured in a bf16 training step on one core (batch 128), oneDNN runs three kinds of layer
at a third to a half of its usual rate:

* a transposed convolution with an input of at most 4 pixels (the Gaussian VAE's first
  decoder layer, 2x2 → 4x4): one matrix product takes every input pixel through every kernel
  tap, and a second sums, for each output pixel, the (pixel, tap) pairs that land on it
  (a 0/1 selector; fwd + bwd 9.1 → 6.3 ms). Building the layer's dense linear map instead,
  as an earlier version did, cost two copies of a 2M-entry map and its einsum every step
  (fwd + bwd 9-16 ms).
* a convolution with an input of at most 16 pixels (the Gaussian VAE's last encoder layer,
  4x4 → 2x2): the mirror image. A selector product gathers each output pixel's (pixel, tap)
  inputs, then one product with the weight (fwd + bwd 5.3 → 3.1 ms; oneDNN's weight gradient
  alone took 2.5 ms). With 64 input pixels the gathering product costs more than it saves.
* a transposed convolution with at most 4 output channels (every decoder's image layer,
  32 → 1 channel): one matrix product per input pixel, then ``F.fold`` adds the overlapping
  4x4 patches (4.3 → 2.3 ms).

On an AMD CPU with AVX-512, the large float32 products of the two selector routes run as 1x1
convolutions (``product``): ``torch.mm`` goes to MKL, which there reaches half of oneDNN's
rate, and through it the routes were slower than oneDNN's own convolution (fwd + bwd
15.3 → 18.8 ms and 8.7 → 10.5 ms for the two VAE layers); bf16 products go to oneDNN already.
``CPULinear`` takes the product of the Gaussian VAE's conditioned decoder input (float32, 2M
weights) to oneDNN the same way. On Intel CPUs, and with AVX2 only, MKL is the faster one
(see ``onednn_products``), and the routes use ``torch.mm``.

``CPUConv2d``, ``CPUConvTranspose2d`` and ``CPULinear`` keep their ``nn`` class's parameters,
so checkpoints do not change; on other devices, and for every other shape, they are the ``nn``
layer. The trainer swaps them in (``use_cpu_convs``) like it picks channels-last: they are part
of the training path, not of the model. The vmapped fold ensemble keeps the plain layers: CPU batch
norm under ``vmap`` rejects the bf16 output these routes give under autocast.
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.processes import cpuinfo

TAP_SUM_MAX_PIXELS = 4
GATHER_MAX_PIXELS = 16
FOLD_MAX_CHANNELS = 4
# PyTorch gives a single-threaded 1x1 convolution to oneDNN only for a batch of at least 16.
PRODUCT_IMAGES = 16
LINEAR_MIN_WEIGHTS, LINEAR_MAX_WEIGHTS = 1_000_000, 2_500_000


def _taps_1d(small: int, large: int, kernel: int, stride: int, padding: int, device: torch.device) -> torch.Tensor:
    """One-hot (small, large, kernel): tap k joins index i of the small side to index
    ``stride·i - padding + k`` of the large side (a transposed convolution's input and output,
    a convolution's output and input)."""
    tap = torch.arange(large, device=device)[None, :] - stride * torch.arange(small, device=device)[:, None] + padding
    valid = (tap >= 0) & (tap < kernel)
    return F.one_hot(tap.clamp(0, kernel - 1), kernel) * valid[..., None]


def tap_selector(small: tuple[int, int], large: tuple[int, int], layer: nn.modules.conv._ConvNd,
                 device: torch.device) -> torch.Tensor:
    """One-hot (small-side pixels, large-side pixels, kernel taps), pixels in row-major order."""
    rows = _taps_1d(small[0], large[0], layer.kernel_size[0], layer.stride[0], layer.padding[0], device)
    cols = _taps_1d(small[1], large[1], layer.kernel_size[1], layer.stride[1], layer.padding[1], device)
    taps = torch.einsum("aok,bpl->abopkl", rows, cols)
    return taps.reshape(small[0] * small[1], large[0] * large[1], -1)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def _channels_last_pixels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, pixels, channels): free for a channels-last input."""
    batch, channels, height, width = x.shape
    return x.to(dtype).permute(0, 2, 3, 1).reshape(batch, height * width, channels)


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``); '' where the system does not say."""
    vendor = cpuinfo("vendor_id")
    return platform.processor() if vendor is None else vendor  # Windows: "Intel64 Family 6 ..., GenuineIntel"


def onednn_products() -> bool:
    """Whether ``product`` takes float32 products to oneDNN: on non-Intel CPUs with AVX-512 only.

    One core of an AMD EPYC, a 2048² product: with AVX-512, oneDNN 145-200 GFLOP/s (fwd + bwd of
    the routes' shapes) against MKL's 84-93; with AVX2, oneDNN 43 against MKL's 80, and the VAE's
    selector layers ran faster through ``torch.mm`` than through either convolution. MKL is
    Intel's and runs at full speed on an Intel Xeon with AVX-512 (2048² float32: MKL 348-382
    GFLOP/s on two cores, a oneDNN 1x1 convolution 263-356), where the Gaussian VAE trained 5-17%
    faster through it. ``ATEN_CPU_CAPABILITY=avx2`` turns the oneDNN route off on any CPU.
    """
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and "GenuineIntel" not in cpu_vendor()


def product(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``a @ weight`` for ``a`` (rows, k) and ``weight`` (k, n).

    In float32, where ``onednn_products``, as a 1x1 convolution over the rows split into 16
    images, which goes to oneDNN. A weight stored (n, k) is a convolution's, one stored (k, n) a
    transposed convolution's: either reads it as it lies (a copy to the other order cost 1 ms
    per use).
    """
    rows, k = a.shape
    if a.dtype != torch.float32 or rows % PRODUCT_IMAGES or not onednn_products():
        return a @ weight
    images = a.reshape(PRODUCT_IMAGES, rows // PRODUCT_IMAGES, 1, k).permute(0, 3, 1, 2)  # channels-last
    if weight.t().is_contiguous():
        y = F.conv2d(images, weight.t()[:, :, None, None])
    else:
        y = F.conv_transpose2d(images, weight.contiguous()[:, :, None, None])
    return y.permute(0, 2, 3, 1).reshape(rows, -1)


def _plain_layer(layer: nn.modules.conv._ConvNd) -> bool:
    return layer.groups == 1 and layer.dilation == (1, 1) and layer.padding_mode == "zeros"


class CPUConv2d(nn.Conv2d):
    """``nn.Conv2d`` (groups 1, dilation 1, zero padding) with the gathering route above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        dtype = _compute_dtype(x)
        if x.device.type != "cpu" or isinstance(self.padding, str) or height * width > GATHER_MAX_PIXELS:
            return super().forward(x)
        out_height = (height + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        out_width = (width + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        # (out pixels · taps, in pixels): the inputs each output pixel reads through each tap
        selector = tap_selector((out_height, out_width), (height, width), self, x.device)
        selector = selector.to(dtype).transpose(1, 2).flatten(0, 1)
        columns = (selector @ _channels_last_pixels(x, dtype)).view(batch * out_height * out_width, -1)
        weight = self.weight.to(dtype).permute(0, 2, 3, 1).reshape(self.out_channels, -1)  # (out, taps · in)
        y = product(columns, weight.t())
        if self.bias is not None:
            y = y + self.bias.to(dtype)
        return y.view(batch, out_height, out_width, self.out_channels).permute(0, 3, 1, 2)


class CPUConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (groups 1, dilation 1, zero padding, no output padding) with the
    tap-sum and fold routes above."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        batch, _, height, width = x.shape
        dtype = _compute_dtype(x)
        tap_sum = height * width <= TAP_SUM_MAX_PIXELS
        if x.device.type != "cpu" or output_size is not None or not (tap_sum or self.out_channels <= FOLD_MAX_CHANNELS):
            return super().forward(x, output_size)
        pixels = _channels_last_pixels(x, dtype)
        out_height = (height - 1) * self.stride[0] - 2 * self.padding[0] + self.kernel_size[0]
        out_width = (width - 1) * self.stride[1] - 2 * self.padding[1] + self.kernel_size[1]
        if tap_sum:
            weight = self.weight.to(dtype).permute(0, 2, 3, 1).reshape(self.in_channels, -1)  # (in, taps · out)
            through_taps = product(pixels.reshape(-1, self.in_channels), weight).view(batch, -1, self.out_channels)
            # (out pixels, in pixels · taps): which (pixel, tap) contributions each output pixel sums
            selector = tap_selector((height, width), (out_height, out_width), self, x.device)
            selector = selector.to(dtype).transpose(0, 1).flatten(1)
            y = (selector @ through_taps).view(batch, out_height, out_width, self.out_channels).permute(0, 3, 1, 2)
        else:
            patches = (pixels @ self.weight.to(dtype).flatten(1)).transpose(1, 2)  # (batch, out · kh · kw, pixels)
            y = F.fold(patches, (out_height, out_width), self.kernel_size, stride=self.stride, padding=self.padding)
        return y if self.bias is None else y + self.bias.to(dtype).view(1, -1, 1, 1)


class _LinearProduct(torch.autograd.Function):
    """``x @ weight.T`` with the input and its gradient through ``product``; the weight's
    gradient, a sum over only the batch's rows, is faster in ``torch.mm``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return product(x, weight.t())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = product(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ x if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight


class CPULinear(nn.Linear):
    """``nn.Linear`` with the product of a float32 CPU layer of 1-2.5M weights through oneDNN
    (where ``onednn_products``).

    That is the Gaussian VAE's conditioned decoder input (z ⊕ m, 2,064-2,112 → 1,024): fwd + bwd
    20.3 → 15.1 ms on one core. Smaller layers gain nothing; larger ones (the VQ-VAE decoder
    inputs, 3-25M weights) ran no faster or slower through oneDNN than through MKL.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or _compute_dtype(x) != torch.float32 or not onednn_products()
                or not LINEAR_MIN_WEIGHTS <= self.weight.numel() <= LINEAR_MAX_WEIGHTS):
            return super().forward(x)
        y = _LinearProduct.apply(x.reshape(-1, self.in_features), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def use_cpu_convs(model: nn.Module) -> nn.Module:
    """Replace ``model``'s plain convolutions, transposed convolutions and linear layers by
    ``CPUConv2d``, ``CPUConvTranspose2d`` and ``CPULinear`` sharing their parameters."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                fast: nn.Module = CPULinear(child.in_features, child.out_features, bias=child.bias is not None,
                                            device="meta")
            elif type(child) is nn.Conv2d and _plain_layer(child):
                fast = CPUConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                 child.padding, bias=child.bias is not None, device="meta")
            elif type(child) is nn.ConvTranspose2d and _plain_layer(child) and child.output_padding == (0, 0):
                fast = CPUConvTranspose2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                          child.padding, bias=child.bias is not None, device="meta")
            else:
                continue
            fast.weight, fast.bias = child.weight, child.bias
            setattr(parent, name, fast)
    return model
