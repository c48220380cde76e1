"""Folds trained together as one vectorised ensemble give the same results as alone."""

import pytest
import torch

from benchmark.balancing import BalanceConfig
from benchmark.config import Configuration, MethodConfig, TrainConfig
from benchmark.cv import fold_indices
from benchmark.data import load_dataset
from benchmark.ensemble import can_stack, train_folds_together
from benchmark.train import DivergedError, native_bf16, new_model, train_fold


@pytest.fixture(scope="module")
def images():
    return load_dataset("mnist5k", limit=150, seed=0).train  # 120 images: five equal folds


@pytest.mark.parametrize("configuration, rtol", [
    # SoftAdapt re-weighting every 2 of the 6 steps: each fold's balancer follows its own losses in the ensemble too.
    (Configuration("vq-vae", 1, MethodConfig("multidecoder", "uniform",
                                             balance=BalanceConfig(softadapt=True, update_every=2, window=4))), 1e-3),
    # The Gaussian VAE's small KL amplifies float reassociation over the steps (alone runs
    # channels_last kernels, the ensemble vmapped ones); its reconstruction still agrees to 1e-2.
    (Configuration("vae", 1, MethodConfig("single", "gaussian", exponent=30.0)), 1e-1),
], ids=lambda v: getattr(v, "id", ""))
def test_each_fold_matches_training_it_alone(images, configuration, rtol):
    splits = fold_indices(len(images), 5, seed=0)[:3]
    seeds = [11, 12, 13]
    settings = TrainConfig(epochs=2, batch_size=32, device="cpu")
    together = train_folds_together(configuration, images, splits, settings, seeds)
    for (train, val), seed, result in zip(splits, seeds, together):
        alone = train_fold(configuration, images[train], images[val], settings, seed)
        assert result.best_epoch == alone.best_epoch
        assert (result.n_train, result.n_val) == (alone.n_train, alone.n_val) == (len(train), len(val))
        for metric in ("recon", "recon_cond"):
            assert result.metrics[metric] == pytest.approx(alone.metrics[metric], rel=max(rtol / 10, 1e-3))
        assert result.metrics["latent"] == pytest.approx(alone.metrics["latent"], rel=rtol)
        assert result.state_dict.keys() == alone.state_dict.keys()
        for stacked, single in zip(result.history, alone.history):
            weights = [key for key in single if key.startswith("w_")]
            assert [stacked[key] for key in weights] == pytest.approx([single[key] for key in weights], rel=1e-3)
    assert together[0].metrics != together[1].metrics  # the folds really are different models
    if configuration.balance.softadapt:  # the weights did move, and differently per fold
        last = [[row[key] for key in row if key.startswith("w_")] for row in (r.history[-1] for r in together)]
        assert last[0] != pytest.approx([1 / 3] * 3, abs=1e-3) and last[0] != pytest.approx(last[1], rel=1e-6)


def test_a_diverging_fold_is_reported_and_the_others_train_on_as_without_it(images, monkeypatch):
    from benchmark import ensemble

    def poisoned(configuration, seed, *args):  # fold seed 12 starts from NaN weights: its loss is NaN
        model = new_model(configuration, seed, *args)
        if seed == 12:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return model

    configuration = Configuration("vae", 1, MethodConfig("multidecoder", "uniform"))
    splits = fold_indices(len(images), 5, seed=0)[:2]
    settings = TrainConfig(epochs=2, batch_size=32, device="cpu")
    [clean] = train_folds_together(configuration, images, splits[:1], settings, [11])
    monkeypatch.setattr(ensemble, "new_model", poisoned)
    epochs = []
    first, diverged = train_folds_together(configuration, images, splits, settings, [11, 12],
                                           on_epoch=lambda i, epoch, row: epochs.append((i, epoch)))
    assert isinstance(diverged, DivergedError) and "diverged at epoch 1" in str(diverged)
    assert epochs == [(0, 1), (0, 2)]
    assert len(first.history) == 2
    # as in test_each_fold_matches_training_it_alone: a NaN reaching it would be far off
    assert first.metrics["recon"] == pytest.approx(clean.metrics["recon"], rel=1e-3)
    assert first.metrics["recon_cond"] == pytest.approx(clean.metrics["recon_cond"], rel=1e-3)
    assert first.metrics["latent"] == pytest.approx(clean.metrics["latent"], rel=1e-1)


def test_folds_of_different_sizes_are_not_stacked(images):
    splits = fold_indices(len(images) - 2, 5, seed=0)
    assert not can_stack(splits)
    with pytest.raises(ValueError, match="cannot be stacked"):
        train_folds_together(Configuration("vae", 1), images, splits, TrainConfig(epochs=1, device="cpu"), [1] * 5)


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="no CPU bf16 kernels")
def test_bf16_folds_are_not_stacked_on_a_cpu(images):
    # CPU autocast casts conv2d, but not the convolution op that vmap turns it into: stacked folds
    # would train in float32, unlike alone (CUDA autocast casts both).
    conv = torch.nn.Conv2d(1, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(images[:2]).dtype == torch.bfloat16
        assert torch.func.vmap(conv)(images[:4].view(2, 2, *images.shape[1:])).dtype == torch.float32
    settings = TrainConfig(epochs=1, batch_size=32, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="not stacked on a CPU.*one by one, or in float32"):
        train_folds_together(Configuration("vae", 1), images, fold_indices(len(images), 5, seed=0)[:2], settings, [1, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_folds_stack_under_bf16_autocast_on_cuda(images):
    # Vmapped batch norm must take bf16 activations with float32 statistics (CUDA's needs a cast).
    configuration = Configuration("vae", 1, MethodConfig("multidecoder", "uniform"))
    splits = fold_indices(len(images), 5, seed=0)[:2]
    settings = TrainConfig(epochs=2, batch_size=32, device="cuda", precision="bf16")
    together = train_folds_together(configuration, images, splits, settings, [11, 12])
    for (train, val), seed, result in zip(splits, [11, 12], together):
        alone = train_fold(configuration, images[train], images[val], settings, seed)
        assert result.metrics["recon"] == pytest.approx(alone.metrics["recon"], rel=5e-2)
