"""TARFlow / STARFlow: card 18's checks (exactness, Jacobi = sequential, the denoising step, a
density fit) and the guidance rules, on tiny models.

The density fit is card 18's check 2 at a reduced size (8 blocks of 1 layer at width 32, 2000
steps instead of 8 x 2 layers at width 64 and 10k steps) with the card's bars unchanged: within
0.15 nats of the noised mixture's cross-entropy, and 0.5 nats better than a fitted Gaussian. The
full-size run is ``benchmarks/nf_2d.py --card``.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.data.toy2d import eight_gaussians, eight_gaussians_log_prob
from flowforge.nf import (
    DenoisedFlow,
    FlowNLLLoss,
    TransformerFlow,
    TransformerFlowConfig,
    bits_per_dim,
    flow_log_prob,
    guide,
    residual_denoiser,
    score_denoise,
)


def _randomised(config: TransformerFlowConfig, seed: int = 0, std: float = 0.3):
    """A flow whose output projections are random (not the identity of the initialisation)."""
    torch.manual_seed(seed)
    flow = TransformerFlow(config)
    for block in flow.blocks:
        torch.nn.init.normal_(block.proj_out.weight, std=std)
        torch.nn.init.normal_(block.proj_out.bias, std=std)
    return flow.double()


CONFIGS = {
    "tarflow": dict(),
    "starflow": dict(sos=True, scale="softplus", soft_clip=4.0, cond_blocks="top"),
}


@pytest.mark.parametrize("variant", list(CONFIGS))
def test_exact_inverse_and_logdet(variant):
    """Card 18 check 1: width 32, 2 blocks x 2 layers, 8 tokens of 2: inverse(forward(x)) = x
    to 1e-5 and logdet = log|det J| of the autograd Jacobian to 1e-4 (fp64)."""
    c = TransformerFlowConfig(
        shape=(16,), patch_size=2, width=32, layers_per_block=(2, 2), head_dim=16,
        **CONFIGS[variant],
    )  # fmt: skip
    flow = _randomised(c)
    x = torch.randn(5, 16, dtype=torch.float64)
    z, logdet = flow(x)
    assert (z - x).abs().max() > 0.1  # not the identity
    assert torch.allclose(flow.inverse(z), x, atol=1e-5, rtol=0)
    for i in range(len(x)):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        assert abs(torch.linalg.slogdet(J)[1] - logdet[i]) < 1e-4


def test_jacobian_is_triangular_in_each_block_order():
    """Token i of a block depends only on tokens before it in that block's order."""
    c = TransformerFlowConfig(shape=(6,), width=32, layers_per_block=(2,), head_dim=16)
    flow = _randomised(c)
    J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], torch.randn(6))
    assert torch.equal(J.triu(1), torch.zeros_like(J))  # lower triangular: the first block
    c2 = TransformerFlowConfig(shape=(6,), width=32, layers_per_block=(2, 2), head_dim=16)
    flow2 = _randomised(c2)
    second = flow2.blocks[1]
    J2 = torch.autograd.functional.jacobian(
        lambda v: second(v[None, :, None], None)[0][0, :, 0], torch.randn(6)
    )
    assert torch.equal(J2.tril(-1), torch.zeros_like(J2))  # flipped order: upper triangular


@pytest.mark.parametrize("variant", list(CONFIGS))
def test_jacobi_with_whole_sequence_equals_sequential(variant):
    """Card 18 check 3 (random weights): Jacobi with C = T matches sequential decoding to 1e-5
    and takes at most T passes per block."""
    c = TransformerFlowConfig(
        shape=(16,), patch_size=2, width=32, layers_per_block=(2, 2), head_dim=16,
        **CONFIGS[variant],
    )  # fmt: skip
    flow = _randomised(c, std=0.2)
    z = torch.randn(4, 16, dtype=torch.float64)
    seq = flow.decode(z)
    jac = flow.decode(z, block_size=8)
    assert torch.allclose(jac.x, seq.x, atol=1e-5, rtol=0)
    assert jac.passes <= 8 * len(c.layers_per_block)
    per_token = 8 if variant == "starflow" else 7  # TARFlow's first token is its own latent
    assert seq.passes == per_token * len(c.layers_per_block)
    chunks = flow.decode(z, block_size=3)  # uneven chunks of a KV-cached prefix
    assert torch.allclose(chunks.x, seq.x, atol=1e-5, rtol=0)


