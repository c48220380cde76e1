"""One-fold training on real MNIST digits: it learns, it is reproducible, validation is in eval mode."""

import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

import benchmark.train
from benchmark.balancing import BalanceConfig
from benchmark.conditioning import PixelSampler
from benchmark.config import Configuration, MethodConfig, TrainConfig
from benchmark.data import load_dataset
from benchmark.models import MultitaskVAE, build_model, eval_mode
from benchmark.suites import thesis_grid
from benchmark.train import agreed_precision, device_name, evaluate, native_bf16, resolve_device, train_fold


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("mnist5k", limit=1000, seed=0)
    return data.train[:800], data.train[800:]


def configurations():
    for family in ("vae", "vq-vae"):
        yield Configuration(family, 1, MethodConfig("baseline"))
        yield Configuration(family, 1, MethodConfig("multidecoder", "exact"))
        yield Configuration(family, 1, MethodConfig("multidecoder", "uniform", balance=BalanceConfig(softadapt=True)))
        yield Configuration(family, 1, MethodConfig("single", "uniform", exponent=20.0))
        yield Configuration(family, 1, MethodConfig("single", "gaussian", exponent=40.0))


@pytest.mark.parametrize("configuration", list(configurations()), ids=lambda c: c.id)
def test_short_training_lowers_validation_reconstruction(digits, configuration):
    train, val = digits
    torch.manual_seed(123)
    untrained = build_model(configuration.family, 1, configuration.method.method)
    before = evaluate(untrained, val, configuration.method.sampler(32), {"recon": 1.0, "latent": 1.0})
    result = train_fold(configuration, train, val, TrainConfig(epochs=2, batch_size=32, device="cpu"), seed=1)  # 50 steps
    last = result.history[-1]  # the best epoch is chosen on the total, which early VQ growth can favour
    assert last["recon"] < 0.8 * before["recon"]
    assert len(result.history) == 2
    assert result.best_epoch == min(result.history, key=lambda row: row["total"])["epoch"]
    assert result.metrics == {k: v for k, v in result.history[result.best_epoch - 1].items()
                              if k in result.metrics}
    if configuration.method.method == "baseline":
        assert math.isnan(result.metrics["recon_cond"])
    else:
        assert last["recon_cond"] < 0.8 * before["recon_cond"]  # the encoder alone lowers it about 1%


def test_same_seed_gives_the_same_fold_on_cpu(digits):
    train, val = digits
    configuration = Configuration("vae", 1, MethodConfig("single", "gaussian", exponent=30.0))
    settings = TrainConfig(epochs=1, batch_size=64, device="cpu")
    torch.manual_seed(1)
    a = train_fold(configuration, train, val, settings, seed=7)
    after = torch.rand(3)  # the caller's random stream goes on as if no fold had trained
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(3))
    b = train_fold(configuration, train, val, settings, seed=7)
    c = train_fold(configuration, train, val, settings, seed=8)
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics


