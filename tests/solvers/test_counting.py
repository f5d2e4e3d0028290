"""CountingField counts exactly one evaluation per field call; solvers spend stages x steps."""

import pytest
import torch
from torch import nn

from flowforge.solvers.counting import CountingField
from flowforge.solvers.ode import NFE_PER_STEP, sample_ode


def decay(x, t, cond=None):
    return -x


@pytest.mark.parametrize("n_steps", [1, 3, 10])
@pytest.mark.parametrize("method", sorted(NFE_PER_STEP))
def test_nfe_is_steps_times_stages(method, n_steps):
    field = CountingField(decay)
    sample_ode(field, torch.randn(7, 2), torch.linspace(0, 1, n_steps + 1), method)
    assert field.nfe == n_steps * NFE_PER_STEP[method]
    field.reset()
    assert field.nfe == 0
    sample_ode(field, torch.randn(7, 2), torch.linspace(1, 0, n_steps + 1), method)
    assert field.nfe == n_steps * NFE_PER_STEP[method]


def test_counting_field_is_transparent():
    net = nn.Linear(2, 2)
    field = CountingField(lambda x, t, cond=None: net(x) + cond)
    x, t, cond = torch.randn(4, 2), torch.rand(4), torch.randn(4, 2)
    torch.testing.assert_close(field(x, t, cond), net(x) + cond)
    assert field.nfe == 1


def test_wrapped_module_parameters_are_registered():
    class Velocity(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x, t, cond=None):
            return self.lin(x)

    inner = Velocity()
    field = CountingField(inner)
    assert [p for p in field.parameters()] == [p for p in inner.parameters()]
    field(torch.randn(3, 2), torch.rand(3)).sum().backward()
    assert all(p.grad is not None for p in inner.parameters())
