"""The peers benchmark's own helpers, without the peer libraries installed (they load lazily)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "peers_2d.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("peers_2d", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_interleaved_rotates_the_order(bench):
    calls = []
    runners = {k: (lambda k=k: calls.append(k) or 1.0) for k in "abc"}
    out = bench.interleaved(runners, repeats=3)
    # Each round starts one runner later, so every runner is first once in 3 rounds.
    assert calls == list("abc") + list("bca") + list("cab")
    assert out == {k: [1.0] * 3 for k in "abc"}


def test_stream_is_a_pure_function_of_the_seed(bench):
    a, b = bench.make_stream("moons", 3, 8, seed=5), bench.make_stream("moons", 3, 8, seed=5)
    assert torch.equal(a.x_1, b.x_1) and torch.equal(a.x_0, b.x_0) and torch.equal(a.t, b.t)
    assert a.x_1.shape == (3, 8, 2) and a.t.shape == (3, 8)
    assert 0 <= a.t.min() and a.t.max() <= 1


def test_replayed_time_gives_the_closed_form_loss(bench, dtype):
    # The flowforge objective with replayed t equals mean ||v(x_t, t) - (x_1 - x_0)||^2 / D with
    # x_t = t x_1 + (1 - t) x_0: the math torchcfm and flow_matching compute.
    g = torch.Generator().manual_seed(0)
    x_0, x_1 = (torch.randn(16, 2, generator=g, dtype=dtype) for _ in range(2))
    t = torch.rand(16, generator=g, dtype=dtype)

    def field(x, s, cond=None):
        return 0.3 * x + s[:, None]

    x_t = t[:, None] * x_1 + (1 - t[:, None]) * x_0
    expected = (field(x_t, t) - (x_1 - x_0)).square().mean()
    loss = bench.flowforge_loss()(field, x_0, x_1, t)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_rates_and_differences(bench):
    assert bench.rates([2.0, 1.0, 4.0], 8) == (4.0, 2.0, 8.0)  # median, min, max steps/s
    a = {"w": torch.zeros(3), "b": torch.ones(1)}
    b = {"w": torch.tensor([0.0, 0.25, -0.5]), "b": torch.ones(1)}
    assert bench.max_abs_diff(a, b) == 0.5
