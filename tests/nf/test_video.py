"""STARFlow-V: the video flow is exact and frame-causal, its decoders agree, continuation
reproduces the given frames' future, and the causal denoiser sees no future frame."""

from __future__ import annotations

import pytest
import torch

from flowforge.data.videos import motion_error, moving_shapes
from flowforge.nf import (
    CausalVideoDenoiser,
    DenoisedFlow,
    FlowNLLLoss,
    VideoFlow,
    VideoFlowConfig,
    score_denoise,
)

SHAPE = (4, 1, 4, 4)  # 4 frames of 4 x 4: 4 tokens of 4 values per frame


def _randomised(num_classes: int = 0, std: float = 0.2) -> VideoFlow:
    torch.manual_seed(0)
    flow = VideoFlow(VideoFlowConfig(shape=SHAPE, width=32, head_dim=16, frame_layers=(1, 1),
                                     deep_layers=2, num_classes=num_classes))  # fmt: skip
    for block in [*flow.frame_blocks, flow.deep]:
        torch.nn.init.normal_(block.proj_out.weight, std=std)
        torch.nn.init.normal_(block.proj_out.bias, std=std)
        if block.class_embed is not None:
            torch.nn.init.normal_(block.class_embed.weight, std=1.0)
    return flow.double()


def test_exact_inverse_logdet_and_frame_causality():
    flow = _randomised()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    z, logdet = flow(x)
    assert (z - x).abs().max() > 0.1
    assert torch.allclose(flow.inverse(z), x, atol=1e-6)
    J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0].flatten(), x[0])
    J = J.reshape(x[0].numel(), x[0].numel())
    assert abs(torch.linalg.slogdet(J)[1] - logdet[0]) < 1e-6
    per_frame = x[0, 0].numel()
    for f in range(SHAPE[0] - 1):  # latent frame f does not depend on later data frames
        rows = slice(f * per_frame, (f + 1) * per_frame)
        assert J[rows, (f + 1) * per_frame :].abs().max() == 0


def test_video_jacobi_and_continuation_agree_with_frame_by_frame_decoding():
    flow = _randomised(num_classes=3)
    z = torch.randn(5, *SHAPE, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1])
    seq = flow.decode(z, labels)
    assert seq.passes == 4 + 2 * 4  # a pass per frame, then a pass per token and block
    for init in ("previous", "noise"):
        jac = flow.decode(z, labels, frame_block=4, token_block=4, init=init)
        assert torch.allclose(jac.x, seq.x, atol=1e-6)
    guided = flow.decode(z, labels, guidance=1.0, frame_block=2)
    assert torch.allclose(guided.x, flow.decode(z, labels, guidance=1.0).x, atol=1e-6)
    for k in (1, 2):  # image-to-video and continuation: the given frames' own future
        cont = flow.decode(z, labels, known=seq.x[:, :k])
        assert torch.equal(cont.x[:, :k], seq.x[:, :k])
        assert torch.allclose(cont.x, seq.x, atol=1e-6)
    with pytest.raises(ValueError, match="known holds 4 frames; give 1..3"):
        flow.decode(z, labels, known=seq.x)
    with pytest.raises(ValueError, match="needs a class-conditional flow"):
        _randomised().decode(z, guidance=1.0)


def test_causal_denoiser_sees_no_later_frame():
    torch.manual_seed(0)
    net = CausalVideoDenoiser(1, width=8).double()
    torch.nn.init.normal_(net.net[-1].conv.weight)
    x = torch.randn(2, 5, 1, 6, 6, dtype=torch.float64)
    y = x.clone()
    y[:, 3:] += torch.randn_like(y[:, 3:])  # change frames 3 and 4 only
    assert torch.equal(net(x)[:, :3], net(y)[:, :3])
    assert not torch.allclose(net(x)[:, 3:], net(y)[:, 3:])


def test_flow_score_matching_learns_the_flows_own_tweedie_step():
    """The denoiser trained on the score target converges to the flow's score step (and the
    flow is trained by the likelihood alone)."""
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    sn = 0.3
    flow = VideoFlow(VideoFlowConfig(shape=(3, 1, 4, 4), width=16, head_dim=8,
                                     frame_layers=(1,), deep_layers=1))  # fmt: skip
    model = DenoisedFlow(flow, CausalVideoDenoiser(1, width=16), target="score")
    loss_fn = FlowNLLLoss("gaussian", sn, denoiser_weight=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        x = torch.randn(64, 3, 1, 4, 4, generator=g) * 0.5
        loss = loss_fn(model, x, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(256, 3, 1, 4, 4, generator=g) * 0.5
    noisy = x + sn * torch.randn(x.shape, generator=g)
    tweedie = score_denoise(flow, noisy, sn)
    with torch.no_grad():
        learned = model.denoise(noisy)
    gap = (learned - tweedie).square().mean() / (noisy - tweedie).square().mean()
    assert gap < 0.1, gap.item()


def test_moving_shapes_follow_their_labels():
    v = moving_shapes(200, torch.Generator().manual_seed(0), frames=8)
    assert v.videos.shape == (200, 8, 1, 16, 16)
    assert v.videos.min() == -1 and v.videos.max() <= 1
    m = motion_error(v.videos, v.labels)
    assert m["direction_accuracy"] == 1.0 and m["displacement_error"] < 0.3
    shuffled = motion_error(v.videos, v.labels.roll(1))
    assert shuffled["direction_accuracy"] < 0.5 and shuffled["displacement_error"] > 1.0
    again = moving_shapes(200, torch.Generator().manual_seed(0), frames=8)
    assert torch.equal(again.videos, v.videos)
    with pytest.raises(ValueError, match="does not fit a 16-pixel frame"):
        moving_shapes(2, frames=16)