def test_guided_decoding_agrees_between_decoders_and_changes_samples():
    c = TransformerFlowConfig(
        shape=(8,), patch_size=2, width=32, layers_per_block=(1, 1), head_dim=16, num_classes=3
    )
    flow = _randomised(c)
    for block in flow.blocks:
        torch.nn.init.normal_(block.class_embed.weight, std=1.0)
    z, labels = torch.randn(6, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    for rule in ("tarflow", "starflow"):
        for annealed in (False, True):
            kw = dict(guidance=1.5, rule=rule, annealed=annealed)
            seq = flow.decode(z, labels, **kw)
            jac = flow.decode(z, labels, block_size=4, **kw)
            assert torch.allclose(jac.x, seq.x, atol=1e-6, rtol=0)
            assert (seq.x - flow.decode(z, labels).x).abs().max() > 1e-3
    with pytest.raises(ValueError, match="class-conditional"):
        flow.decode(z, guidance=1.0)  # no labels
    unconditional = TransformerFlow(TransformerFlowConfig(shape=(8,), width=16, head_dim=8))
    with pytest.raises(ValueError, match="guidance=1.0 needs a class-conditional flow"):
        unconditional.decode(torch.randn(2, 8), guidance=1.0)


def test_starflow_guidance_is_the_gaussian_product():
    """(1 + w) log N(mu_c, s_c^2) - w log N(mu_u, s_u^2) is a Gaussian with precision
    (1 + w)/s_c^2 - w/s_u^2 (sigma_c <= sigma_u) and the precision-weighted mean."""
    g = torch.Generator().manual_seed(0)
    sc, su = torch.rand(50, generator=g) + 0.1, torch.rand(50, generator=g) + 1.2  # sc < su
    mc, mu = torch.randn(50, generator=g), torch.randn(50, generator=g)
    w = 2.5
    log_sigma, mean = guide(sc.log(), mc, su.log(), mu, w, "starflow")
    precision = (1 + w) / sc**2 - w / su**2
    assert torch.allclose(log_sigma, -0.5 * precision.log(), atol=1e-12)
    assert torch.allclose(mean, ((1 + w) * mc / sc**2 - w * mu / su**2) / precision, atol=1e-12)
    # sigma_c > sigma_u: s is clipped to 1 and sigma stays sigma_c (positive, finite)
    log_sigma, mean = guide(su.log(), mc, sc.log(), mu, w, "starflow")
    assert torch.allclose(log_sigma, su.log()) and torch.allclose(mean, (1 + w) * mc - w * mu)
    a, m = guide(torch.zeros(1), torch.ones(1), torch.ones(1), torch.zeros(1), 0.5, "tarflow")
    assert a.item() == -0.5 and m.item() == 1.5


def test_images_are_patchified_and_roundtrip():
    c = TransformerFlowConfig(shape=(2, 4, 6), patch_size=2, width=32, layers_per_block=(1, 1))
    flow = _randomised(c)
    x = torch.randn(3, 2, 4, 6, dtype=torch.float64)
    tokens = flow.tokenize(x)
    assert tokens.shape == (3, 6, 8)  # 2 x 3 patches of 2 channels x 2 x 2
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 2:4].reshape(-1))  # raster order
    assert torch.equal(flow.untokenize(tokens), x)
    z, _ = flow(x)
    assert torch.allclose(flow.decode(z, block_size=6).x, x, atol=1e-6)
    with pytest.raises(ValueError, match="patch_size=4 does not divide the 4x6 images"):
        TransformerFlow(TransformerFlowConfig(shape=(2, 4, 6), patch_size=4))
    with pytest.raises(ValueError, match=r"x has shape \(3, 2, 4, 4\)"):
        flow(torch.randn(3, 2, 4, 4, dtype=torch.float64))


def test_identity_at_initialisation_and_per_dim_loss():
    flow = TransformerFlow(TransformerFlowConfig(shape=(4,), width=16, head_dim=8)).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    z, logdet = flow(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(8, dtype=torch.float64))
    loss = FlowNLLLoss(noise_std=0.0)(flow, x)
    assert torch.allclose(loss, 0.5 * x.square().mean(1) + 0.5 * math.log(2 * math.pi))


def test_bits_per_dim_of_the_uniform_grid():
    """Data uniform on a grid of spacing w, flow = N(0, I): bpd = E[-log N(x + u)] / ln 2 -
    log2 w, computed here by hand."""
    flow = TransformerFlow(TransformerFlowConfig(shape=(3,), width=16, head_dim=8)).double()
    x = torch.zeros(4000, 3, dtype=torch.float64)
    bpd = bits_per_dim(flow, x, 0.5, generator=torch.Generator().manual_seed(0))
    u_sq = 0.25**2 / 3  # E u^2 of U[-1/4, 1/4]
    expected = (0.5 * math.log(2 * math.pi) + 0.5 * u_sq) / math.log(2) - math.log2(0.5)
    assert abs(bpd.mean().item() - expected) < 2e-3


