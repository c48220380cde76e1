"""Pixel samplers and m = [mask, x ⊙ mask]."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode

from benchmark.conditioning import PixelSampler, conditioning, exact_grid
from benchmark.config import MethodConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exact_grid_is_identical_across_calls_and_not_the_thesis_16_pixels():
    sampler = PixelSampler("exact", 32)
    a, b = sampler.sample(3, gen(0), "cpu"), sampler.sample(5, gen(1), "cpu")
    assert torch.equal(a[0], b[4]) and torch.equal(a[0], a[2])
    assert a.shape == (3, 1, 32, 32)
    assert int(a[0].sum()) == 64 == sampler.fixed_count  # stride 4 on 32x32: an 8x8 grid
    assert int(PixelSampler("exact", 64).sample(1, gen(), "cpu").sum()) == 256
    assert exact_grid(32, 4)[2, 2] and not exact_grid(32, 4)[0, 0]


@pytest.mark.parametrize("k", [0, 1, 50, 1024])
def test_uniform_gives_exactly_k_distinct_locations(k):
    masks = PixelSampler("uniform", 32, count=k).sample(64, gen(), "cpu")
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) == k).all()


@pytest.mark.parametrize("k", [1, 50])
def test_uniform_observes_every_pixel_equally_often(k):
    sampler, g = PixelSampler("uniform", 32, count=k), gen()
    hits = sum(sampler.sample(4096 // k, g, "cpu").sum(0).flatten() for _ in range(10))  # 40 per pixel expected
    assert stats.chisquare(hits.numpy()).pvalue > 1e-3  # uniform over one half of the image: p < 1e-300


def test_uniform_is_new_at_every_call():
    sampler = PixelSampler("uniform", 32, count=20)
    g = gen()
    assert not torch.equal(sampler.sample(4, g, "cpu"), sampler.sample(4, g, "cpu"))


def test_multidecoder_uniform_defaults_to_the_exact_grid_count():
    assert PixelSampler("uniform", 32).fixed_count == PixelSampler("exact", 32).fixed_count == 64


def test_a_multidecoder_may_sample_gaussian_locations_at_its_constant_count():
    # Outside the thesis grid, but meaningful: k draws from the centred Gaussian, duplicates merged.
    sampler = MethodConfig("multidecoder", "gaussian").sampler(32)
    assert sampler.fixed_count == 64 and sampler.exponent is None
    per_image = sampler.sample(64, gen(), "cpu").flatten(1).sum(1)
    assert (per_image <= 64).all() and per_image.float().mean() > 48


def test_a_multidecoder_refuses_a_constant_count_of_0_which_a_sampler_still_takes():
    # k = 0 leaves the second decoder nothing to condition on; the exact grid is never empty, so no
    # Multidecoder of the thesis grid observes 0 pixels
    with pytest.raises(ValueError, match="count k = 0 gives the Multidecoder's second decoder no pixel"):
        MethodConfig("multidecoder", "uniform", count=0)
    assert MethodConfig("multidecoder", "uniform", count=1).sampler(32).fixed_count == 1
    assert int(exact_grid(32, 32).sum()) == 1  # the widest stride still observes a pixel
    # a figure's k = 0 column (the conditioned decoder given no pixel) still samples empty masks
    assert PixelSampler("uniform", 32, count=0).sample(2, gen(), "cpu").sum() == 0


def test_gaussian_is_centre_weighted_with_duplicates():
    sampler = PixelSampler("gaussian", 32, count=200)
    masks = sampler.sample(256, gen(), "cpu")
    per_image = masks.flatten(1).sum(1)
    assert (per_image <= 200).all() and (per_image < 200).any()  # with replacement: duplicates merge
    centre = masks[..., 12:20, 12:20].mean()
    corner = masks[..., :8, :8].mean()
    assert centre > 10 * corner


def test_gaussian_locations_are_normal_around_the_centre_with_std_a_sixth_of_the_side():
    # One draw per image: its row and column are round(N((side - 1)/2, side/6)), clamped to the image
    side = 32
    masks = PixelSampler("gaussian", side, count=1).sample(40_000, gen(), "cpu")
    rows, cols = masks[:, 0].nonzero()[:, 1:].T
    edges = np.arange(side + 1) - 0.5
    normal = stats.norm(loc=(side - 1) / 2, scale=side / 6)
    expected = np.diff(normal.cdf(edges))
    expected[0] += normal.cdf(edges[0])  # the clamped tails
    expected[-1] += normal.sf(edges[-1])
    for axis in (rows, cols):
        observed = np.bincount(axis.numpy(), minlength=side)
        assert stats.chisquare(observed, expected * len(axis)).pvalue > 1e-3  # side/8 or side/5: p < 1e-50


@pytest.mark.parametrize("a", [2.0, 20.0, 40.0, 60.0])
def test_power_law_mean_count_matches_d_over_a_plus_1_floored(a):
    sampler = PixelSampler("uniform", 32, exponent=a)
    counts = sampler.sample_counts(200_000, gen(), torch.device("cpu")).double()
    # floor() lowers the mean of (1 - X)·D by about one half; mean_count is the exact mean
    assert counts.mean().item() == pytest.approx(1024 / (a + 1) - 0.5, rel=0.03)
    assert counts.mean().item() == pytest.approx(sampler.mean_count, rel=0.01)
    assert 1024 / (a + 1) - 0.5 <= sampler.mean_count < 1024 / (a + 1)
    assert counts.min() >= 0 and counts.max() <= 1024


@pytest.mark.parametrize("a", [2.0, 40.0])
def test_power_law_counts_follow_the_law_of_floor_of_1_minus_x_times_d(a):
    # X ~ Power(a): P(X <= x) = x^a, so P(k >= j) = (1 - j/D)^a and P(k = j) is a difference of two
    d, n = 1024, 100_000
    counts = PixelSampler("uniform", 32, exponent=a).sample_counts(n, gen(), torch.device("cpu")).numpy()
    j = np.arange(d + 1)
    expected = n * ((1 - j / d) ** a - np.clip(1 - (j + 1) / d, 0, None) ** a)
    observed = np.bincount(counts, minlength=d + 1)
    enough = int(np.argmax(expected < 5))  # P(k = j) falls with j: pool the tail from the first sparse count
    observed = np.append(observed[:enough], observed[enough:].sum())
    expected = np.append(expected[:enough], expected[enough:].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3


@pytest.mark.parametrize("sampling", ["uniform", "gaussian"])
def test_power_law_produces_empty_masks_and_masks_match_counts(sampling):
    sampler = PixelSampler(sampling, 32, exponent=40.0)
    counts = sampler.sample_counts(2000, gen(), torch.device("cpu"))  # the draw `sample` makes first
    per_image = sampler.sample(2000, gen(), "cpu").flatten(1).sum(1).long()
    assert (per_image == 0).any() and (per_image > 0).any()
    if sampling == "uniform":  # distinct pixels: exactly k
        assert torch.equal(per_image, counts)
    else:  # drawn with replacement: at most k, and k wherever k is 0 or 1
        assert (per_image <= counts).all() and torch.equal(per_image[counts <= 1], counts[counts <= 1])
        assert per_image.sum() > 0.9 * counts.sum()


def test_the_exponent_given_is_the_exponent_used():
    # The thesis's code never passed the exponent on (every run used 40).
    means = {}
    for a in (20.0, 60.0):
        sampler = MethodConfig("single", "gaussian", exponent=a).sampler(32)
        assert sampler.exponent == a
        means[a] = sampler.sample_counts(100_000, gen(), torch.device("cpu")).double().mean().item()
    assert means[20.0] / means[60.0] == pytest.approx((60 + 1) / (20 + 1), rel=0.05)


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampling", ["exact", "uniform", "gaussian"])
def test_masks_are_made_without_a_per_sample_loop(sampling):
    sampler = PixelSampler(sampling, 32, exponent=None if sampling == "exact" else 30.0)
    counts = []
    for batch in (2, 256):
        with CountOps() as ops:
            sampler.sample(batch, gen(), "cpu")
        counts.append(ops.calls)
    assert counts[0] == counts[1]  # the number of tensor ops does not grow with the batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: on a CPU every tensor is on the input's device")
def test_masks_are_on_the_input_device():
    x = torch.rand(3, 1, 32, 32, device="cuda")
    for sampling in ("exact", "uniform", "gaussian"):
        sampler = PixelSampler(sampling, 32, exponent=None if sampling == "exact" else 30.0)
        mask = sampler.sample(3, torch.Generator(x.device).manual_seed(0), x.device)
        assert mask.device == x.device


def test_conditioning_concatenates_mask_and_masked_image():
    x = torch.rand(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 1, 2] = 1
    m = conditioning(x, mask)
    assert m.shape == (2, 4, 8, 8)
    assert torch.equal(m[:, :1], mask)
    assert torch.equal(m[:, 1:, 1, 2], x[:, :, 1, 2])
    assert m[:, 1:].abs().sum().item() == pytest.approx(x[:, :, 1, 2].abs().sum().item())


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampling="random", image_size=32), "exact, uniform, gaussian"),
    (dict(sampling="uniform", image_size=32, exponent=-1.0), "exponent"),
    (dict(sampling="uniform", image_size=32, exponent=0.0), "exponent"),
    (dict(sampling="uniform", image_size=32, count=1025), "at most the image's D = H·W = 1024 pixels, got 1025"),
    (dict(sampling="uniform", image_size=32, count=-1), "an integer >= 0"),
    (dict(sampling="exact", image_size=32, count=10), "exact grid observes a fixed set of pixels"),
    (dict(sampling="uniform", image_size=32, count=10, exponent=40.0), "a count or an exponent, not both"),
])
def test_bad_sampler_input_raises_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PixelSampler(**kwargs)
