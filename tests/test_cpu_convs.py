"""The CPU convolution routes and the allocator setting of the CPU training path."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models import build_model, cpu_convs
from benchmark.models.cpu_convs import (
    CPUConv2d,
    CPUConvTranspose2d,
    CPULinear,
    product,
    tap_selector,
    use_cpu_convs,
)

# (in channels, out channels, input side, bias): the Gaussian VAE's first layer (tap-sum route),
# image layers of 1 and 3 channels (fold route), a 1x1 and an odd-sized input (tap sum), and a
# layer that keeps oneDNN (8x8 input, 32 channels out).
SHAPES = [(256, 128, 2, False), (32, 1, 16, True), (32, 3, 16, True), (64, 32, 1, True), (16, 2, 3, False),
          (64, 32, 8, False)]


# (in channels, out channels, input side, kernel, stride, padding, bias): the Gaussian VAE's last
# encoder layer (gathering route), a stride-1 3x3 with bias, a 1x1, an odd-sized input and one
# that keeps oneDNN (64 input pixels).
CONV_SHAPES = [(128, 256, 4, 3, 2, 1, False), (8, 6, 4, 3, 1, 1, True), (8, 4, 2, 1, 1, 0, True),
               (5, 7, 3, 3, 2, 1, False), (16, 32, 8, 3, 2, 1, False)]


def swapped(conv: nn.Module) -> nn.Module:
    return use_cpu_convs(nn.Sequential(conv))[0]


@pytest.mark.parametrize("cin, cout, side, kernel, stride, padding, bias", CONV_SHAPES)
def test_output_and_gradients_equal_conv2d(cin, cout, side, kernel, stride, padding, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias).double()
    x = torch.randn(3, cin, side, side, dtype=torch.double, requires_grad=True)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, *conv.parameters()), grad)

    fast = swapped(conv)
    assert isinstance(fast, CPUConv2d)
    got = fast(x)
    got_grads = torch.autograd.grad(got, (x, *fast.parameters()), grad)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_conv_gathering_route_under_bf16_autocast():
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 256, 3, stride=2, padding=1, bias=False)
    x = torch.randn(8, 128, 4, 4).contiguous(memory_format=torch.channels_last)
    fast = swapped(conv)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = conv(x), fast(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.02, atol=0.05)
    assert "aten::bmm" in ops_run(fast, x, bf16=True)


@pytest.mark.parametrize("cin, cout, side, bias", SHAPES)
def test_output_and_gradients_equal_conv_transpose2d(cin, cout, side, bias):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias).double()
    x = torch.randn(3, cin, side, side, dtype=torch.double, requires_grad=True)
    expected = F.conv_transpose2d(x, conv.weight, conv.bias, stride=2, padding=1)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, *conv.parameters()), grad)

    fast = swapped(conv)
    got = fast(x)
    got_grads = torch.autograd.grad(got, (x, *fast.parameters()), grad)
    assert got.shape == (3, cout, 2 * side, 2 * side)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin, cout, side, bias", SHAPES[:3])
def test_bf16_autocast_matches_in_dtype_and_value(cin, cout, side, bias):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    x = torch.randn(8, cin, side, side).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = conv(x), swapped(conv)(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.02, atol=0.05)
    if side * side <= 4:  # the tap-sum route writes channels-last, the layout the next layer wants
        assert got.is_contiguous(memory_format=torch.channels_last)


def ops_run(module: nn.Module, x: torch.Tensor, bf16: bool) -> set[str]:
    with torch.profiler.profile() as profile, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        module(x)
    return {event.key for event in profile.key_averages()}


@pytest.fixture(params=[True, False], ids=["avx512", "avx2"])
def onednn(request, monkeypatch) -> bool:
    """Both float32 product routes, whatever this CPU has: oneDNN's (AVX-512) and torch.mm (AVX2)."""
    monkeypatch.setattr(cpu_convs, "onednn_products", lambda: request.param)
    return request.param


