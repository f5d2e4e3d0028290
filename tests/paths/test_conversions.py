"""ConvertedField: wrapping keeps the field contract and matches AffinePath.convert."""

import pytest
import torch

from flowforge.paths.affine import CondOTPath, VPPath
from flowforge.paths.conversions import ConvertedField


def test_wrapper_matches_convert_and_round_trips():
    net = torch.nn.Linear(3, 3)
    field = lambda x, t, cond=None: net(x) * t[:, None]  # noqa: E731
    path = VPPath()
    x, t = torch.randn(4, 3), torch.rand(4) * 0.8 + 0.1
    eps_as_v = ConvertedField(field, path, "epsilon", "velocity")
    torch.testing.assert_close(
        eps_as_v(x, t), path.convert(field(x, t), x, t, "epsilon", "velocity")
    )
    back = ConvertedField(eps_as_v, path, "velocity", "epsilon")
    torch.testing.assert_close(back(x, t), field(x, t))


def test_velocity_to_score_on_gaussian_data():
    """Data N(0, s^2 I) on the straight path: x_t ~ N(0, (t^2 s^2 + (1-t)^2) I), score -x / var."""
    s2 = 0.25
    path = CondOTPath()

    def v_exact(x, t, cond=None):  # marginal velocity: d/dt log std * x
        var = t**2 * s2 + (1 - t) ** 2
        return x * ((t * s2 - (1 - t)) / var)[:, None]

    x, t = torch.randn(6, 2), torch.rand(6) * 0.9 + 0.05
    score = ConvertedField(v_exact, path, "velocity", "score")(x, t)
    var = (t**2 * s2 + (1 - t) ** 2)[:, None]
    torch.testing.assert_close(score, -x / var)


def test_bad_parameterisation_name():
    with pytest.raises(ValueError, match="target='noise' is not valid"):
        ConvertedField(lambda x, t, c=None: x, CondOTPath(), "velocity", "noise")
