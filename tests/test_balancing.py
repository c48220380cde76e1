"""Loss balancing: fixed weights and SoftAdapt from the softadapt package."""

import os
import subprocess
import sys
import types

import pytest
import torch

from benchmark.balancing import BalanceConfig, LossBalancer, idle_softadapt_note, load_softadapt

# The package's documented example (its README, "Example 1").
LOSS_A = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
LOSS_B = torch.tensor([150.0, 100.0, 50.0, 10.0, 0.1])
LOSS_C = torch.tensor([1500.0, 1000.0, 500.0, 100.0, 1.0])


@pytest.mark.parametrize("variant, documented", [
    ("loss-weighted", [8.7978e-01, 1.2022e-01, 7.1234e-20]),
    ("normalized", [0.3221, 0.3251, 0.3528]),
    ("original", [9.9343e-01, 6.5666e-03, 3.8908e-22]),
])
def test_softadapt_weights_equal_the_package_documented_example(variant, documented):
    algorithm = load_softadapt(variant)(beta=0.1)
    weights = torch.as_tensor(algorithm.get_component_weights(LOSS_A, LOSS_B, LOSS_C, verbose=False))
    assert weights.tolist() == pytest.approx(documented, rel=2e-3, abs=1e-12)


def test_softadapt_trains_on_keras_torch_backend_whatever_keras_backend_the_user_set(monkeypatch):
    # a new process: Keras picks its backend once a process, at its import
    code = "import os; from benchmark.balancing import load_softadapt; load_softadapt('loss-weighted'); " \
           "import keras; print(keras.backend.backend(), os.environ['KERAS_BACKEND'])"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout.strip()) == (0, "torch tensorflow"), done.stderr  # the user's, put back
    # a process (a notebook) that imported Keras itself, on another backend, gets one clear error
    keras = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "jax"))
    monkeypatch.setitem(sys.modules, "keras", keras)
    with pytest.raises(ValueError, match=r"^SoftAdapt runs on Keras's torch backend, but this process imported "
                                         r"Keras on 'jax' first: set KERAS_BACKEND=torch before importing it$"):
        load_softadapt("loss-weighted")


def test_balancer_feeds_its_history_to_softadapt_every_update():
    config = BalanceConfig(softadapt=True, softadapt_beta=0.1, update_every=5, window=5)
    balancer = LossBalancer(config, ("recon", "recon_cond", "latent"))
    assert balancer.weights == pytest.approx({"recon": 1 / 3, "recon_cond": 1 / 3, "latent": 1 / 3})
    for a, b, c in zip(LOSS_A, LOSS_B, LOSS_C):
        balancer.combine({"recon": a, "recon_cond": b, "latent": c})
    assert list(balancer.weights.values()) == pytest.approx([8.7978e-01, 1.2022e-01, 7.1234e-20], rel=2e-3)


@pytest.mark.parametrize("update_every", [100, 1])
def test_softadapt_with_the_thesis_window_updates_past_its_first_hundred_steps(update_every):
    # The thesis's settings: a window of 100 values, an update every 100 steps (and, with
    # update_every=1, updates from a history still shorter than the finite-difference stencil).
    config = BalanceConfig(softadapt=True, softadapt_beta=5e-3, update_every=update_every)
    balancer = LossBalancer(config, ("recon", "recon_cond", "latent"))
    generator = torch.Generator().manual_seed(0)
    for step in range(250):
        noise = 0.01 * torch.rand(3, generator=generator)
        balancer.combine({"recon": 1.0 / (1 + step) + noise[0], "recon_cond": 1.0 - step / 1000 + noise[1],
                          "latent": 0.1 + step / 500 + noise[2]})
    weights = balancer.weights
    assert sum(weights.values()) == pytest.approx(1.0)
    # the loss-weighted variant at a small β weights the terms by their mean over the window
    assert weights["recon_cond"] > weights["latent"] > 0.25 and weights["recon"] < 0.1


