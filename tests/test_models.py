"""Models: shapes and named loss terms, hand-computed KL and VQ terms, straight-through gradients."""

import math

import pytest
import torch
from torch import nn

from benchmark.conditioning import PixelSampler
from benchmark.models import MODEL_CONFIGS, VectorQuantizer, build_model, weight_count
from benchmark.models.blocks import ResidualLayer
from benchmark.models.gaussian import kl_to_standard_normal

GRID = [(family, config) for family, configs in MODEL_CONFIGS.items() for config in configs]
# SPEC.md's table of models, copied here by hand (not read from the code under test):
# (family, config): z dim (Gaussian) or (codes, code dim) (VQ), hidden widths, residual layers.
SPEC_MODELS = {
    ("vae", 1): dict(z=16, widths=(32, 64, 128, 256), residual=0),
    ("vae", 2): dict(z=64, widths=(32, 64, 128, 256), residual=0),
    ("vq-vae", 1): dict(codes=128, code_dim=16, widths=(32, 64), residual=0),
    ("vq-vae", 2): dict(codes=128, code_dim=32, widths=(128, 256), residual=2),
    ("vq-vae", 3): dict(codes=256, code_dim=64, widths=(128, 256), residual=4),
}


def mask_for(method: str, batch: int, size: int) -> torch.Tensor | None:
    if method == "baseline":
        return None
    sampler = PixelSampler("uniform", size, exponent=20.0) if method == "single" else PixelSampler("exact", size)
    return sampler.sample(batch, torch.Generator().manual_seed(0), "cpu")


def test_a_residual_layer_adds_its_block_to_its_input():
    layer = ResidualLayer(4)
    x = torch.randn(2, 4, 5, 5)
    conv3, conv1 = layer.block[1], layer.block[3]
    assert torch.allclose(layer(x), x + conv1(torch.relu(conv3(torch.relu(x)))))


@pytest.mark.parametrize("family, config", GRID)
@pytest.mark.parametrize("method", ["baseline", "multidecoder", "single"])
@pytest.mark.parametrize("channels, size", [(1, 32), (3, 64)])
def test_shapes_and_named_terms(family, config, method, channels, size):
    torch.manual_seed(0)
    model = build_model(family, config, method, channels, size)
    x = torch.rand(2, channels, size, size)
    out = model(x, mask_for(method, 2, size))
    expected = {"recon", "latent"} | ({"recon_cond"} if method == "multidecoder" else set())
    assert set(out.terms) == expected
    assert all(t.shape == () and torch.isfinite(t) for t in out.terms.values())
    assert out.x_hat.shape == x.shape and 0 <= out.x_hat.min() and out.x_hat.max() <= 1
    if method == "multidecoder":
        assert out.x_hat_cond.shape == x.shape
    # per-pixel MSE = training-scale reconstruction × recon_scale
    direct = (out.x_hat - x).pow(2).mean()
    assert (out.terms["recon"] * model.recon_scale).item() == pytest.approx(direct.item(), rel=1e-5)
    del model


def test_the_registry_builds_exactly_the_spec_tables_configurations():
    assert sorted(GRID) == sorted(SPEC_MODELS)


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