def _train(flow, sample, steps, lr, loss_fn, cond=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(flow.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    for _ in range(steps):
        loss = loss_fn(flow, sample(g), generator=g).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        sched.step()
    return flow


def test_score_denoise_step_shrinks_toward_the_tweedie_optimum():
    """Card 18 check 4: data N(0, I), sigma_n = 0.3. The score step of a trained flow reduces
    E||x^ - x||^2 below the noisy sample's sigma_n^2 and lands within 1% of Tweedie's optimum
    sigma_n^2 / (1 + sigma_n^2) (the exact density gives x~ / (1 + sigma_n^2))."""
    torch.set_default_dtype(torch.float32)
    sn, D = 0.3, 4
    flow = TransformerFlow(TransformerFlowConfig(shape=(D,), width=32, head_dim=16,
                                                 layers_per_block=(1, 1)))  # fmt: skip
    flow = _train(flow, lambda g: torch.randn(256, D, generator=g), 600, 3e-3,
                  FlowNLLLoss("gaussian", sn))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, D, generator=g)
    noisy = x + sn * torch.randn(x.shape, generator=g)
    hat = score_denoise(flow, noisy, sn)
    mse_noisy = (noisy - x).square().mean().item()
    mse_hat = (hat - x).square().mean().item()
    optimum = (noisy / (1 + sn**2) - x).square().mean().item()
    assert mse_hat < mse_noisy
    assert mse_hat < 1.01 * optimum, (mse_hat, optimum, mse_noisy)


def test_learned_denoiser_trains_beside_the_flow():
    """STARFlow's learned denoiser (DenoisedFlow): trained by the same loss, it beats the raw
    noisy sample on N(0, I) data with sigma_n = 0.3."""
    torch.set_default_dtype(torch.float32)
    sn, D = 0.3, 4
    flow = TransformerFlow(TransformerFlowConfig(shape=(D,), width=16, head_dim=8,
                                                 layers_per_block=(1,)))  # fmt: skip
    model = DenoisedFlow(flow, residual_denoiser((D,), width=32))
    model = _train(model, lambda g: torch.randn(256, D, generator=g), 400, 3e-3,
                   FlowNLLLoss("gaussian", sn, denoiser_weight=1.0))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, D, generator=g)
    noisy = x + sn * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        mse_hat = (model.denoise(noisy) - x).square().mean().item()
    optimum = sn**2 / (1 + sn**2)
    assert mse_hat < 1.03 * optimum < sn**2


@pytest.fixture(scope="module")
def eight_gaussians_flow():
    """Card 18 check 2's model at a reduced size: 8-gaussians (std 0.5) as 2 tokens of 1,
    sigma_n = 0.05, 8 blocks x 1 layer, width 32, 2000 steps."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    flow = TransformerFlow(TransformerFlowConfig(shape=(2,), width=32, head_dim=32,
                                                 layers_per_block=(1,) * 8))  # fmt: skip
    flow = _train(flow, lambda g: eight_gaussians(256, g)[0], 2000, 2e-3,
                  FlowNLLLoss("gaussian", 0.05), seed=1)  # fmt: skip
    torch.set_default_dtype(previous)
    return flow


def test_density_fit_on_eight_gaussians(eight_gaussians_flow):
    """Card 18 check 2: test NLL of noised data within 0.15 nats of the true cross-entropy
    -E log p_sigma(x~) (the mixture convolved with sigma_n), and 0.5 nats below a Gaussian."""
    sn = 0.05
    g = torch.Generator().manual_seed(99)
    x = eight_gaussians(20000, g)[0].double()
    x = x + sn * torch.randn(x.shape, generator=g, dtype=x.dtype)
    optimum = -eight_gaussians_log_prob(x, sn).mean().item()
    gaussian = math.log(2 * math.pi * math.e) + 0.5 * torch.logdet(torch.cov(x.T)).item()
    with torch.no_grad():
        nll = -flow_log_prob(eight_gaussians_flow, x.float()).double().mean().item()
    assert nll - optimum < 0.15, (nll, optimum)
    assert gaussian - nll > 0.5, (nll, gaussian)


def test_jacobi_stops_early_on_a_trained_flow():
    """Card 18 check 3 (trained model): with tol 1e-3 Jacobi stops in fewer than T passes and
    agrees with sequential decoding. 16-D AR data make T = 16 tokens worth iterating."""
    torch.set_default_dtype(torch.float32)
    T = 16

    def ar(g, n=256):  # a smooth AR(1) sequence: x_i = 0.8 x_{i-1} + 0.6 eps
        e = torch.randn(n, T, generator=g)
        x = [e[:, 0]]
        for i in range(1, T):
            x.append(0.8 * x[-1] + 0.6 * e[:, i])
        return torch.stack(x, 1)

    torch.manual_seed(0)
    flow = TransformerFlow(TransformerFlowConfig(shape=(T,), width=32, head_dim=16,
                                                 layers_per_block=(2,)))  # fmt: skip
    flow = _train(flow, ar, 300, 3e-3, FlowNLLLoss("gaussian", 0.0))
    z = torch.randn(64, T, generator=torch.Generator().manual_seed(3))
    seq = flow.decode(z)
    assert seq.passes == T - 1  # one pass per token after the first
    jac = flow.decode(z, block_size=T, max_iter=T, tol=1e-3)
    assert jac.passes < T - 1, jac.passes
    err = (jac.x - seq.x).square().mean() / seq.x.square().mean()
    assert err < 1e-3, err.item()
    exact = flow.decode(z, block_size=T, max_iter=T, tol=0.0)
    assert exact.passes <= T and torch.allclose(exact.x, seq.x, atol=1e-4)
