"""Loss balancing: fixed weights and SoftAdapt from the softadapt package."""

import pytest
import torch

from benchmark.balancing import BalanceConfig, LossBalancer, load_softadapt

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


def test_balancer_feeds_its_history_to_softadapt_every_update():
    config = BalanceConfig(softadapt=True, softadapt_beta=0.1, update_every=5, window=5)
    balancer = LossBalancer(config, ("recon", "recon_cond", "latent"))
    assert balancer.weights == pytest.approx({"recon": 1 / 3, "recon_cond": 1 / 3, "latent": 1 / 3})
    for a, b, c in zip(LOSS_A, LOSS_B, LOSS_C):
        balancer.combine({"recon": a, "recon_cond": b, "latent": c})
    assert list(balancer.weights.values()) == pytest.approx([8.7978e-01, 1.2022e-01, 7.1234e-20], rel=2e-3)


def test_fixed_weights_combine_the_named_terms():
    balancer = LossBalancer(BalanceConfig(w1=2.0, w2=0.5, beta=3.0), ("recon", "recon_cond", "latent"))
    loss = balancer.combine({"recon": torch.tensor(1.0), "recon_cond": torch.tensor(4.0), "latent": torch.tensor(2.0)})
    assert loss.item() == pytest.approx(2.0 + 2.0 + 6.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="fancy"), "loss-weighted, normalized, original"),
    (dict(w1=-1.0), "w1"),
    (dict(beta=float("nan")), "beta"),
])
def test_bad_balance_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BalanceConfig(**kwargs)