@pytest.mark.parametrize("capability, vendor, expected", [
    ("AVX512", "AuthenticAMD", True), ("AVX512", "", True), ("AVX512", "GenuineIntel", False),
    ("AVX2", "AuthenticAMD", False), ("AVX2", "GenuineIntel", False), ("DEFAULT", "AuthenticAMD", False)])
def test_float32_products_go_to_onednn_on_non_intel_avx512_cpus_only(monkeypatch, capability, vendor, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(cpu_convs, "cpu_vendor", lambda: vendor)
    assert cpu_convs.onednn_products() is expected


def test_cpu_vendor_reads_the_vendor_id_of_this_machine():
    cpuinfo = Path("/proc/cpuinfo")
    vendors = {line.split(":")[1].strip() for line in cpuinfo.read_text().splitlines()
               if line.startswith("vendor_id")} if cpuinfo.exists() else set()
    if not vendors:
        pytest.skip("this system names no CPU vendor in /proc/cpuinfo")
    assert {cpu_convs.cpu_vendor()} == vendors


@pytest.mark.parametrize("conv", [nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1, bias=False),
                                  nn.Conv2d(128, 256, 3, stride=2, padding=1, bias=True)],
                         ids=["tap-sum", "gathering"])
def test_float32_routes_take_their_large_product_to_a_convolution_with_avx512(conv, onednn):
    # float32 torch.mm goes to MKL, half as fast as oneDNN on AVX-512 AMD CPUs; a 1x1 convolution
    # goes to oneDNN. With AVX2 it is the other way round.
    torch.manual_seed(0)
    side = 2 if isinstance(conv, nn.ConvTranspose2d) else 4
    x = torch.randn(8, conv.in_channels, side, side).contiguous(memory_format=torch.channels_last)
    fast = swapped(conv).to(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = conv(x)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, *conv.parameters()), grad)
    got = fast(x)
    got_grads = torch.autograd.grad(got, (x, *fast.parameters()), grad)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    ops = ops_run(fast, x, bf16=False)
    assert ("aten::mm" not in ops and "aten::convolution" in ops) if onednn else "aten::convolution" not in ops
    assert "aten::mm" in ops_run(fast, x, bf16=True)  # bf16 products go to oneDNN as they are