def test_bf16_is_autocast_on_cuda_by_default_and_on_the_cpu_when_asked(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not TrainConfig(device="cpu").autocast(cpu) and TrainConfig(precision="bf16").autocast(cpu)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    assert TrainConfig().autocast(cuda) and not TrainConfig(precision="fp32").autocast(cuda)
    # a GPU older than Ampere emulates bf16 (slower than float32): auto trains it in float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # a V100
    assert not TrainConfig().autocast(cuda) and TrainConfig(precision="bf16").autocast(cuda)


def test_auto_follows_the_precision_a_study_was_begun_in_where_the_device_can(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    # An H100 joining a study a V100 began under auto goes on in fp32, and says so.
    precision, note = agreed_precision(TrainConfig(), cuda, "fp32", "suite-full")
    assert precision == "fp32" and note.startswith("note: study 'suite-full' trains in fp32, as its first run did")
    assert "not in bf16 (precision auto on this device)" in note
    assert agreed_precision(TrainConfig(), cuda, None, "s") == ("bf16", None)  # a new study: the device's own
    assert agreed_precision(TrainConfig(), cuda, "bf16", "s") == ("bf16", None)
    # A precision asked for is kept: the study then refuses it if it trains in another.
    assert agreed_precision(TrainConfig(precision="bf16"), cuda, "fp32", "s") == ("bf16", None)
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: True)
    assert agreed_precision(TrainConfig(), cpu, "bf16", "s")[0] == "bf16"
    # A CPU without bf16 kernels would train a hundred times slower: refused, saying why.
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: False)
    with pytest.raises(ValueError, match=r"study 's' trains in bf16, and this CPU \(.*\) has no bfloat16 kernels"):
        agreed_precision(TrainConfig(), cpu, "bf16", "s")


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU has no bf16 kernels (AVX-512)")
def test_bf16_precision_trains_under_autocast_on_cpu_and_learns_as_float32_does(digits):
    train, val = digits
    configuration = Configuration("vq-vae", 1, MethodConfig("multidecoder", "uniform",))
    runs = {precision: train_fold(configuration, train, val, TrainConfig(epochs=2, batch_size=64, device="cpu",
                                                                         precision=precision), seed=3)
            for precision in ("fp32", "bf16")}
    assert runs["bf16"].metrics != runs["fp32"].metrics  # bf16 really ran
    # same seed, same data: bf16 rounding moves the result a little, not the learning. The last epoch's, as
    # the best is the first here, which an optimizer that stopped stepping after it would match as well.
    first, last = runs["bf16"].history[0]["recon"], runs["bf16"].history[-1]["recon"]
    assert last == pytest.approx(runs["fp32"].history[-1]["recon"], rel=0.05)
    assert last < 0.9 * first
    assert all(t.dtype == torch.float32 for t in runs["bf16"].state_dict.values() if t.is_floating_point())


def test_bf16_on_a_cpu_without_bf16_kernels_is_refused(digits, monkeypatch):
    # PyTorch's fallback loops train about 100x slower than float32 there (seen on an AVX2 EPYC).
    monkeypatch.setattr("benchmark.train.native_bf16", lambda device: False)
    train, val = digits
    with pytest.raises(ValueError, match=r"precision bf16 asked for, but this CPU \(.*\) has no bfloat16 kernels"):
        train_fold(Configuration("vae", 1), train, val, TrainConfig(epochs=1, device="cpu", precision="bf16"), seed=0)
    assert train_fold(Configuration("vae", 1), train[:64], val, TrainConfig(epochs=1, batch_size=64, device="cpu",
                                                                            precision="fp32"), seed=0).metrics


def test_a_configurations_beta_default_is_its_familys():
    # a bare MethodConfig() once gave a VQ-VAE the Gaussian VAE's β = 1 and SoftAdapt β = 1e-4
    vq, vae = (Configuration(family, 1, MethodConfig("baseline", balance=BalanceConfig(softadapt=True)))
               for family in ("vq-vae", "vae"))
    assert (vq.balance.beta, vae.balance.beta) == (0.25, 1.0)
    assert (vq.balance.softadapt_beta, vae.balance.softadapt_beta) == (5e-3, 1e-4)
    explicit = Configuration("vq-vae", 1, MethodConfig(balance=BalanceConfig(beta=0.25)))
    assert (explicit.id, explicit.balance) == (Configuration("vq-vae", 1).id, Configuration("vq-vae", 1).balance)
    # nor does a Gaussian VAE's method reused for a VQ-VAE carry its β along
    moved = [replace(c, family="vq-vae") for c in thesis_grid("vae", 1)]
    assert {c.balance.beta for c in moved} == {0.25} and {c.id for c in moved} == {c.id for c in thesis_grid("vq-vae", 1)}
    vq, vae = Configuration("vq-vae", 1), Configuration("vae", 1)
    assert (vq.id, vae.id) == ("vq-vae/1/baseline", "vae/1/baseline")
    weighted = Configuration("vq-vae", 1, MethodConfig("baseline", balance=BalanceConfig(beta=1.0)))
    assert weighted.id == "vq-vae/1/baseline/w=1,1,1"
    # under SoftAdapt β is still inside the latent term that it weighs: another configuration
    balanced = Configuration("vq-vae", 1, MethodConfig("multidecoder", "uniform",
                                                       balance=BalanceConfig(softadapt=True, beta=1.0)))
    assert balanced.id == "vq-vae/1/multidecoder/uniform/softadapt/beta=1"