def test_softadapt_reweights_only_every_update_every_steps():
    # The thesis recomputed the weights every 100 steps: uniform before the 100th, then fixed until the 200th.
    balancer = LossBalancer(BalanceConfig(softadapt=True, softadapt_beta=5e-3), ("recon", "recon_cond", "latent"))
    assert balancer.config.update_every == 100
    generator = torch.Generator().manual_seed(0)
    weights = []  # after each of 150 steps
    for step in range(150):
        noise = 0.01 * torch.rand(3, generator=generator)
        balancer.combine({"recon": 1.0 / (1 + step) + noise[0], "recon_cond": 1.0 - step / 1000 + noise[1],
                          "latent": 0.1 + step / 500 + noise[2]})
        weights.append(list(balancer.weights.values()))
    uniform = [1 / 3] * 3
    assert all(w == uniform for w in weights[:99])  # steps 1 to 99
    assert weights[99] != uniform and weights[99] != pytest.approx(uniform, abs=0.05)  # step 100 re-weights
    assert all(w == weights[99] for w in weights[100:])  # steps 101 to 150 keep them
    # ... and the loss of a step after the update is combined at the new weights
    terms = {"recon": torch.tensor(1.0), "recon_cond": torch.tensor(2.0), "latent": torch.tensor(4.0)}
    assert balancer.combine(terms).item() == pytest.approx(weights[99][0] + 2 * weights[99][1] + 4 * weights[99][2])


def test_a_fold_too_short_for_a_softadapt_update_is_noted():
    softadapt, fixed = BalanceConfig(softadapt=True), BalanceConfig()
    # the quick suite: 3 epochs of 1,000 training images at batch 128 = 24 steps < 100
    note = idle_softadapt_note([fixed, softadapt], train_images=1000, batch_size=128, epochs=3)
    assert note is not None and "every 100 steps" in note and "only 24 steps" in note
    assert idle_softadapt_note([fixed], train_images=1000, batch_size=128, epochs=3) is None
    assert idle_softadapt_note([softadapt], train_images=1000, batch_size=128, epochs=13) is None  # 104 steps
    # 100 steps: the update after the last one weighs no step
    assert "only 100 steps" in idle_softadapt_note([softadapt], train_images=1000, batch_size=100, epochs=10)
    every = BalanceConfig(softadapt=True, update_every=1)  # the first update needs two steps' losses
    assert "every 1 step, but a fold trains only 2 steps" in idle_softadapt_note([every], train_images=2, batch_size=1,
                                                                                 epochs=1)
    assert "only 1 step here (1 epoch of 40 images" in idle_softadapt_note([softadapt], train_images=40, batch_size=128,
                                                                           epochs=1)
    assert idle_softadapt_note([every], train_images=3, batch_size=1, epochs=1) is None


def test_the_weights_applied_are_those_the_last_step_trained_with():
    # A fold's history recorded the weights just computed after its last step, which no step used.
    balancer = LossBalancer(BalanceConfig(softadapt=True, softadapt_beta=5e-3, update_every=2, window=4),
                            ("recon", "recon_cond", "latent"))
    uniform = {"recon": 1 / 3, "recon_cond": 1 / 3, "latent": 1 / 3}
    for step in range(2):
        balancer.combine({"recon": torch.tensor(1.0 + step), "recon_cond": torch.tensor(0.5),
                          "latent": torch.tensor(0.1)})
    assert balancer.applied == uniform and balancer.weights != pytest.approx(uniform, abs=0.05)
    balancer.combine({"recon": torch.tensor(3.0), "recon_cond": torch.tensor(0.5), "latent": torch.tensor(0.1)})
    assert balancer.applied == balancer.weights != uniform


def test_fixed_weights_combine_the_named_terms():
    # β is inside the latent term, which the model computes at it (test_models: β·KL, codebook + β·commitment)
    balancer = LossBalancer(BalanceConfig(w1=2.0, w2=0.5, beta=3.0), ("recon", "recon_cond", "latent"))
    loss = balancer.combine({"recon": torch.tensor(1.0), "recon_cond": torch.tensor(4.0), "latent": torch.tensor(2.0)})
    assert loss.item() == pytest.approx(2.0 + 2.0 + 2.0)


def test_softadapt_without_its_beta_says_where_to_take_it():
    with pytest.raises(ValueError, match="SoftAdapt's β is unset"):
        LossBalancer(BalanceConfig(softadapt=True), ("recon", "latent"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="fancy"), "loss-weighted, normalized, original"),
    (dict(w1=-1.0), "^w1 must be a finite number >= 0, got -1.0$"),
    (dict(beta=float("nan")), "^beta must be a finite number >= 0, got nan$"),
])
def test_bad_balance_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BalanceConfig(**kwargs)


def test_a_weight_of_zero_is_allowed_as_documented():  # a term switched off, e.g. β = 0: a plain autoencoder
    assert BalanceConfig(w1=0.0, w2=0.0, beta=0.0, softadapt_beta=None).fixed_weights(("recon", "recon_cond")) == {
        "recon": 0.0, "recon_cond": 0.0}
