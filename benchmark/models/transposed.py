"""Transposed convolutions as matrix products, for the shapes oneDNN runs slowly on the CPU.

Measured in a bf16 training step on one core (batch 128), oneDNN's transposed convolution
reaches a third of its usual rate in two places of the decoders:

* an input of at most 4 pixels (the Gaussian VAE's first layer, 2x2 → 4x4): one matrix
  product takes every input pixel through every kernel tap, and a second sums, for each
  output pixel, the (pixel, tap) pairs that land on it (0/1 selector; fwd + bwd 9.1 → 6.3 ms).
  Building the layer's dense linear map instead, as an earlier version did, cost two copies
  of a 2M-entry map and its einsum every step (fwd + bwd 9-16 ms). Not in float32: there
  ``torch.mm`` goes to MKL, which reaches half of oneDNN's rate on AMD CPUs (14 → 23 ms);
  bf16 products go to oneDNN.
* at most 4 output channels (every decoder's image layer, 32 → 1 channel): one matrix
  product per input pixel, then ``F.fold`` adds the overlapping 4x4 patches (4.3 → 2.3 ms).

``CPUConvTranspose2d`` keeps ``nn.ConvTranspose2d``'s parameters, so checkpoints do not change;
on other devices, and for every other shape, it is ``nn.ConvTranspose2d``. The trainer swaps
these layers in (``use_cpu_transposed``) like it picks channels-last: it is part of the
training path, not of the model. The vmapped fold ensemble keeps the plain layers: CPU batch
norm under ``vmap`` rejects the bf16 output these routes give under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TAP_SUM_MAX_PIXELS = 4
FOLD_MAX_CHANNELS = 4


def _taps_1d(size: int, kernel: int, stride: int, padding: int, device: torch.device) -> torch.Tensor:
    """One-hot (size, out_size, kernel): which kernel tap joins input index i to output index o."""
    out_size = (size - 1) * stride - 2 * padding + kernel
    tap = torch.arange(out_size, device=device)[None, :] - stride * torch.arange(size, device=device)[:, None] + padding
    valid = (tap >= 0) & (tap < kernel)
    return F.one_hot(tap.clamp(0, kernel - 1), kernel) * valid[..., None]


def tap_selector(height: int, width: int, conv: nn.ConvTranspose2d, device: torch.device) -> torch.Tensor:
    """One-hot (in pixels, out pixels, kernel taps), pixels in row-major order."""
    rows = _taps_1d(height, conv.kernel_size[0], conv.stride[0], conv.padding[0], device)
    cols = _taps_1d(width, conv.kernel_size[1], conv.stride[1], conv.padding[1], device)
    taps = torch.einsum("aok,bpl->abopkl", rows, cols)
    return taps.reshape(height * width, rows.shape[1] * cols.shape[1], -1)


class CPUConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (groups 1, dilation 1, no output padding) with the two CPU routes above."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        batch, _, height, width = x.shape
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        tap_sum = height * width <= TAP_SUM_MAX_PIXELS and dtype != torch.float32
        if x.device.type != "cpu" or output_size is not None or not (tap_sum or self.out_channels <= FOLD_MAX_CHANNELS):
            return super().forward(x, output_size)
        # (batch, pixels · channels) in channels-last order: free for a channels-last input.
        pixels = x.to(dtype).permute(0, 2, 3, 1).reshape(batch, height * width, self.in_channels)
        out_height = (height - 1) * self.stride[0] - 2 * self.padding[0] + self.kernel_size[0]
        out_width = (width - 1) * self.stride[1] - 2 * self.padding[1] + self.kernel_size[1]
        if tap_sum:
            weight = self.weight.to(dtype).permute(0, 2, 3, 1).reshape(self.in_channels, -1)  # (in, taps · out)
            through_taps = (pixels.reshape(-1, self.in_channels) @ weight).view(batch, -1, self.out_channels)
            # (out pixels, pixels · taps): which (pixel, tap) contributions each output pixel sums
            selector = tap_selector(height, width, self, x.device).to(dtype).transpose(0, 1).flatten(1)
            y = (selector @ through_taps).view(batch, out_height, out_width, self.out_channels).permute(0, 3, 1, 2)
        else:
            patches = (pixels @ self.weight.to(dtype).flatten(1)).transpose(1, 2)  # (batch, out · kh · kw, pixels)
            y = F.fold(patches, (out_height, out_width), self.kernel_size, stride=self.stride, padding=self.padding)
        return y if self.bias is None else y + self.bias.to(dtype).view(1, -1, 1, 1)


def use_cpu_transposed(model: nn.Module) -> nn.Module:
    """Replace ``model``'s plain transposed convolutions by ``CPUConvTranspose2d`` sharing their parameters."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if (type(child) is nn.ConvTranspose2d and child.groups == 1 and child.dilation == (1, 1)
                    and child.output_padding == (0, 0) and child.padding_mode == "zeros"):
                fast = CPUConvTranspose2d(child.in_channels, child.out_channels, child.kernel_size,
                                          child.stride, child.padding, bias=child.bias is not None,
                                          device="meta")
                fast.weight, fast.bias = child.weight, child.bias
                setattr(parent, name, fast)
    return model