def test_validation_reports_the_vq_loss_at_one_beta_and_totals_at_the_trained_one(digits):
    val = digits[1][:64]
    metrics = {}
    for beta in (0.25, 2.0):
        torch.manual_seed(0)
        metrics[beta] = evaluate(build_model("vq-vae", 1, "baseline", beta=beta), val, None, {"recon": 1.0, "latent": 1.0})
    assert metrics[2.0]["latent"] == metrics[0.25]["latent"]  # codebook + 0.25·commitment = 1.25·distance
    distance = metrics[0.25]["latent"] / 1.25
    assert metrics[2.0]["total"] - metrics[0.25]["total"] == pytest.approx(1.75 * distance, rel=1e-4)
    # the latent term as trained: codebook + β·commitment, so the total's terms add up
    assert metrics[0.25]["latent_train"] == pytest.approx(metrics[0.25]["latent"], rel=1e-6)
    assert metrics[2.0]["latent_train"] == pytest.approx(3 * distance, rel=1e-4)
    for m in metrics.values():
        assert m["total"] == pytest.approx(m["recon_train"] + m["latent_train"], rel=1e-6)
    torch.manual_seed(0)
    vae = evaluate(build_model("vae", 1, "baseline", beta=4.0), val, None, {"recon": 1.0, "latent": 1.0})
    assert vae["latent_train"] == pytest.approx(4 * vae["latent"], rel=1e-6)  # β·KL
    # the Single decoder trains on its conditioned output: W1 weighs recon_cond_train there (README)
    torch.manual_seed(0)
    single = evaluate(build_model("vae", 1, "single", beta=1.0), val, PixelSampler("gaussian", 32, exponent=40),
                      {"recon": 2.0, "latent": 1.0})
    assert single["total"] == pytest.approx(2 * single["recon_cond_train"] + single["latent_train"], rel=1e-6)


def test_evaluation_puts_every_module_in_eval_mode_and_restores_training(digits):
    # The thesis's code put the conditioned decoder back in training mode during validation.
    _, val = digits
    model = build_model("vq-vae", 1, "multidecoder").train()
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod.training)) for m in model.modules()]
    evaluate(model, val[:64], MethodConfig("multidecoder", "exact").sampler(32), {"recon": 1.0, "latent": 1.0})
    for hook in hooks:
        hook.remove()
    assert seen and not any(seen)
    assert model.decoder_cond in list(model.modules())
    assert all(m.training for m in model.modules())  # back to training mode afterwards


def test_a_fold_trains_every_module_in_training_mode_and_validates_in_eval_mode(digits, monkeypatch):
    # The thesis's code left its VQ decoder in eval mode after the first step, and put the
    # conditioned decoder back in training mode during validation.
    train, val = digits
    decode, modes = MultitaskVAE.decode, []

    def recording(model, *args, **kwargs):
        modes.append(tuple(m.training for m in model.modules()))
        return decode(model, *args, **kwargs)

    monkeypatch.setattr(MultitaskVAE, "decode", recording)
    result = train_fold(Configuration("vq-vae", 1, MethodConfig("multidecoder", "exact")), train[:64], val[:32],
                        TrainConfig(epochs=2, batch_size=32, device="cpu"), seed=0)
    training = [all(m) for m in modes]
    validating = [not any(m) for m in modes]
    assert all(t or v for t, v in zip(training, validating))  # never some modules in one mode, some in the other
    # each of 2 epochs: 2 steps and 1 validation batch, each decoding twice (decoder 1, then decoder 2)
    assert (sum(training), sum(validating)) == (8, 4)
    assert training == [True] * 4 + [False] * 2 + [True] * 4 + [False] * 2
    assert (result.n_train, result.n_val) == (64, 32)