@pytest.mark.parametrize("rows", [32, 20])  # the product's route, and torch.mm
def test_large_linear_layer_equals_nn_linear_in_float32(rows, onednn):
    torch.manual_seed(0)
    linear = nn.Linear(1100, 1000)  # as large as the Gaussian VAE's conditioned decoder input
    fast = swapped(linear)
    assert isinstance(fast, CPULinear)
    x = torch.randn(rows, 1100, requires_grad=True)
    expected = linear(x)
    grad = torch.randn_like(expected)
    got = fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    for g, e in zip(torch.autograd.grad(got, (x, *fast.parameters()), grad),
                    torch.autograd.grad(expected, (x, *linear.parameters()), grad)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    assert ("aten::convolution" in ops_run(fast, x, bf16=False)) == (onednn and rows % 16 == 0)
    assert "aten::convolution" not in ops_run(fast, x, bf16=True)  # under autocast: nn.Linear as it is
    assert "aten::convolution" not in ops_run(swapped(nn.Linear(64, 32)), x[:, :64], bf16=False)  # small: as it is


@pytest.mark.parametrize("rows", [64, 20])  # split into 16 images, and not
@pytest.mark.parametrize("stored", ["(k, n)", "(n, k)"])
def test_product_equals_matmul_for_either_weight_order(rows, stored, onednn):
    torch.manual_seed(0)
    a = torch.randn(rows, 24, requires_grad=True)
    weight = torch.randn(24, 40) if stored == "(k, n)" else torch.randn(40, 24).t()
    weight.requires_grad_()
    expected = a @ weight
    grad = torch.randn_like(expected)
    got = product(a, weight)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(torch.autograd.grad(got, (a, weight), grad), torch.autograd.grad(expected, (a, weight), grad)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_tap_selector_by_hand():
    # 1x1 input, kernel 4, stride 2, padding 1: output 2x2 and output pixel (r, c) is tap (r+1, c+1).
    conv = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)
    taps = tap_selector((1, 1), (2, 2), conv, torch.device("cpu"))
    assert taps.shape == (1, 4, 16)
    assert taps[0].argmax(dim=1).tolist() == [1 * 4 + 1, 1 * 4 + 2, 2 * 4 + 1, 2 * 4 + 2]
    assert taps.sum().item() == 4


def test_conv_tap_selector_by_hand():
    # 3x3 kernel, stride 2, padding 1, 4x4 input → 2x2 output: output (0, 0) reads input rows and
    # columns -1..1 (row and column -1 are padding), so input pixel (r, c) is tap (r+1, c+1).
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    taps = tap_selector((2, 2), (4, 4), conv, torch.device("cpu"))
    assert taps.shape == (4, 16, 9)
    first = taps[0]
    assert {(p, k) for p, k in first.nonzero().tolist()} == {(r * 4 + c, (r + 1) * 3 + c + 1)
                                                          for r in range(2) for c in range(2)}
    assert taps.sum().item() == 4 + 6 + 6 + 9  # corner, two edges, interior output pixel


def test_swap_shares_parameters_and_keeps_checkpoints():
    torch.manual_seed(0)
    model = build_model("vae", 1, "multidecoder")
    plain = build_model("vae", 1, "multidecoder")
    plain.load_state_dict(model.state_dict())
    before = {name: p for name, p in model.named_parameters()}
    use_cpu_convs(model)
    swaps = [m for m in model.modules() if isinstance(m, CPUConvTranspose2d)]
    assert len(swaps) == 8  # four per decoder, two decoders
    assert len([m for m in model.modules() if isinstance(m, CPUConv2d)]) == 4  # the encoder
    assert len([m for m in model.modules() if isinstance(m, CPULinear)]) == 4  # μ, log σ², two decoder inputs
    assert dict(model.named_parameters()) == before
    assert model.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(4, 1, 32, 32)
    mask = torch.rand(4, 1, 32, 32) < 0.1
    noise = torch.randn(4, 16)
    torch.testing.assert_close(model(x, mask, noise).x_hat_cond, plain(x, mask, noise).x_hat_cond,
                               rtol=1e-5, atol=1e-6)


def test_swap_leaves_layers_it_cannot_compute_alone():
    grouped = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2)
    padded = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, output_padding=1)
    dilated = nn.Conv2d(4, 4, 3, dilation=2)
    reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    model = use_cpu_convs(nn.Sequential(grouped, padded, dilated, reflect))
    assert [type(m) for m in model] == [nn.ConvTranspose2d, nn.ConvTranspose2d, nn.Conv2d, nn.Conv2d]


def test_keep_freed_memory_stops_page_faults_between_training_steps():
    # A fresh process: the setting is process-wide. Minor page faults of each float32 training
    # step of the Gaussian VAE, before and after: 3,000-17,000 a step before on Linux, none after
    # once the heap has grown to the step's peak (a step now and then still grows it: the median;
    # on a busy machine it was once 96 of 4,105 before, so the bound is a share of those).
    # Float32, as bf16 runs about 100x slower on a CPU without AVX-512.
    script = textwrap.dedent("""
        import resource, statistics, torch
        from benchmark.memory import keep_freed_memory
        from benchmark.models import build_model
        torch.manual_seed(0)
        torch.set_num_threads(1)  # other threads have malloc arenas of their own
        model = build_model("vae", 1, "baseline")
        optimizer = torch.optim.AdamW(model.parameters())
        x = torch.rand(128, 1, 32, 32)
        def faults(steps):
            counts = []
            for _ in range(steps):
                start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                loss = sum(model(x).terms.values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
            return statistics.median(counts)
        faults(3)
        before = faults(7)
        assert keep_freed_memory()
        faults(3)
        print(before, faults(7))
    """)
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert before > 200 and after < before / 20, (before, after)