@pytest.mark.parametrize("family, config", sorted(SPEC_MODELS))
def test_each_model_is_built_as_the_spec_table_says(family, config):
    spec = SPEC_MODELS[family, config]
    widths, channels = spec["widths"], 3
    torch.manual_seed(0)
    model = build_model(family, config, "multidecoder", channels, 32)
    # Encoder: Conv 3x3 stride 2 + BatchNorm + LeakyReLU per hidden width.
    encoder = _leaves(model.latent_model.encoder)
    strided = [i for i, m in enumerate(encoder) if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert [encoder[i].out_channels for i in strided] == list(widths)
    assert [encoder[i].in_channels for i in strided] == [channels, *widths[:-1]]
    for i in strided:
        assert encoder[i].kernel_size == (3, 3)
        assert isinstance(encoder[i + 1], nn.BatchNorm2d) and encoder[i + 1].num_features == encoder[i].out_channels
        assert isinstance(encoder[i + 2], nn.LeakyReLU)
    # Each decoder mirrored with transposed convs (stride 2), back to the image's channels.
    mirrored = widths[::-1]
    for decoder in (model.decoder, model.decoder_cond):
        transposed = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
        assert [(m.in_channels, m.out_channels) for m in transposed] == list(zip(mirrored, [*mirrored[1:], channels]))
        assert all(m.stride == (2, 2) for m in transposed)
        assert sum(isinstance(m, ResidualLayer) for m in decoder.modules()) == spec["residual"]
    assert sum(isinstance(m, ResidualLayer) for m in model.latent_model.encoder.modules()) == spec["residual"]
    for part in (model.latent_model.encoder, model.decoder, model.decoder_cond):  # each layer activated once
        layers = [m for m in _leaves(part) if not isinstance(m, nn.Identity)]
        assert not any(isinstance(a, nn.LeakyReLU) and isinstance(b, nn.LeakyReLU) for a, b in zip(layers, layers[1:]))
    x = torch.rand(2, channels, 32, 32)
    code = model.encode(x, torch.zeros(2, spec["z"]) if family == "vae" else None)
    if family == "vae":
        assert code.z.shape == (2, spec["z"]) and model.noise_dim == spec["z"]
        assert not [m for m in model.modules() if isinstance(m, nn.Embedding)]
    else:
        (codebook,) = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        assert (codebook.num_embeddings, codebook.embedding_dim) == (spec["codes"], spec["code_dim"])
        side = 32 // 2 ** len(widths)
        assert code.z.shape == (2, spec["code_dim"], side, side) and model.noise_dim == 0
        assert code.parts["codes"].max() < spec["codes"]


def test_gaussian_recon_is_summed_over_pixels_and_vq_recon_is_a_mean():
    x = torch.rand(3, 1, 32, 32)
    vae, vq = build_model("vae", 1, "baseline"), build_model("vq-vae", 1, "baseline")
    for model, factor in ((vae, 1024), (vq, 1)):
        model.eval()
        out = model(x)
        assert out.terms["recon"].item() == pytest.approx(((out.x_hat - x) ** 2).mean().item() * factor, rel=1e-5)


def test_kl_against_hand_calculation():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # image 1: 0.5·(1 + 1 − 1 − 0) + 0.5·(0 + 2 − 1 − ln 2); image 2: 0; mean over the batch
    expected = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(expected)


def test_vq_terms_against_hand_calculation():
    quantizer = VectorQuantizer(num_codes=2, code_dim=2, commitment=0.25)
    quantizer.codebook.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z_e = torch.tensor([0.9, 0.8]).view(1, 2, 1, 1)
    out = quantizer(z_e)
    assert out.parts["codes"].tolist() == [[[1]]]
    assert torch.allclose(out.z, torch.ones(1, 2, 1, 1))
    assert out.parts["codebook"].item() == pytest.approx((0.01 + 0.04) / 2)
    assert out.parts["commitment"].item() == pytest.approx((0.01 + 0.04) / 2)
    assert out.latent.item() == pytest.approx(0.025 + 0.25 * 0.025)

def test_vq_codes_are_the_nearest_codes_by_euclidean_distance():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_codes=64, code_dim=8)
    quantizer.codebook.weight.data.normal_()
    z_e = torch.randn(4, 8, 5, 5, requires_grad=True)
    codes = quantizer.codes(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.cdist(flat, quantizer.codebook.weight.detach()).argmin(1).view(4, 5, 5)
    assert torch.equal(codes, expected)



def test_straight_through_estimator_copies_decoder_gradients_to_the_encoder():
    torch.manual_seed(0)
    model = build_model("vq-vae", 1, "baseline")
    x = torch.rand(4, 1, 32, 32)
    out = model(x)
    out.terms["recon"].backward()  # reconstruction only: the encoder is reached through z_q alone
    first_conv = model.latent_model.encoder[0][0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert model.latent_model.quantizer.codebook.weight.grad is None or \
        model.latent_model.quantizer.codebook.weight.grad.abs().sum() == 0


def test_straight_through_passes_z_qs_gradient_to_z_e_unchanged_and_none_to_the_codebook():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(128, 16)
    z_e = torch.randn(2, 16, 8, 8, requires_grad=True)
    code = quantizer(z_e)
    assert torch.allclose(code.z, quantizer.lookup(code.parts["codes"]), atol=1e-6)  # forward: the nearest codes
    upstream = torch.randn_like(code.z)
    (code.z * upstream).sum().backward()
    assert torch.equal(z_e.grad, upstream)  # backward: the identity, as if z_q were z_e
    assert quantizer.codebook.weight.grad is None


def test_a_vq_vaes_beta_weighs_the_commitment_term_alone():
    """The thesis's VQ loss, codebook + β·commitment: β scales the encoder's pull towards its code,
    not the codebook's towards the encoder; the VQ loss is reported at the paper's β = 0.25."""
    x = torch.rand(4, 1, 32, 32)
    grads, latents = {}, {}
    for beta in (0.25, 2.0):
        torch.manual_seed(0)
        model = build_model("vq-vae", 1, "baseline", beta=beta)
        code = model.encode(x)
        quantizer = model.latent_model.quantizer
        distance = (code.parts["z_e"] - quantizer.lookup(code.parts["codes"])).pow(2).mean().item()
        terms = model(x).terms
        assert terms["latent"].item() == pytest.approx((1 + beta) * distance, rel=1e-5)
        assert code.latent.item() == pytest.approx(1.25 * distance, rel=1e-5)
        terms["latent"].backward()
        grads[beta] = (quantizer.codebook.weight.grad.clone(), model.latent_model.encoder[-1].weight.grad.clone())
        latents[beta] = code.latent.item()
    assert latents[0.25] == latents[2.0]
    torch.testing.assert_close(grads[2.0][0], grads[0.25][0])
    torch.testing.assert_close(grads[2.0][1], grads[0.25][1] * 8.0)


def test_a_gaussian_vaes_beta_weighs_the_kl():
    torch.manual_seed(0)
    model = build_model("vae", 1, "baseline", beta=3.0)
    x, noise = torch.rand(4, 1, 32, 32), torch.randn(4, 16)
    kl = model.encode(x, noise).latent
    assert model(x, noise=noise).terms["latent"].item() == pytest.approx(3.0 * kl.item(), rel=1e-6)


def test_codebook_is_trained_by_the_codebook_loss():
    model = build_model("vq-vae", 1, "baseline")
    model(torch.rand(4, 1, 32, 32)).terms["latent"].backward()
    assert model.latent_model.quantizer.codebook.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["vae", "vq-vae"])
def test_multidecoder_has_two_decoders_sharing_z_and_both_are_trained(family):
    # The thesis's VQ code ran both outputs through one decoder; here decoder 2 is real.
    torch.manual_seed(0)
    model = build_model(family, 1, "multidecoder")
    assert model.decoder is not model.decoder_cond
    x = torch.rand(4, 1, 32, 32)
    out = model(x, mask_for("multidecoder", 4, 32))
    assert not torch.allclose(out.x_hat, out.x_hat_cond)
    out.terms["recon_cond"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder_cond.parameters())


@pytest.mark.parametrize("family", ["vae", "vq-vae"])
def test_both_decoders_of_a_multidecoder_take_the_same_sampled_z(family):
    # SPEC: both decoders share the encoder and the same z (the sampled z, not μ; z_q for a VQ-VAE).
    torch.manual_seed(0)
    model = build_model(family, 1, "multidecoder")
    x = torch.rand(4, 1, 32, 32)
    noise = torch.randn(4, model.noise_dim) if model.noise_dim else None
    taken = {}

    def recording(name):
        def hook(module, args):
            taken[name] = args[0].clone()  # the z a decoder is called with (None: its input left as it is)
        return hook

    hooks = [decoder.register_forward_pre_hook(recording(name))
             for name, decoder in (("decoder", model.decoder), ("decoder_cond", model.decoder_cond))]
    with torch.no_grad():
        model(x, mask_for("multidecoder", 4, 32), noise)
        code = model.encode(x, noise)
    for hook in hooks:
        hook.remove()
    assert torch.equal(taken["decoder"], code.z) and torch.equal(taken["decoder_cond"], code.z)
    if family == "vae":
        mu, logvar = code.parts["mu"], code.parts["logvar"]
        assert torch.allclose(code.z, mu + noise * torch.exp(0.5 * logvar))
        assert not torch.allclose(code.z, mu, atol=1e-3)  # the sample differs from μ: not what a decoder takes
    else:
        with torch.no_grad():  # z_q: the codebook vectors (z_e + (e − z_e), rounded once)
            assert torch.allclose(code.z, model.latent_model.quantizer.lookup(code.parts["codes"]), atol=1e-6)
        assert not torch.allclose(code.z, code.parts["z_e"], atol=1e-3)


def test_conditioned_decoder_merges_z_and_m_through_one_linear_layer():
    model = build_model("vq-vae", 1, "single")
    merge = model.decoder.latent_input.linear
    assert isinstance(merge, torch.nn.Linear)
    assert merge.in_features == 16 * 8 * 8 + 2 * 32 * 32  # flatten(z_q) ⊕ flatten(m)


def weights_by_hand(family: str, config: int, method: str, channels: int, size: int) -> int:
    """The trainable weights of a model, counted from the SPEC table and the layers' conventions:
    no conv bias before a BatchNorm (weight and bias: 2 per channel), a bias on the image layer,
    on the VQ encoder's 1x1 projection and decoder's first conv, and on every Linear layer."""
    spec = SPEC_MODELS[family, config]
    widths, side = spec["widths"], size // 2 ** len(spec["widths"])

    def conv(c_in, c_out, kernel, bias):
        return c_in * c_out * kernel * kernel + (c_out if bias else 0)

    encoder = sum(conv(c_in, w, 3, False) + 2 * w for c_in, w in zip((channels, *widths), widths))
    mirrored = widths[::-1]
    body = (sum(conv(a, b, 4, False) + 2 * b for a, b in zip(mirrored, mirrored[1:]))
            + conv(widths[0], channels, 4, True))  # the image layer
    residual = spec["residual"] * (conv(widths[-1], widths[-1], 3, False) + conv(widths[-1], widths[-1], 1, False))
    m = (channels + 1) * size * size  # mask ⊕ x·mask
    if family == "vae":
        flat, z = widths[-1] * side * side, spec["z"]
        latent = encoder + 2 * (flat * z + z)  # μ and log σ²

        def decoder(cond):
            return (z + cond) * flat + flat + body
    else:
        code = spec["code_dim"] * side * side
        latent = encoder + residual + conv(widths[-1], spec["code_dim"], 1, True) + spec["codes"] * spec["code_dim"]

        def decoder(cond):  # z_q enters as it is; conditioned, one Linear merges z_q ⊕ m
            merge = (code + cond) * code + code if cond else 0
            return merge + conv(spec["code_dim"], widths[-1], 3, True) + residual + body
    return latent + {"baseline": decoder(0), "single": decoder(m), "multidecoder": decoder(0) + decoder(m)}[method]


@pytest.mark.parametrize("family, config", sorted(SPEC_MODELS))
@pytest.mark.parametrize("method", ["baseline", "multidecoder", "single"])
def test_weight_count_counts_the_models_trainable_weights_by_hand(family, config, method):
    assert weight_count(family, config, method, 3, 32) == weights_by_hand(family, config, method, 3, 32)
    assert weight_count(family, config, method) == weights_by_hand(family, config, method, 1, 32)


def test_a_conditioned_decoder_costs_its_merge_layers_weights_by_hand():
    m = 2 * 32 * 32  # image ⊕ mask inputs of a 1-channel 32 × 32 image
    baseline = weight_count("vae", 1, "baseline")
    # Gaussian VAE 1: the Linear from z (16) to the 256 × 2 × 2 feature map gains m inputs.
    assert weight_count("vae", 1, "single") - baseline == m * 256 * 2 * 2
    # The Multidecoder adds a second decoder: the baseline's plus those inputs.
    decoder = sum(p.numel() for p in build_model("vae", 1, "baseline").decoder.parameters())
    assert weight_count("vae", 1, "multidecoder") - baseline == decoder + m * 256 * 2 * 2
    # VQ-VAE 1: z_q (16 × 8 × 8) enters the decoder as it is; conditioned, a Linear (with bias) merges z_q ⊕ m.
    code = 16 * 8 * 8
    assert weight_count("vq-vae", 1, "single") - weight_count("vq-vae", 1, "baseline") == (code + m) * code + code


def test_single_decoder_with_empty_mask_is_the_unconditioned_decoder():
    torch.manual_seed(0)
    model = build_model("vae", 1, "single").eval()
    x = torch.rand(2, 1, 32, 32)
    z = model.encode(x).z
    empty = torch.zeros(2, 1, 32, 32)
    assert torch.allclose(model.decode(z), model.decode(z, x, empty, conditioned=True))
    full = torch.ones(2, 1, 32, 32)
    assert not torch.allclose(model.decode(z), model.decode(z, x, full, conditioned=True))
    with pytest.raises(ValueError, match="only with conditioned=True"):
        model.decode(z, x, full)  # would be the empty-mask output, whatever the mask
    with pytest.raises(ValueError, match="needs the images x and their mask"):
        model.decode(z, conditioned=True)


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("gan", 1, "baseline"), "vae, vq-vae"),
    (lambda: build_model("vae", 3, "baseline"), "1, 2"),
    (lambda: build_model("vae", 1, "triple"), "baseline, multidecoder, single"),
    (lambda: build_model("vae", 1, "baseline", 1, 30), "multiple of 16"),
    (lambda: build_model("vq-vae", 1, "baseline", 1, 2), "multiple of 4"),
])
def test_bad_model_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_conditioned_methods_need_a_mask():
    with pytest.raises(ValueError, match="needs a mask"):
        build_model("vae", 1, "multidecoder")(torch.rand(2, 1, 32, 32))