def test_a_fold_keeps_the_epoch_with_the_lowest_validation_total_and_its_weights(digits, monkeypatch):
    # Validation totals made known (1.0, 0.5, 0.9): the fold keeps epoch 2, not the last nor the first.
    train, val = digits
    validate, totals, weights = benchmark.train._validation_metrics, iter([1.0, 0.5, 0.9]), []

    def scripted(model, *args):
        metrics = validate(model, *args)
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})  # as the epoch ends
        return {**metrics, "total": next(totals)}

    monkeypatch.setattr(benchmark.train, "_validation_metrics", scripted)
    result = train_fold(Configuration("vae", 1), train[:64], val[:32], TrainConfig(epochs=3, batch_size=32,
                                                                                  device="cpu"), seed=0)
    assert [row["total"] for row in result.history] == [1.0, 0.5, 0.9]
    assert result.best_epoch == 2 and result.metrics["total"] == 0.5
    assert result.metrics == {k: v for k, v in result.history[1].items() if k in result.metrics}
    assert len(weights) == 3 and result.state_dict.keys() == weights[1].keys()
    assert all(torch.equal(result.state_dict[k], weights[1][k]) for k in weights[1])
    assert not all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # epoch 3 did move them


def test_validation_draws_the_same_masks_every_epoch(digits, monkeypatch):
    # The validation seed does not depend on the epoch: epochs are compared on the same masks.
    train, val = digits
    sample, validate, masks, validating = PixelSampler.sample, benchmark.train._validation_metrics, [], []

    def recording(sampler, *args, **kwargs):
        mask = sample(sampler, *args, **kwargs)
        if validating:
            masks.append(mask.clone())
        return mask

    def flagged(*args):
        validating.append(True)
        try:
            return validate(*args)
        finally:
            validating.pop()

    monkeypatch.setattr(PixelSampler, "sample", recording)
    monkeypatch.setattr(benchmark.train, "_validation_metrics", flagged)
    train_fold(Configuration("vae", 1, MethodConfig("multidecoder", "uniform")), train[:64], val[:32],
               TrainConfig(epochs=2, batch_size=32, device="cpu"), seed=0)
    assert len(masks) == 2 and masks[0].shape[0] == 32
    assert 0 < masks[0].sum() < masks[0].numel()  # uniform: new locations at every draw of its generator
    assert torch.equal(masks[0], masks[1])


@pytest.mark.parametrize("exponent", [20.0, 60.0])
def test_a_single_decoder_trains_under_the_exponent_it_is_given(digits, exponent, monkeypatch):
    # The thesis's code never passed the exponent to the count sampler: every run used 40.
    train, val = digits
    sample_counts, counts = PixelSampler.sample_counts, []

    def recording(sampler, *args, **kwargs):
        drawn = sample_counts(sampler, *args, **kwargs)
        counts.append(drawn)
        return drawn

    monkeypatch.setattr(PixelSampler, "sample_counts", recording)
    train_fold(Configuration("vae", 1, MethodConfig("single", "uniform", exponent=exponent)), train[:512], val[:32],
               TrainConfig(epochs=1, batch_size=64, device="cpu"), seed=0)
    drawn = torch.cat(counts).double()
    assert len(drawn) == 512 + 32  # the training masks and the validation ones
    # E[k] = D/(a+1): 48.8 pixels of 1,024 at a = 20, 16.8 at 60 (40 would give 25.0)
    assert drawn.mean().item() == pytest.approx(1024 / (exponent + 1), rel=0.15)


def test_evaluation_builds_no_autograd_graph(digits):
    _, val = digits
    model = build_model("vae", 1, "baseline")
    tracked = []
    hooks = [m.register_forward_hook(lambda mod, i, o: tracked.append(o.requires_grad))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    evaluate(model, val[:64], None, {"recon": 1.0, "latent": 1.0})
    for hook in hooks:
        hook.remove()
    assert tracked and not any(tracked)


def test_validation_metrics_are_deterministic_and_follow_the_seed(digits):
    _, val = digits
    model = build_model("vae", 1, "single")
    sampler = MethodConfig("single", "uniform", exponent=20.0).sampler(32)
    weights = {"recon": 1.0, "latent": 1.0}
    metrics = evaluate(model, val, sampler, weights, seed=3)
    assert metrics == evaluate(model, val, sampler, weights, seed=3)
    other = evaluate(model, val, sampler, weights, seed=4)  # other masks and other noise
    assert other["recon"] != metrics["recon"] and other["recon_cond"] != metrics["recon_cond"]


@pytest.mark.parametrize("method", ["multidecoder", "single"])
def test_validation_scores_each_decoder_on_its_own_output_under_the_seeded_masks(digits, method):
    val = digits[1][:64]
    torch.manual_seed(0)
    model = build_model("vq-vae", 1, method)  # no reparameterisation noise: z is the encoder's alone
    sampler = PixelSampler("uniform", 32, exponent=20.0)
    metrics = evaluate(model, val, sampler, {"recon": 1.0, "latent": 1.0}, seed=3)
    masks = sampler.sample(len(val), torch.Generator().manual_seed(3), "cpu")
    with torch.no_grad(), eval_mode(model):
        z = model.encode(val).z
        plain = ((model.decode(z) - val) ** 2).mean().item()
        conditioned = ((model.decode(z, val, masks, conditioned=True) - val) ** 2).mean().item()
    assert metrics["recon"] == pytest.approx(plain, rel=1e-5)
    assert metrics["recon_cond"] == pytest.approx(conditioned, rel=1e-5)
    assert abs(conditioned - plain) > 1e-4 * plain  # ten times the tolerance: swapping the two would be seen


def test_validation_averages_over_images_not_over_batches(digits):
    # A 1,000-image fold validates as batches of 512 and 488: the mean of their means weighs them alike.
    _, val = digits
    torch.manual_seed(0)
    model = build_model("vq-vae", 1, "baseline")  # no noise, no masks: the same per image in any batch
    weights = {"recon": 1.0, "latent": 1.0}
    whole, batched = evaluate(model, val[:100], None, weights), evaluate(model, val[:100], None, weights, batch_size=64)
    assert batched == pytest.approx(whole, rel=1e-5, nan_ok=True)


def test_an_epochs_training_total_is_the_mean_of_its_steps_losses(digits, monkeypatch):
    train, val = digits
    combine, losses = benchmark.train.LossBalancer.combine, []

    def recorded(self, terms):
        loss = combine(self, terms)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(benchmark.train.LossBalancer, "combine", recorded)
    result = train_fold(Configuration("vae", 1), train[:80], val[:32], TrainConfig(epochs=1, batch_size=32,
                                                                                 device="cpu"), seed=0)
    assert len(losses) == 3  # 32 + 32 + 16 images
    assert result.history[0]["train_total"] == pytest.approx(np.mean(losses), rel=1e-6)


def test_a_training_loss_that_is_not_finite_fails_the_fold_though_validation_is(digits):
    # Stacked folds zero a diverged fold's loss (its weights stay finite): its training loss tells.
    train, val = digits
    configuration = Configuration("vae", 1)
    model = build_model("vae", 1, "baseline")
    fold = benchmark.train.FoldRun(configuration, model, train[:64], val[:32], TrainConfig(device="cpu"), seed=0)
    with pytest.raises(benchmark.train.DivergedError) as diverged:
        fold.end_epoch(1, math.inf, model)
    said = re.fullmatch(r"loss diverged at epoch 1 \(train inf, validation ([\d.]+)(e[-+]\d+)?\)", str(diverged.value))
    assert said and len(said.group(1).replace(".", "")) <= 4  # as the CSV and the report show it: not 3.5532952227e+26


def test_softadapt_folds_are_judged_on_the_fixed_objective_not_on_its_weights_of_the_moment(digits):
    # The best epoch is chosen on the total: at SoftAdapt's weights, each fold would be judged on another scale.
    train, val = digits
    configuration = Configuration("vae", 1, MethodConfig("multidecoder", "uniform",
                                                         balance=BalanceConfig(softadapt=True)))
    result = train_fold(configuration, train[:64], val[:32], TrainConfig(epochs=1, batch_size=32, device="cpu"),
                        seed=0)
    row = result.history[0]
    assert row["total"] == pytest.approx(row["recon_train"] + row["recon_cond_train"] + row["latent_train"], rel=1e-6)


def test_gaussian_validation_decodes_a_sampled_z_as_the_elbo_does(digits):
    """Validation measures the ELBO's reconstruction term, E_q[log p(x|z)], with seeded noise:
    a narrow posterior gives the decode of μ, a wide one reconstructs worse and depends on the seed."""
    x = digits[1][:128]
    torch.manual_seed(0)
    model = build_model("vae", 1, "baseline")
    weights = {"recon": 1.0, "latent": 1.0}
    with eval_mode(model), torch.no_grad():
        at_mean = model.reconstruction_loss(model.decode(model.encode(x).z), x).item() * model.recon_scale
    logvar_bias = model.latent_model.fc_logvar.bias
    with torch.no_grad():
        logvar_bias.fill_(-40.0)
    assert evaluate(model, x, None, weights, seed=3)["recon"] == pytest.approx(at_mean, rel=1e-4)
    with torch.no_grad():
        logvar_bias.fill_(20.0)  # σ ≈ 22,000: the decoder saturates
    wide = evaluate(model, x, None, weights, seed=3)
    assert wide["recon"] > 1.2 * at_mean
    assert wide == evaluate(model, x, None, weights, seed=3)
    assert wide["recon"] != evaluate(model, x, None, weights, seed=4)["recon"]


@pytest.mark.parametrize("make, match", [
    (lambda: MethodConfig("single", "uniform", exponent=40.0, count=5), "single decoder .* takes no count"),
    (lambda: MethodConfig("multidecoder", "exact", count=5), "exact grid observes a fixed set"),
    (lambda: MethodConfig("single", "uniform", exponent=-1.0), "exponent must be a finite number > 0"),
    (lambda: MethodConfig("single", "uniform", exponent="40"), "exponent must be a finite number > 0, got '40'"),
    (lambda: MethodConfig("multidecoder", "uniform", balance=BalanceConfig(softadapt=True, w1=2.0)),
     "SoftAdapt weighs the loss terms itself"),
    (lambda: MethodConfig("single", "uniform", exponent=40.0, balance=BalanceConfig(w2=0.5)),
     "w2 weighs the Multidecoder's second \\(conditioned\\) decoder; the single method has one decoder"),
    (lambda: BalanceConfig(softadapt="no"), "softadapt must be True or False"),
    (lambda: BalanceConfig(w1=math.inf), "w1 must be a finite number >= 0"),
    (lambda: BalanceConfig(w1="2"), "w1 must be a finite number >= 0, got '2'"),
    (lambda: BalanceConfig(softadapt_beta=-1.0), "softadapt_beta must be a finite number >= 0"),
    (lambda: BalanceConfig(softadapt_beta=0.01), "SoftAdapt's settings: they need softadapt=True"),
    (lambda: BalanceConfig(variant="normalized"), "SoftAdapt's settings: they need softadapt=True"),
])
def test_bad_method_input_is_refused_where_it_is_given(make, match):
    # each was accepted, then ignored or failing deep inside training
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_numbers_from_a_grid_are_taken_as_plain_ones():
    configurations = [Configuration("vq-vae", 1, MethodConfig("single", "uniform", exponent=a,
                                                               balance=BalanceConfig(w1=np.float32(0.5))))
                      for a in np.linspace(20, 40, 2)]
    assert [c.id for c in configurations] == ["vq-vae/1/single/uniform/a=20/w=0.5,1,0.25",
                                              "vq-vae/1/single/uniform/a=40/w=0.5,1,0.25"]
    assert type(configurations[0].method.exponent) is float and type(configurations[0].balance.w1) is float
    counted = MethodConfig("multidecoder", "uniform", count=np.int64(16), balance=BalanceConfig(softadapt=np.True_))
    assert (type(counted.count), counted.balance.softadapt) == (int, True)


@pytest.mark.parametrize("images, match", [
    (lambda x: x * 255, r"must lie in \[0, 1\].*got values in \[0, 255\]; 8-bit images: divide by 255"),
    (lambda x: x.to(torch.uint8), "float32 tensor .* got torch.uint8"),
    (lambda x: x.double(), "got torch.float64"),
    (lambda x: x[:, 0], r"\(N, C, H, W\) .* of shape \(64, 32, 32\)"),
    (lambda x: x[:0], "non-empty"),
])
def test_images_the_models_cannot_take_are_refused_with_one_line(digits, images, match):
    train, val = digits
    settings = TrainConfig(epochs=1, batch_size=64, device="cpu")
    with pytest.raises(ValueError, match="training images .*" + match):
        train_fold(Configuration("vae", 1), images(train[:64]), val, settings, seed=0)
    with pytest.raises(ValueError, match="validation images .*" + match):
        evaluate(build_model("vae", 1, "baseline"), images(val[:64]), None, {"recon": 1.0, "latent": 1.0})


def test_evaluate_names_a_missing_sampler_and_an_unknown_term(digits):
    _, val = digits
    with pytest.raises(ValueError, match="multidecoder model's conditioned decoder needs a sampler"):
        evaluate(build_model("vae", 1, "multidecoder"), val, None, {"recon": 1.0})
    with pytest.raises(ValueError, match="unknown loss term.* latnt in weights; the baseline model's terms: recon, "
                                         "latent$"):
        evaluate(build_model("vae", 1, "baseline"), val, None, {"recon": 1.0, "latnt": 1.0})
    with pytest.raises(ValueError, match="term.* recon_cond in weights"):  # a second decoder's, which it has not
        evaluate(build_model("vae", 1, "baseline"), val, None, {"recon": 1.0, "recon_cond": 1.0})


def test_validation_images_of_another_size_are_refused(digits):
    train, val = digits
    with pytest.raises(ValueError, match=r"validation images are \(1, 16, 16\) images, the training images \(1, 32, 32\)"):
        train_fold(Configuration("vae", 1), train, val[:, :, :16, :16], TrainConfig(epochs=1, device="cpu"), seed=0)


def test_a_gpu_this_machine_lacks_is_named_with_those_it_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2' asked for, but this machine has 2 GPU\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_a_cpu_is_named_by_its_model_and_the_instructions_torch_uses(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    monkeypatch.setattr("benchmark.processes.CPUINFO", cpuinfo)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert device_name(torch.device("cpu")) == "cpu: AMD EPYC 9654 96-Core Processor (AVX2)"
    cpuinfo.write_text("processor\t: 0\nCPU part\t: 0xd0c\n")  # Linux on ARM names no model: the architecture
    monkeypatch.setattr(benchmark.train.platform, "processor", lambda: "aarch64")
    assert device_name(torch.device("cpu")) == "cpu: aarch64 (AVX2)"
    cpuinfo.unlink()  # no /proc/cpuinfo, nor a name from the system
    monkeypatch.setattr(benchmark.train.platform, "processor", lambda: "")
    assert device_name(torch.device("cpu")) == "cpu"


def test_bad_training_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match=r"unknown device 'cuda:x' \(did you mean 'cuda'\?\); choose one of: auto, "
                                         "cpu, cuda, cuda:N"):
        TrainConfig(device="cuda:x")  # torch.device would raise a RuntimeError on a GPU machine
    with pytest.raises(ValueError, match="unknown precision 'fp16'; choose one of: auto, fp32, bf16"):
        TrainConfig(precision="fp16")
